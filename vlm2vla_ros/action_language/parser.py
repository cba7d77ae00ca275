"""Action chunk text <-> ActionChunk: a lenient parser for model output and a canonical formatter.

The parser finds the one bracketed list in the text that can be a chunk, reads it with a
tiny tokenizer (no backtracking regex over the whole text) and checks every value against
the limits; anything that is not unambiguously one valid chunk raises ActionParseError.
"""

from __future__ import annotations

import math
import numbers
import re
from decimal import Decimal

import numpy as np

from .grammar import float_to_units, to_units, units_to_text
from .types import DEFAULT_LIMITS, ActionChunk, ActionLimits, ActionParseError, ActionStep, ActionValueError

MAX_TEXT_CHARS = 20_000
"""Longer model outputs are rejected before any scanning (a chunk is a few hundred chars)."""

_MAX_NUMBER_CHARS = 24  # keeps Decimal arithmetic exact and cheap
_AXES = ("dx", "dy", "dz")
_BRACKETS = re.compile(r"[\[\]]")
_CHUNK_HINT = re.compile(r"[0-9\[]")
# Every non-space character falls into exactly one token kind, so finditer skips nothing.
_TOKENS = re.compile(
    r"\s*(?:(?P<open>\[)|(?P<close>\])|(?P<comma>,)"
    r"|(?P<number>[+\-\u2212]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"|(?P<word>[A-Za-z_][A-Za-z_0-9]*)|(?P<other>\S))"
)
_NON_FINITE = {"nan", "inf", "infinity"}
_FENCED = re.compile(r"\s*(?:```[A-Za-z0-9_+-]*\s*)?(.*?)\s*(?:```)?\s*", re.DOTALL)
"""An answer without its surrounding whitespace and code fence (group 1)."""


def parse_action_chunk(
    text: str, limits: ActionLimits = DEFAULT_LIMITS, max_chars: int = MAX_TEXT_CHARS
) -> ActionChunk:
    """Read the single chunk in a model's answer; raises ActionParseError, never anything else.

    Accepts surrounding prose and code fences, any whitespace, integers or decimals, "+"
    and U+2212 minus signs, and the one-step form "[dx, dy, dz, gripper]" as the whole answer
    (in prose, four bracketed numbers may be anything else). Values are
    rounded to limits.decimals (ties away from zero) and must stay within limits.
    """
    if not isinstance(text, str):
        raise ActionParseError(f"expected text, got {type(text).__name__}", repr(text)[:200])
    if len(text) > max_chars:
        raise ActionParseError(f"text has {len(text)} characters, more than the limit of {max_chars}", text)
    return ActionChunk(tuple(_read_steps(_find_candidate(text), text, limits)))


def _find_candidate(text: str) -> str:
    """The one top-level bracketed list that holds a digit or a nested list."""
    candidate: str | None = None
    depth = 0
    start = 0
    for match in _BRACKETS.finditer(text):
        if match.group() == "[":
            if depth == 0:
                start = match.start()
            depth += 1
            if depth > 2:
                raise ActionParseError("brackets are nested deeper than a chunk's two levels", text)
        else:
            if depth == 0:
                raise ActionParseError("a ']' has no matching '['", text)
            depth -= 1
            if depth == 0 and _CHUNK_HINT.search(text, start + 1, match.start()):
                if candidate is not None:
                    raise ActionParseError(
                        "found more than one bracketed list; expected exactly one chunk", text
                    )
                candidate = text[start : match.end()]
    if depth:
        raise ActionParseError("a '[' is never closed (truncated output?)", text)
    if candidate is None:
        raise ActionParseError("no action chunk '[[dx, dy, dz, gripper], ...]' found", text)
    return candidate


def _tokens(candidate: str, text: str) -> list[tuple[str, str]]:
    tokens = []
    for match in _TOKENS.finditer(candidate):
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word":
            if value.lower() in _NON_FINITE:
                raise ActionParseError(f"'{value}' is not a finite number", text)
            raise ActionParseError(f"unexpected '{value}' inside the chunk", text)
        if kind == "other":
            raise ActionParseError(f"unexpected character {value!r} inside the chunk", text)
        tokens.append((kind, value))
    return tokens


def _read_steps(candidate: str, text: str, limits: ActionLimits) -> list[ActionStep]:
    """Structure: '[' step (',' step)* ','? ']' with step = '[' n ',' n ',' n ',' n ','? ']',
    or one bare step. The brackets are balanced and at most two deep (see _find_candidate)."""
    tokens = _tokens(candidate, text)
    if tokens[1][0] != "open":
        if _FENCED.fullmatch(text).group(1) != candidate:  # type: ignore[union-attr]
            raise ActionParseError(
                "a one-step list '[dx, dy, dz, gripper]' is a chunk only as the whole answer; in prose it may be "
                "anything (a position, a colour); write the chunk as '[[dx, dy, dz, gripper]]'", text
            )
        values, _ = _read_list(tokens, 0, text)
        return [_make_step(values, 1, text, limits)]
    steps = []
    pos = 1
    while True:
        kind, value = tokens[pos]
        if kind != "open":
            raise ActionParseError(
                f"expected step {len(steps) + 1} as '[dx, dy, dz, gripper]', found {value!r}", text
            )
        values, pos = _read_list(tokens, pos, text)
        steps.append(_make_step(values, len(steps) + 1, text, limits))
        if len(steps) > limits.max_steps:
            raise ActionParseError(f"chunk has more than the limit of {limits.max_steps} steps", text)
        kind, value = tokens[pos]
        if kind == "comma":
            pos += 1
            kind, value = tokens[pos]
        elif kind != "close":
            raise ActionParseError(f"expected ',' or ']' after step {len(steps)}, found {value!r}", text)
        if kind == "close":
            return steps


def _read_list(tokens: list[tuple[str, str]], pos: int, text: str) -> tuple[list[str], int]:
    """Numbers of the flat list opening at tokens[pos]; returns them and the index after ']'."""
    values: list[str] = []
    pos += 1
    while True:
        kind, value = tokens[pos]
        if kind == "close" and not values:
            raise ActionParseError("empty list inside the chunk", text)
        if kind != "number":
            raise ActionParseError(f"expected a number, found {value!r}", text)
        values.append(value)
        if len(values) > 4:
            raise ActionParseError("a step has more than 4 values (dx, dy, dz, gripper)", text)
        kind, value = tokens[pos + 1]
        pos += 2
        if kind == "comma" and tokens[pos][0] == "close":
            pos += 1
            return values, pos
        if kind == "close":
            return values, pos
        if kind != "comma":
            raise ActionParseError(f"expected ',' or ']' after a number, found {value!r}", text)


def _make_step(values: list[str], index: int, text: str, limits: ActionLimits) -> ActionStep:
    if len(values) != 4:
        raise ActionParseError(
            f"step {index} has {len(values)} values; expected 4 (dx, dy, dz, gripper)", text
        )
    numbers = []
    for value in values:
        if len(value) > _MAX_NUMBER_CHARS:
            raise ActionParseError(f"step {index}: number {value[:30]!r} is too long", text)
        numbers.append(Decimal(value.replace("\u2212", "-")))
    coords = []
    for axis, number in zip(_AXES, numbers):
        try:
            units = to_units(number, limits)
        except ActionValueError as error:
            raise ActionParseError(f"step {index}: {axis}: {error.reason}", text) from None
        if abs(units) > limits.max_units:
            raise ActionParseError(
                f"step {index}: {axis}={number} cm is beyond the limit of {limits.max_abs_cm} cm", text
            )
        coords.append(units / 10**limits.decimals)
    gripper = numbers[3]
    if gripper not in (0, 1):
        raise ActionParseError(f"step {index}: gripper must be 0 (closed) or 1 (open), got {values[3]}", text)
    return ActionStep(coords[0], coords[1], coords[2], int(gripper))


def chunk_units(chunk: ActionChunk, limits: ActionLimits = DEFAULT_LIMITS) -> list[tuple[int, int, int, int]]:
    """Validate a chunk against limits; its steps as (dx, dy, dz) units and gripper.

    Raises ActionValueError naming the first problem. This is the check every chunk passes
    before it is formatted or executed.
    """
    steps = getattr(chunk, "steps", None)
    if not isinstance(steps, (tuple, list)):
        raise ActionValueError(f"expected an ActionChunk, got {type(chunk).__name__}")
    if not steps:
        raise ActionValueError("chunk has no steps")
    if len(steps) > limits.max_steps:
        raise ActionValueError(f"chunk has {len(steps)} steps, more than the limit of {limits.max_steps}")
    result = []
    for index, step in enumerate(steps, start=1):
        *coords, gripper = step_values(step, index)
        units = [float_to_units(value, limits) for value in coords]
        for axis, value, unit in zip(_AXES, coords, units):
            if abs(unit) > limits.max_units:
                raise ActionValueError(
                    f"step {index}: {axis}={value} cm is beyond the limit of {limits.max_abs_cm} cm"
                )
        result.append((units[0], units[1], units[2], gripper))
    return result


def step_values(step: ActionStep, index: int) -> tuple[float, float, float, int]:
    """A step's dx, dy, dz as finite floats and its gripper as 0 or 1; ActionValueError otherwise."""
    if not isinstance(step, ActionStep):
        raise ActionValueError(f"step {index} is a {type(step).__name__}, not an ActionStep")
    coords = []
    for axis in _AXES:
        value = getattr(step, axis)
        try:
            number = (
                float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
            )
        except OverflowError:  # an int too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise ActionValueError(f"step {index}: {axis}={value!r} is not a finite number")
        coords.append(number)
    gripper = step.gripper
    if not isinstance(gripper, numbers.Real) or gripper not in (0, 1):
        raise ActionValueError(f"step {index}: gripper must be 0 (closed) or 1 (open), got {gripper!r}")
    return coords[0], coords[1], coords[2], int(gripper)


def validate_chunk(chunk: ActionChunk, limits: ActionLimits = DEFAULT_LIMITS) -> ActionChunk:
    """The chunk with values rounded to limits.decimals; ActionValueError if it breaks limits."""
    scale = 10**limits.decimals
    return ActionChunk(
        tuple(ActionStep(x / scale, y / scale, z / scale, g) for x, y, z, g in chunk_units(chunk, limits))
    )


def format_action_chunk(chunk: ActionChunk, limits: ActionLimits = DEFAULT_LIMITS) -> str:
    """Canonical text, e.g. "[[2.5, -0.3, 1.0, 1], [0.0, 0.0, -1.2, 0]]"; matches chunk_regex.

    Values are rounded to limits.decimals; ActionValueError if the chunk breaks the limits.
    """
    decimals = limits.decimals
    steps = (
        f"[{units_to_text(x, decimals)}, {units_to_text(y, decimals)}, {units_to_text(z, decimals)}, {g}]"
        for x, y, z, g in chunk_units(chunk, limits)
    )
    return "[" + ", ".join(steps) + "]"


def chunk_to_array(chunk: ActionChunk) -> np.ndarray:
    """The chunk as a float array of shape (N, 4): dx, dy, dz in cm, then gripper."""
    return np.array([(s.dx, s.dy, s.dz, s.gripper) for s in chunk.steps], dtype=float).reshape(-1, 4)
