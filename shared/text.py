"""Text rules shared by writes and list filters: one normalised form per tag, no hidden text.

A tag is NFKC-normalised, trimmed and case-folded, so a fullwidth `work`, `Work` and `work` are
one tag; invisible format characters (Unicode category Cf: zero-width and bidirectional
controls) are refused in tags. Bidirectional override and isolate controls are refused in free
text too, so no title can display in an order other than the one stored (`invoice <U+202E>fdp.exe`).
"""

from __future__ import annotations

import re
import unicodedata

MAX_TAG = 50
# C0 controls but tab and newline, DEL, C1 controls, and surrogates (a lone one survives parsing).
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
BIDI_CONTROL_RANGES = r"\u202a-\u202e\u2066-\u2069"
BIDI_CONTROLS = re.compile(f"[{BIDI_CONTROL_RANGES}]")


def _format_character_ranges() -> str:
    """Unicode Cf in the Basic Multilingual Plane as a regex class body (`\\uXXXX-\\uXXXX`), for
    JSON Schema patterns: what `normalise_tag` refuses, in a form every regex dialect reads.
    (The few Cf characters beyond the BMP are refused too, but not described.)"""
    codes = [code for code in range(0x10000) if unicodedata.category(chr(code)) == "Cf"]
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(
        f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges
    )


FORMAT_CHARACTER_RANGES = _format_character_ranges()


def check_text(value: str) -> str:
    if FORBIDDEN.search(value):
        raise ValueError("Must not contain control characters, NUL or unpaired surrogates")
    return value


def check_free_text(value: str) -> str:
    """`check_text`, and no bidirectional override or isolate controls (U+202A-202E, 2066-2069)."""
    if BIDI_CONTROLS.search(check_text(value)):
        raise ValueError("Must not contain bidirectional override or isolate controls")
    return value


def normalise_tag(value: str) -> str:
    """The one stored form of a tag, or ValueError saying why there is none."""
    tag = unicodedata.normalize("NFKC", check_text(value)).strip().casefold()
    if any(unicodedata.category(char) == "Cf" for char in tag):
        raise ValueError("Must not contain invisible format characters (zero-width, bidi)")
    if not 1 <= len(tag) <= MAX_TAG:
        raise ValueError(f"Must be 1 to {MAX_TAG} characters after trimming")
    if "," in tag:
        raise ValueError("Must not contain commas")
    return tag
