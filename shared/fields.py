"""The task's field rules, each written once: the limits, the formats and their JSON Schemas.

Write validation, the list filters, the cursors and the OpenAPI documents all read these: a
limit is one constant that the validators compare against and the JSON Schemas are generated
from, so no document can promise a limit the code does not keep. (The tag's normal form and its
limit live with the tag rule, in `shared/text.py`.)
"""

from __future__ import annotations

import re
from typing import Any

from shared.text import BIDI_CONTROL_RANGES, FORMAT_CHARACTER_RANGES, MAX_TAG

MAX_TITLE = 200
"""Characters of a title once trimmed (at least 1)."""
MAX_DESCRIPTION = 10_000
MAX_TAGS = 20
"""Distinct tags of a task, counted after normalising and removing duplicates."""
MIN_PRIORITY = 1
MAX_PRIORITY = 5
DEFAULT_PRIORITY = 3

# Matched with fullmatch (`$` would let a trailing newline through) and ASCII digits only
# (`\d` also takes other scripts' digits, which int() then reads).
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
TIMESTAMP = re.compile(
    DATE.pattern + r"T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
"""A moment as a parameter: ISO 8601 with a Z or an offset, seconds and microseconds optional."""


def _uuid(hex_digit: str) -> re.Pattern[str]:
    return re.compile("-".join(f"{hex_digit}{{{count}}}" for count in (8, 4, 4, 4, 12)))


TASK_ID = _uuid("[0-9a-fA-F]")
"""The only form of a task id a URL may name (the canonical 8-4-4-4-12, either case)."""
WRITTEN_ID = _uuid("[0-9a-f]")
"""A task id as this service writes it (`str(UUID)`): what a cursor carries."""

CONTROL_CHARACTERS = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
"""C0 controls but tab and newline, DEL and C1 controls, as a regex class body: what
`shared/text.py` refuses (with lone surrogates, which no JSON Schema pattern needs to name)."""
SPACE = f"[^\\S{CONTROL_CHARACTERS}]*"
"""Whitespace `str.strip` trims that is no refused control, for JSON Schema patterns."""
TAG_REFUSED = f",{FORMAT_CHARACTER_RANGES}"
"""Refused in a tag besides controls: commas and invisible format characters."""


def trimmed_pattern(most: int, also_refused: str = "") -> str:
    """A JSON Schema pattern (unanchored) for text that holds 1 to `most` characters once
    trimmed (Python's `\\s` is what `str.strip` trims), and no control character."""
    refused = CONTROL_CHARACTERS + also_refused
    return rf"{SPACE}[^\s{refused}](?:[^{refused}]{{0,{most - 2}}}[^\s{refused}])?{SPACE}"


TITLE_PATTERN = f"^{trimmed_pattern(MAX_TITLE, BIDI_CONTROL_RANGES)}$"
TAG_PATTERN = f"^{trimmed_pattern(MAX_TAG, TAG_REFUSED)}$"
TEXT_PATTERN = f"^[^{CONTROL_CHARACTERS}{BIDI_CONTROL_RANGES}]*$"
DATE_PATTERN = f"^{DATE.pattern}$"

TITLE_SCHEMA: dict[str, Any] = {"type": "string", "pattern": TITLE_PATTERN}
DESCRIPTION_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": TEXT_PATTERN,
    "maxLength": MAX_DESCRIPTION,
}
PRIORITY_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "minimum": MIN_PRIORITY,
    "maximum": MAX_PRIORITY,
}
DATE_SCHEMA: dict[str, Any] = {"type": "string", "format": "date", "pattern": DATE_PATTERN}
TAGS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "pattern": TAG_PATTERN},
    "maxItems": MAX_TAGS,
}
TIMESTAMP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": f"^{TIMESTAMP.pattern}$",
}
TASK_ID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid"}
