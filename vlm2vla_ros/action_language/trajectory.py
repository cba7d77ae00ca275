"""Merging fine per-step deltas into the coarse moves the model learns to write (paper, sec. data).

Without merging, per-step moves are a few millimetres and a model learns to predict
negligible motion. A move ends when one axis has travelled MergeConfig.axis_cm in one
direction, when the net displacement reaches MergeConfig.total_cm, or when the gripper
command changes. Rounding is done on cumulative positions, so the rounded steps add up to
the rounded total displacement exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..checks import positive
from .grammar import float_to_units
from .types import DEFAULT_LIMITS, ActionLimits, ActionStep, ActionValueError

MAX_INPUT_DELTA_CM = 100.0
"""A single recorded step longer than this is a unit mistake (metres? millimetres?), not motion."""

_EPS = 1e-9  # so that 5 x 0.5 cm counts as reaching 2.5 cm despite float sums


@dataclass(frozen=True)
class MergeConfig:
    """Thresholds in cm that end a merged move (the paper's 2.5 cm per axis, 5 cm in total)."""

    axis_cm: float = 2.5
    total_cm: float = 5.0

    def __post_init__(self) -> None:
        for name in ("axis_cm", "total_cm"):
            positive(getattr(self, name), f"MergeConfig.{name}")


@dataclass(frozen=True)
class Segment:
    """Input steps [start, stop) form one move; `gripper` is the command in force after it."""

    start: int
    stop: int
    gripper: int


def below_resolution(deltas_cm: Sequence, limits: ActionLimits = DEFAULT_LIMITS) -> bool:
    """Whether steps that add up to this move write no move in the action language: their sum
    rounds to zero at limits.decimals on every axis. A recorded still step is rarely exactly
    still (encoder noise); merge_trajectory, which rounds positions cumulatively, writes such a
    move as nothing unless the rounding carried from the moves before tips it over."""
    total = np.asarray(deltas_cm, dtype=float).reshape(-1, 3).sum(axis=0)
    return not any(float_to_units(float(v), limits) for v in total)  # the grammar's rounding: ties away from zero


def merge_segments(
    deltas_cm: Sequence,
    gripper: Sequence,
    config: MergeConfig = MergeConfig(),
    initial_gripper: int | None = None,
    limits: ActionLimits = DEFAULT_LIMITS,
) -> list[Segment]:
    """Where the merged moves begin and end; they partition range(len(deltas_cm)).

    A gripper change at step i ends the move before step i (step i's motion comes after the
    gripper acts), and that move carries the new gripper value. initial_gripper is the
    command in force before the first step; a first step that changes it without moving (its
    move below_resolution at limits, so measured noise counts as still) is a move of its
    own. Merged into the motion after it, the gripper would act only once that motion is done,
    since an action step moves first and sets the gripper after. (A first step that changes it
    and also moves is merged as before.)
    Raises ActionValueError.
    """
    deltas, grip = _checked(deltas_cm, gripper)
    segments = []
    start = 0
    if initial_gripper is not None and grip[0] != initial_gripper and below_resolution(deltas[0], limits):
        segments.append(Segment(0, 1, grip[0]))
        start = 1
    net = [0.0, 0.0, 0.0]
    run = [0.0, 0.0, 0.0]  # per-axis travel since that axis last changed direction
    for i, delta in enumerate(deltas.tolist()[start:], start):
        if i > start and grip[i] != grip[i - 1]:
            segments.append(Segment(start, i, grip[i]))
            start, net, run = i, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        net = [n + d for n, d in zip(net, delta)]
        run = [r + d if r * d >= 0 else d for r, d in zip(run, delta)]
        axis_done = max(abs(r) for r in run) >= config.axis_cm - _EPS
        if axis_done or math.sqrt(sum(n * n for n in net)) >= config.total_cm - _EPS:
            segments.append(Segment(start, i + 1, grip[min(i + 1, len(grip) - 1)]))
            start, net, run = i + 1, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    if start < len(deltas):
        segments.append(Segment(start, len(deltas), grip[-1]))
    return segments


def merge_trajectory(
    deltas_cm: Sequence,
    gripper: Sequence,
    config: MergeConfig = MergeConfig(),
    limits: ActionLimits = DEFAULT_LIMITS,
    initial_gripper: int | None = None,
) -> list[ActionStep]:
    """Merged steps of a whole trajectory (a list: it may hold more than limits.max_steps).

    deltas_cm: (N, 3) per-step end-effector deltas in cm (+x forward, +y left, +z up);
    gripper: N commands, 0 closed / 1 open. Values are rounded to limits.decimals with the
    error carried forward; a move larger than limits.max_abs_cm on an axis is split into
    equal steps; moves that round to nothing and change nothing are dropped, except that
    a trajectory with no motion at all yields one zero step. initial_gripper: the command in
    force before the first step (see merge_segments). Raises ActionValueError.
    """
    deltas, grip = _checked(deltas_cm, gripper)
    segments = merge_segments(deltas, grip, config, initial_gripper, limits)
    scale = 10**limits.decimals
    ends = np.cumsum(deltas, axis=0)
    previous = (0, 0, 0)
    steps: list[ActionStep] = []
    for segment in segments:
        position = tuple(float_to_units(float(v), limits) for v in ends[segment.stop - 1])  # the grammar's rounding
        move = tuple(b - a for a, b in zip(previous, position))
        previous = position
        in_force = initial_gripper if segment.start == 0 and initial_gripper is not None else grip[segment.start]
        changes_gripper = segment.gripper != in_force
        if not any(move) and not changes_gripper:
            continue
        pieces = _split(move, limits.max_units)
        for index, piece in enumerate(pieces):
            grip_after = segment.gripper if index == len(pieces) - 1 else in_force  # it changes with the last piece
            steps.append(ActionStep(piece[0] / scale, piece[1] / scale, piece[2] / scale, grip_after))
    return steps or [ActionStep(0.0, 0.0, 0.0, grip[-1])]


def _split(move: tuple[int, ...], max_units: int) -> list[tuple[int, ...]]:
    """Equal integer pieces of `move`, each within max_units per axis, summing to `move`."""
    count = max(1, max(-(-abs(v) // max_units) for v in move))
    signs = [1 if v >= 0 else -1 for v in move]
    return [
        tuple(sign * ((j + 1) * abs(v) // count - j * abs(v) // count) for sign, v in zip(signs, move))
        for j in range(count)
    ]


def _checked(deltas_cm: Sequence, gripper: Sequence) -> tuple[np.ndarray, list[int]]:
    try:
        deltas = np.asarray(deltas_cm, dtype=float)
        grip = np.asarray(gripper, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise ActionValueError("deltas_cm must be an (N, 3) array and gripper N numbers") from None
    if deltas.ndim != 2 or deltas.shape[1] != 3:
        raise ActionValueError(f"deltas_cm must have shape (N, 3), got {deltas.shape}")
    if len(deltas) == 0:
        raise ActionValueError("the trajectory is empty")
    if grip.shape != (len(deltas),):
        raise ActionValueError(
            f"gripper must have shape ({len(deltas)},) to match deltas_cm, got {grip.shape}"
        )
    if not np.all(np.isfinite(deltas)):
        bad = int(np.argmin(np.isfinite(deltas).all(axis=1)))
        raise ActionValueError(f"deltas_cm[{bad}] holds a non-finite value")
    too_big = np.abs(deltas).max(axis=1) > MAX_INPUT_DELTA_CM
    if too_big.any():
        raise ActionValueError(
            f"step {int(np.argmax(too_big))} moves more than {MAX_INPUT_DELTA_CM} cm; are the deltas in cm?"
        )
    binary = (grip == 0) | (grip == 1)
    if not binary.all():
        bad = int(np.argmin(binary))
        raise ActionValueError(f"gripper[{bad}] is {grip[bad]!r}; expected 0 (closed) or 1 (open)")
    return deltas, [int(g) for g in grip]
