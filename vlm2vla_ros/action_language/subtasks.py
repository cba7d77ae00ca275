"""Subtask lists: canonical numbered lines, read back from what models actually write."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence

from .parser import MAX_TEXT_CHARS
from .types import ActionParseError, ActionValueError

MAX_SUBTASKS = 12
MAX_SUBTASK_CHARS = 80
"""The constrained decoder's limit too (policy.prompts.subtasks_regex): a subtask it could never
write is neither read from a model nor written into training data."""
SUBTASK_FIRST_CHAR = "[A-Za-z]"
"""A subtask starts with a letter, in the decoder's grammar and here alike."""
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""C0 and C1 controls, DEL, the line and paragraph separators (with the C0 and C1 ones, every
break str.splitlines() knows), and the bidirectional marks, overrides, embeddings and isolates,
which make logged or displayed text read in another order than the model reads it (joiners
stay: Persian and Indic scripts need them), as a regex character range."""
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")

_NUMBERED = re.compile(r"[ \t]*(\d{1,3})[.)](?:[ \t]+(.*))?")
_BULLET = re.compile(r"[ \t]*[-*\u2022](?:[ \t]+(.*))?")
_STRING_LIST_START = re.compile(r"\[\s*[\"']")


def format_subtasks(subtasks: Sequence[str]) -> str:
    """Canonical text: "1. Grasp the red block\\n2. Move to the bowl"."""
    items = checked_subtasks(subtasks)
    return "\n".join(f"{index}. {item}" for index, item in enumerate(items, start=1))


def checked_subtasks(subtasks: Sequence[str]) -> list[str]:
    """The subtasks as format_subtasks writes them (whitespace collapsed), once every rule holds;
    ActionValueError naming the first one that breaks a rule otherwise."""
    if isinstance(subtasks, str):
        raise ActionValueError("expected a sequence of subtasks, got a single string")
    return _checked_items(list(subtasks), MAX_SUBTASKS, ActionValueError)


def control_characters(text: str, allowed: str = "") -> list[str]:
    """The characters of text that CONTROL_CHARS names, but those in allowed."""
    return [c for c in _CONTROL.findall(text) if c not in allowed]


def parse_subtasks(text: str, max_subtasks: int = MAX_SUBTASKS) -> list[str]:
    """Subtasks from a numbered list, a bullet list or a Python list of strings.

    Lines before the first and after the last item are ignored (prose, code fences);
    anything else that is not clearly one list raises ActionParseError.
    """
    if not isinstance(text, str):
        raise ActionParseError(f"expected text, got {type(text).__name__}", repr(text)[:200])
    if len(text) > MAX_TEXT_CHARS:
        raise ActionParseError(
            f"text has {len(text)} characters, more than the limit of {MAX_TEXT_CHARS}", text
        )
    items = _numbered_or_bullets(text)
    if items is None:
        items = _string_list(text)
    return _checked_items(items, max_subtasks, lambda reason: ActionParseError(reason, text))


def _clean(item: str) -> str:
    return " ".join(item.split())


def _numbered_or_bullets(text: str) -> list[str] | None:
    lines = text.replace("\r\n", "\n").split("\n")  # not splitlines(): a control that breaks a line is refused
    matches = [(_NUMBERED.fullmatch(line), _BULLET.fullmatch(line)) for line in lines]
    rows = [i for i, (numbered, bullet) in enumerate(matches) if numbered or bullet]
    if not rows:
        return None
    numbered_rows = [i for i in rows if matches[i][0]]
    if numbered_rows and len(numbered_rows) != len(rows):
        raise ActionParseError("mixes numbered and bullet items; expected one list", text)
    item_rows = set(rows)
    for i in range(rows[0], rows[-1] + 1):
        if i not in item_rows and lines[i].strip():
            raise ActionParseError(f"line {lines[i].strip()[:40]!r} between list items is not an item", text)
    if numbered_rows:
        numbers = [int(matches[i][0].group(1)) for i in rows]
        if numbers != list(range(1, len(rows) + 1)):
            raise ActionParseError(f"items are numbered {numbers[:20]}; expected 1, 2, 3, ...", text)
        return [matches[i][0].group(2) or "" for i in rows]
    return [matches[i][1].group(1) or "" for i in rows]


def _string_list(text: str) -> list[str]:
    start = _STRING_LIST_START.search(text)
    end = text.rfind("]")
    if start is None or end < start.start():
        raise ActionParseError("no numbered list, bullet list or list of strings found", text)
    try:
        value = ast.literal_eval(text[start.start() : end + 1])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ActionParseError("the bracketed list is not a valid list of strings", text) from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ActionParseError("the bracketed list does not hold only strings", text)
    return value


def _checked_items(items: list[str], max_subtasks: int, error: Callable[[str], Exception]) -> list[str]:
    """The items with their whitespace collapsed, once every rule holds; error(reason) otherwise."""
    if not items:
        raise error("the subtask list is empty")
    if len(items) > max_subtasks:
        raise error(f"{len(items)} subtasks, more than the limit of {max_subtasks}")
    cleaned = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, str):
            raise error(f"subtask {index} is a {type(item).__name__}, not text")
        if not item.strip():
            raise error(f"subtask {index} is empty")
        if "\n" in item or "\r" in item:
            raise error(f"subtask {index} spans several lines")
        if control_characters(item, allowed="\t"):  # before _clean, which would make some of them spaces
            raise error(f"subtask {index} contains control characters")
        clean = _clean(item)  # (tabs and runs of spaces become one space)
        if len(clean) > MAX_SUBTASK_CHARS:
            raise error(f"subtask {index} has {len(clean)} characters, more than {MAX_SUBTASK_CHARS}")
        if not re.match(SUBTASK_FIRST_CHAR, clean):
            raise error(f"subtask {index} starts with {clean[0]!r}, not a letter")
        cleaned.append(clean)
    return cleaned
