"""Merging per-step deltas into the coarse moves of the action language."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from vlm2vla_ros.action_language import (
    ActionLimits,
    ActionStep,
    ActionValueError,
    MergeConfig,
    Segment,
    below_resolution,
    merge_segments,
    merge_trajectory,
)
from vlm2vla_ros.action_language.grammar import float_to_units


@st.composite
def trajectories(draw):
    n = draw(st.integers(1, 60))
    coord = st.floats(-3.0, 3.0, allow_nan=False)
    deltas = draw(st.lists(st.tuples(coord, coord, coord), min_size=n, max_size=n))
    first = draw(st.sampled_from([0, 1]))
    flips = draw(
        st.lists(st.booleans().map(lambda b: b and draw(st.integers(0, 5)) == 0), min_size=n, max_size=n)
    )
    gripper = list(itertools.accumulate(flips, lambda g, flip: 1 - g if flip else g, initial=first))[1:]
    return deltas, gripper


def _dedupe(values):
    return [key for key, _ in itertools.groupby(values)]


def _longest_streak(values):
    """Largest |sum| of consecutive values of one sign (zeros do not break a streak)."""
    best = 0.0
    streak = 0.0
    for v in values:
        streak = streak + v if streak * v >= 0 else v
        best = max(best, abs(streak))
    return best


def _reaches_threshold(deltas, config):
    array = np.asarray(deltas).reshape(-1, 3)
    streak = max(_longest_streak(array[:, axis]) for axis in range(3))
    return streak >= config.axis_cm - 1e-9 or np.linalg.norm(array.sum(axis=0)) >= config.total_cm - 1e-9


@settings(max_examples=200, deadline=None)
@given(trajectories(), st.sampled_from([ActionLimits(), ActionLimits(max_abs_cm=3.0, decimals=2)]))
@example(trajectory=([(0.0, 0.0, 0.25)], [0]), limits=ActionLimits())  # a tie: 0.3, not round()'s 0.2
def test_merging_keeps_displacement_limits_and_gripper_order(trajectory, limits):
    deltas, gripper = trajectory
    steps = merge_trajectory(deltas, gripper, limits=limits)
    scale = 10**limits.decimals
    total = np.sum(deltas, axis=0)
    summed = [sum(round(getattr(s, axis) * scale) for s in steps) for axis in ("dx", "dy", "dz")]
    assert summed == [float_to_units(float(v), limits) for v in total]  # the grammar's rounding: ties away from zero
    for step in steps:
        assert max(abs(step.dx), abs(step.dy), abs(step.dz)) <= limits.max_abs_cm
        assert all(
            math.isclose(round(v * scale), v * scale, abs_tol=1e-9) for v in (step.dx, step.dy, step.dz)
        )
    assert _dedupe([gripper[0]] + [s.gripper for s in steps]) == _dedupe(gripper)


@settings(max_examples=200, deadline=None)
@given(trajectories(), st.sampled_from([MergeConfig(), MergeConfig(axis_cm=1.0, total_cm=10.0)]))
def test_moves_end_exactly_where_the_rule_says(trajectory, config):
    deltas, gripper = trajectory
    segments = merge_segments(deltas, gripper, config)
    assert [s.start for s in segments] == [0] + [s.stop for s in segments[:-1]]
    assert segments[-1].stop == len(deltas)
    for segment in segments:
        inside = gripper[segment.start : segment.stop]
        assert len(set(inside)) == 1, "a move never spans a gripper change"
        assert not _reaches_threshold(deltas[segment.start : segment.stop - 1], config)
        ends_at_change = segment.stop < len(deltas) and gripper[segment.stop] != inside[0]
        if segment.stop < len(deltas) and not ends_at_change:
            assert _reaches_threshold(deltas[segment.start : segment.stop], config)
        assert segment.gripper == gripper[min(segment.stop, len(deltas) - 1)]


def test_axis_threshold_merges_small_steps():
    steps = merge_trajectory([[0.5, 0.0, 0.0]] * 10, [1] * 10)
    assert steps == [ActionStep(2.5, 0.0, 0.0, 1), ActionStep(2.5, 0.0, 0.0, 1)]


def test_total_threshold_ends_diagonal_moves():
    config = MergeConfig(axis_cm=10.0, total_cm=5.0)
    segments = merge_segments([[0.5, 0.5, 0.5]] * 8, [1] * 8, config)
    assert [(s.start, s.stop) for s in segments] == [(0, 6), (6, 8)]  # |6 x (0.5, 0.5, 0.5)| = 5.2 cm


def test_a_change_of_direction_restarts_the_axis_count():
    # x runs +2, -1, +2, +1: no single-sign run reaches 2.5 cm until the last step (+2 +1 = 3).
    segments = merge_segments([[2, 0, 0], [-1, 0, 0], [2, 0, 0], [1, 0, 0], [0.1, 0, 0]], [1] * 5)
    assert [(s.start, s.stop) for s in segments] == [(0, 4), (4, 5)]


def test_gripper_change_ends_the_move_and_acts_after_it():
    deltas = [[0, 0, -1.0]] * 2 + [[0, 0, 0]] * 2 + [[0, 0, 1.0]] * 2
    steps = merge_trajectory(deltas, [1, 1, 0, 0, 0, 0])
    assert steps == [ActionStep(0.0, 0.0, -2.0, 0), ActionStep(0.0, 0.0, 2.0, 0)]
    # A change right after a threshold boundary rides on the move that just ended.
    steps = merge_trajectory([[2.5, 0, 0], [0, 0, 0]], [1, 0])
    assert steps == [ActionStep(2.5, 0.0, 0.0, 0)]
    # Changes with no motion in between each get their own step, in order.
    steps = merge_trajectory([[0, 0, 0]] * 3, [1, 0, 1])
    assert steps == [ActionStep(0.0, 0.0, 0.0, 0), ActionStep(0.0, 0.0, 0.0, 1)]


def test_a_gripper_change_before_any_motion_is_a_move_of_its_own():
    """Opening, then moving down: given the command in force before the trajectory, the opening
    is a step of its own, so an executor (which moves, then sets the gripper) opens first."""
    deltas = [[0, 0, 0]] + [[0, 0, -1.0]] * 3
    opened = [1, 1, 1, 1]
    assert merge_segments(deltas, opened, initial_gripper=0) == [Segment(0, 1, 1), Segment(1, 4, 1)]
    # unknown or unchanged before, the opening rides on the move as it always did
    assert merge_segments(deltas, opened) == [Segment(0, 4, 1)]
    assert merge_segments(deltas, opened, initial_gripper=1) == [Segment(0, 4, 1)]
    # a first step that moves as well is not split off
    assert merge_segments([[0, 0, -0.5]] * 4, opened, initial_gripper=0) == [Segment(0, 4, 1)]
    # the merged steps: open, then go down (without it the opening was lost)
    assert merge_trajectory(deltas, opened, initial_gripper=0) == [ActionStep(0.0, 0.0, 0.0, 1),
                                                                    ActionStep(0.0, 0.0, -3.0, 1)]
    assert merge_trajectory(deltas, opened) == [ActionStep(0.0, 0.0, -3.0, 1)]
    # a still step measured on a robot carries noise below the language's 0.1 cm: still all the same
    noisy = [[0.003, -0.002, 0.001]] + deltas[1:]
    assert merge_segments(noisy, opened, initial_gripper=0) == [Segment(0, 1, 1), Segment(1, 4, 1)]
    assert merge_trajectory(noisy, opened, initial_gripper=0) == [ActionStep(0.0, 0.0, 0.0, 1),
                                                                   ActionStep(0.0, 0.0, -3.0, 1)]
    # at a coarser resolution the same half centimetre is no move either
    half = [[0, 0, -0.4]] + deltas[1:]
    assert merge_segments(half, opened, initial_gripper=0) == [Segment(0, 4, 1)]
    assert merge_segments(half, opened, initial_gripper=0, limits=ActionLimits(decimals=0)) == [Segment(0, 1, 1),
                                                                                                 Segment(1, 4, 1)]


@settings(max_examples=200, deadline=None)
@given(trajectories(), st.sampled_from([0, 1]))
@example(trajectory=([(0.0, 0.0, 0.25)], [0]), before=0)  # a tie: 0.3, not numpy's half-to-even 0.2
def test_with_the_gripper_before_known_no_change_is_lost_or_reordered(trajectory, before):
    """A first step that changes the gripper and also moves keeps the old merge (the change acts
    before that step's motion by the rule's convention, which no partition of the steps writes)."""
    deltas, gripper = trajectory
    assume(gripper[0] == before or not any(deltas[0]))
    steps = merge_trajectory(deltas, gripper, initial_gripper=before)
    assert _dedupe([before] + [s.gripper for s in steps]) == _dedupe([before] + list(gripper))
    summed = [sum(round(getattr(s, axis) * 10) for s in steps) for axis in ("dx", "dy", "dz")]  # in 0.1 cm units
    assert summed == [float_to_units(float(v), ActionLimits()) for v in np.sum(deltas, axis=0)]  # ties away from zero


def test_large_moves_are_split_within_limits():
    steps = merge_trajectory([[25.0, -4.0, 0.0], [0, 0, 0]], [1, 0])
    assert steps == [
        ActionStep(8.3, -1.3, 0.0, 1),
        ActionStep(8.3, -1.3, 0.0, 1),
        ActionStep(8.4, -1.4, 0.0, 0),
    ]
    steps = merge_trajectory([[0, 0, -10.06]], [1])  # rounds to -10.1 cm, one unit over the limit
    assert steps == [ActionStep(0.0, 0.0, -5.0, 1), ActionStep(0.0, 0.0, -5.1, 1)]


def test_rounding_error_is_carried_not_lost():
    # Moves of 8 x 0.04 = 0.32 cm: rounding each alone would give 12 x 0.3 = 3.6 cm, not 3.84.
    steps = merge_trajectory([[0.04, 0, 0]] * 96, [1] * 96, MergeConfig(axis_cm=0.3, total_cm=1.0))
    assert len(steps) == 12
    assert {s.dx for s in steps} == {0.3, 0.4}
    assert math.isclose(sum(s.dx for s in steps), 3.8)


def test_below_resolution_is_what_merging_drops_as_no_move():
    """A still step's encoder noise writes nothing at the action language's 0.1 cm; a move the
    steps add up to (3 x 0.04 cm) does; a coarser language drops more."""
    assert below_resolution([[0.0, 0.0, 0.0]])
    assert below_resolution([[0.003, -0.002, 0.001], [0.01, 0.0, -0.02]])
    assert not below_resolution([[0.04, 0.0, 0.0]] * 3)
    assert not below_resolution([0.0, 0.0, -0.06])
    assert below_resolution([[0.3, 0.0, 0.0]], ActionLimits(decimals=0))
    assert not below_resolution([[0.05, 0.0, 0.0]])  # a tie writes 0.1, as merging and the grammar round it
    still = [[0.0, 0.0, -2.0], [0.003, -0.002, 0.001]]
    assert merge_trajectory(still, [1, 1], MergeConfig(axis_cm=1.9)) == [ActionStep(0.0, 0.0, -2.0, 1)]  # noise dropped


def test_no_motion_gives_one_zero_step():
    assert merge_trajectory([[0.001, 0, 0]] * 5, [0] * 5) == [ActionStep(0.0, 0.0, 0.0, 0)]


@pytest.mark.parametrize(
    ("deltas", "gripper", "reason"),
    [
        ([], [], "shape (N, 3)"),
        (np.zeros((0, 3)), [], "empty"),
        ([[1, 2]], [1], "shape (N, 3)"),
        ([[1, 2, 3], [4, 5]], [1, 1], "(N, 3) array"),
        ("abc", [1], "(N, 3) array"),
        (None, [1], "shape (N, 3)"),
        ([[1, 2, 3]], [1, 1], "gripper must have shape (1,)"),
        ([[1, 2, 3]], 1, "gripper must have shape (1,)"),
        ([[math.nan, 0, 0]], [1], "non-finite"),
        ([[0, 0, math.inf]], [1], "non-finite"),
        ([[0, 0, 1e9]], [1], "are the deltas in cm"),
        ([[0, 0, 0]], [2], "expected 0 (closed) or 1 (open)"),
        ([[0, 0, 0]], [math.nan], "expected 0 (closed) or 1 (open)"),
        ([[0, 0, 0]], [None], "gripper"),
    ],
)
def test_bad_trajectories_raise_action_value_error(deltas, gripper, reason):
    for function in (merge_trajectory, merge_segments):
        with pytest.raises(ActionValueError) as caught:
            function(deltas, gripper)
        assert reason in caught.value.reason


@pytest.mark.parametrize(
    "kwargs", [{"axis_cm": 0}, {"total_cm": -1}, {"axis_cm": math.inf}, {"total_cm": "5"}]
)
def test_merge_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="MergeConfig"):
        MergeConfig(**kwargs)


@pytest.mark.parametrize("field", ["axis_cm", "total_cm"])
@pytest.mark.parametrize("value", [0, -2.5, math.inf, math.nan, "2.5", True])
def test_merge_thresholds_must_be_positive_finite_numbers(field, value):
    with pytest.raises(ValueError, match=f"MergeConfig.{field} must be a (finite )?number"):
        MergeConfig(**{field: value})
