"""Motion plans: a deterministic, direction-first sentence describing a list of steps.

The paper's plans came from an external VLM; ours are written by rule, so that training
targets are consistent and any chunk can be explained in words ("Move forward and
slightly down, then close the gripper.").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .grammar import float_to_units, units_to_text
from .parser import step_values
from .types import ActionChunk, ActionLimits, ActionStep, ActionValueError

STILL_CM = 0.05
"""A move whose largest component is below this (half a millimetre) is no move."""
MENTION_RATIO = 0.2
"""Components smaller than this fraction of the dominant one are left unsaid."""
SLIGHT_RATIO = 0.5
"""Components smaller than this fraction of the dominant one are "slightly"."""

_WORDS = (("forward", "back"), ("left", "right"), ("up", "down"))


def verbalise_moves(steps: Sequence[ActionStep] | ActionChunk, initial_gripper: int | None = None) -> str:
    """One or two sentences ending with a period, e.g. "Move down, then close the gripper."

    Consecutive moves with the same dominant direction (and no gripper change between)
    are described as one move. initial_gripper is the state before the first step; when
    None, the first step's gripper value is taken as already in force.
    """
    vectors, grippers = _checked(steps)
    if initial_gripper not in (None, 0, 1):
        raise ActionValueError(f"initial_gripper must be None, 0 or 1, got {initial_gripper!r}")
    state = grippers[0] if initial_gripper is None else initial_gripper
    clauses: list[str] = []
    group: list[float] = []  # summed vector of the current run of similar moves
    for vector, gripper in zip(vectors, grippers):
        direction = _dominant(vector)
        if direction is not None:
            if group and _dominant(group) == direction:
                group = [g + v for g, v in zip(group, vector)]
            else:
                _flush(group, clauses)
                group = list(vector)
        if gripper != state:
            _flush(group, clauses)
            group = []
            clauses.append("close the gripper" if gripper == 0 else "open the gripper")
            state = gripper
    _flush(group, clauses)
    return _sentences(clauses)


_ONE_DECIMAL = ActionLimits(decimals=1)


def format_cm(value_cm: float) -> str:
    """A length in cm as the plans' totals and the miniature's place answers write it: one
    decimal, never "-0.0" ("12.0", "-3.5"), rounded as the action grammar rounds (ties away from
    zero, on the shortest decimal form), so a total and the chunk that copies it agree."""
    return units_to_text(float_to_units(value_cm, _ONE_DECIMAL), 1)


def plan_with_total(plan: str, total_cm: Sequence[float]) -> str:
    """A plan that first states the whole move left in its subtask: "[12.0, -3.5, -6.0] cm to
    go. Move forward and down."

    The total is written as a place from the gripper is ("[dx, dy, dz]", format_cm), so a model
    that reads where things are from the gripper can write it, and the chunk that follows is a
    copy of it when it fits in one move (docs/miniature.md, finding 28).
    """
    if not isinstance(plan, str) or not plan.strip():
        raise ActionValueError(f"plan_with_total needs a non-empty plan, got {plan!r}")
    if len(total_cm) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in total_cm):
        raise ActionValueError(f"plan_with_total needs a finite [dx, dy, dz] in cm, got {total_cm!r}")
    return "[" + ", ".join(format_cm(v) for v in total_cm) + "] cm to go. " + plan.strip()


CM_VECTOR_PATTERN = r"\[" + ",".join([r"\s*(-?\d{1,3}(?:\.\d+)?)\s*"] * 3) + r"\]"
"""Reads "[dx, dy, dz]" as format_cm writes it (spaces allowed, at most three whole digits):
the plans' totals here, the miniature's place answers in its VQA; groups 1-3 are the numbers."""
_PLAN_TOTAL = re.compile(r"\s*" + CM_VECTOR_PATTERN + r"\s*cm to go\.\s*(.*)", re.DOTALL)


def read_plan_total(plan: str) -> tuple[tuple[float, float, float], str] | None:
    """The total a plan starts with (plan_with_total's, spaces allowed) and the words after it;
    None when the plan does not start with one."""
    match = _PLAN_TOTAL.fullmatch(plan)
    if match is None:
        return None
    return (float(match.group(1)), float(match.group(2)), float(match.group(3))), match.group(4)


def _dominant(vector: Sequence[float]) -> tuple[int, bool] | None:
    """(axis, positive) of the largest component, or None when the move is negligible."""
    axis = max(range(3), key=lambda a: abs(vector[a]))
    if abs(vector[axis]) < STILL_CM:
        return None
    return axis, vector[axis] > 0


def _flush(group: list[float], clauses: list[str]) -> None:
    if not group:
        return
    size = max(abs(v) for v in group)
    order = sorted(range(3), key=lambda a: -abs(group[a]))
    words = []
    for axis in order:
        value = group[axis]
        if abs(value) < max(MENTION_RATIO * size, STILL_CM):
            continue
        word = _WORDS[axis][0 if value > 0 else 1]
        words.append(word if abs(value) >= SLIGHT_RATIO * size else f"slightly {word}")
    clauses.append("move " + _join(words))


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _sentences(clauses: list[str]) -> str:
    if not clauses:
        return "Hold still."
    parts = (
        [clauses]
        if len(clauses) <= 3
        else [clauses[: (len(clauses) + 1) // 2], clauses[(len(clauses) + 1) // 2 :]]
    )
    sentences = [", then ".join(part) for part in parts]
    sentences = [sentences[0]] + ["then " + s for s in sentences[1:]]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def _checked(steps: Sequence[ActionStep] | ActionChunk) -> tuple[list[tuple[float, ...]], list[int]]:
    items = steps.steps if isinstance(steps, ActionChunk) else steps
    if isinstance(items, (str, bytes)) or not hasattr(items, "__len__") or len(items) == 0:
        raise ActionValueError("verbalise_moves needs a non-empty sequence of ActionStep")
    values = [step_values(step, index) for index, step in enumerate(items, start=1)]
    return [v[:3] for v in values], [v[3] for v in values]
