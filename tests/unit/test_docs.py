"""The README and docs/ stand alone: every file, document, anchor, test and make target they
cite is in the repository (tracked or about to be, never only on this machine), and they cite
no work items and nothing outside the repository."""

from __future__ import annotations

import itertools
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_MAKE = re.compile(r"\bmake ([a-z][a-z-]*)")
_EXTENSIONS = (".py", ".md", ".yml", ".yaml", ".json", ".sql", ".conf", ".toml", ".lock", ".lua")
_OUTSIDE = [
    (re.compile(r"(?<![\w&/])#\d+\b"), "a work item number"),
    (re.compile(r"\b(issue|work item|ticket|PR)s? #?\d+", re.IGNORECASE), "a work item"),
    (re.compile(r"\.\./"), "a path outside the repository"),
    (re.compile(r"measurements\.md"), "a file outside the repository"),
]


@cache
def repository_files() -> frozenset[str]:
    """What a fresh clone holds: tracked files, plus new ones not ignored (before a commit)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return frozenset(name for name in listed if (ROOT / name).exists())


def in_repository(relative: str) -> bool:
    files = repository_files()
    relative = relative.rstrip("/")
    return relative in files or any(name.startswith(relative + "/") for name in files)


def expand(token: str) -> list[str]:
    """`bench/results/x.{md,json}` -> both names."""
    braces = re.search(r"\{([^}]*)\}", token)
    if braces is None:
        return [token]
    return list(
        itertools.chain.from_iterable(
            expand(token[: braces.start()] + choice + token[braces.end() :])
            for choice in braces.group(1).split(",")
        )
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = _FENCE.sub("", document.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def cited_paths(text: str) -> list[str]:
    """Code spans that name a repository path: a top-level entry, or a file by its extension."""
    top = {name.split("/")[0] for name in repository_files()}
    found = []
    for token in _CODE.findall(text):
        token = token.strip()
        words = token.split()
        for word in words if len(words) > 1 else [token]:
            word = word.strip("(),;:'\"")
            if not word or any(mark in word for mark in "<>*$=?") or "://" in word:
                continue
            if word.startswith(("/", "-", ".venv", "~")):
                continue
            first = word.split("/")[0]
            if re.fullmatch(r"\.\w+", word):  # an extension alone (`.md`), not a file
                continue
            if ("/" in word and first in top) or word.endswith(_EXTENSIONS):
                found.append(word)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_points_at_a_document_and_anchor_that_exist(document: Path) -> None:
    missing = []
    for target in _LINK.findall(document.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        relative = linked.relative_to(ROOT).as_posix() if linked.is_relative_to(ROOT) else None
        if relative is None or not in_repository(relative):
            missing.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            missing.append(target)
    assert missing == [], f"{document.name} links to what the repository does not have"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_file_path_and_test_cited_exists(document: Path) -> None:
    names = {Path(name).name for name in repository_files()}
    missing = []
    for cited in cited_paths(document.read_text()):
        for token in expand(cited):
            path, _, test = token.partition("::")
            if "/" not in path:
                if path not in names:
                    missing.append(token)
                continue
            if not in_repository(path):
                missing.append(token)
                continue
            if test and f"def {test}(" not in (ROOT / path).read_text():
                missing.append(token)
    assert missing == [], f"{document.name} cites what the repository does not have"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_make_target_cited_exists(document: Path) -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    cited = set(_MAKE.findall(document.read_text()))
    assert cited - targets == set()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_no_work_items_and_nothing_outside_the_repository(document: Path) -> None:
    found = [
        f"line {number}: {what}: {line.strip()}"
        for number, line in enumerate(document.read_text().splitlines(), 1)
        for pattern, what in _OUTSIDE
        if pattern.search(line)
    ]
    assert found == []


def test_the_checks_find_what_they_look_for() -> None:
    """The extractors are not vacuous: they see real citations of every kind."""
    sample = (
        "See `shared/config.py`, `tests/unit/test_docs.py::test_the_checks_find_what_they_look_for`"
        ", `bench/results/x.{md,json}`, `schema.sql`, `application/json` and `/api/v1/tasks`."
    )
    assert cited_paths(sample) == [
        "shared/config.py",
        "tests/unit/test_docs.py::test_the_checks_find_what_they_look_for",
        "bench/results/x.{md,json}",
        "schema.sql",
    ]
    assert expand("a/b.{md,json}") == ["a/b.md", "a/b.json"]
    assert slug("`GET /api/v1/events` — the event feed") == "get-apiv1events--the-event-feed"
    assert [what for pattern, what in _OUTSIDE if pattern.search("see #12")] == [
        "a work item number"
    ]
    assert any(pattern.search("from ../shared/spec") for pattern, _ in _OUTSIDE)
    assert in_repository("shared/config.py")
    assert not in_repository("shared/nothing.py")
