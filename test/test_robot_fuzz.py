"""Fuzz: 100,000 random and adversarial chunks through the executor's safety layer.

The recording backend re-checks every command with its own code against the configured
hard limits and fails the test if a single command outside them reaches it.
"""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recording_backend import EPS, RecordingBackend

from vlm2vla_ros.action_language.types import ActionChunk, ActionStep
from vlm2vla_ros.robot.embodiment import AxisMap, EmbodimentConfig
from vlm2vla_ros.robot.executor import ChunkExecutor
from vlm2vla_ros.robot.interface import JointState, RobotStatus
from vlm2vla_ros.robot.safety import PerJoint, SafetyConfig, validate_chunk

N_CHUNKS = 100_000


GARBAGE_VALUES = (
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    1e6,
    10.05,
    -10.000001,
    "1.0",
    None,
    [1.0],
    True,
)
BAD_GRIPPERS = (2, -1, 0.5, math.nan, math.inf, "1", None, 1.0000001, -0.0000001)
EDGE_VALUES = (0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-12, 10.0, -10.0, 9.95)


def _value(rng: random.Random) -> float:
    return round(rng.uniform(-10.0, 10.0), 1)


# Ordinary chunks are random slices of one pool of random steps: building a fresh step per
# draw would cost more than the safety layer under test.
_POOL_RNG = random.Random(99)
POOL = tuple(
    ActionStep(_value(_POOL_RNG), _value(_POOL_RNG), _value(_POOL_RNG), _POOL_RNG.randint(0, 1))
    for _ in range(50_000)
)


def _ordinary(rng: random.Random) -> tuple[ActionStep, ...]:
    n = rng.randint(1, 16)
    i = rng.randrange(len(POOL) - n)
    return POOL[i : i + n]


def _chunk(rng: random.Random) -> tuple[object, bool]:
    """(chunk, is_garbage): garbage must always be rejected, whatever the mode."""
    kind = rng.random()
    if kind < 0.40:  # ordinary
        return ActionChunk(_ordinary(rng)), False
    if kind < 0.55:  # pushing one way at full range: drives joints into limits, box and caps
        v = rng.choice((10.0, -10.0))
        s = ActionStep(v * rng.choice((1, -1, 0)), v * rng.choice((1, -1, 0)), v, rng.randint(0, 1))
        return ActionChunk((s,) * rng.randint(1, 16)), False
    if kind < 0.62:  # negative zero, subnormals, tiny and boundary values
        steps = tuple(
            ActionStep(
                rng.choice(EDGE_VALUES), rng.choice(EDGE_VALUES), rng.choice(EDGE_VALUES), rng.randint(0, 1)
            )
            for _ in range(rng.randint(1, 16))
        )
        return ActionChunk(steps), False
    if kind < 0.75:  # one garbage number (NaN, inf, huge, wrong type) somewhere
        steps = list(_ordinary(rng))
        i, axis = rng.randrange(len(steps)), rng.choice(("dx", "dy", "dz"))
        fields = {"dx": steps[i].dx, "dy": steps[i].dy, "dz": steps[i].dz, "gripper": steps[i].gripper}
        fields[axis] = rng.choice(GARBAGE_VALUES)
        steps[i] = ActionStep(**fields)
        return ActionChunk(tuple(steps)), True
    if kind < 0.83:  # wrong gripper value
        steps = list(_ordinary(rng))
        i = rng.randrange(len(steps))
        steps[i] = ActionStep(steps[i].dx, steps[i].dy, steps[i].dz, rng.choice(BAD_GRIPPERS))
        return ActionChunk(tuple(steps)), True
    if kind < 0.90:  # too many steps, up to thousands
        return ActionChunk(POOL[: rng.choice((17, 18, 100, 1000, 5000))]), True
    if kind < 0.95:  # empty
        return ActionChunk(()), True
    # not a chunk at all, or a chunk of the wrong things
    return rng.choice(
        (
            None,
            "[[1, 2, 3, 1]]",
            [ActionStep(1.0, 1.0, 1.0, 1)],
            ActionChunk(((1.0, 1.0, 1.0, 1),)),
            ActionChunk([ActionStep(1.0, 1.0, 1.0, 1)] * 2),
            42,
        )
    ), True


def _near(rng: random.Random, lo: float, hi: float) -> float:
    """A joint position near one of its limits (sometimes just beyond), or anywhere."""
    r = rng.random()
    if r < 0.35:
        return lo + rng.uniform(-0.01, 0.05)
    if r < 0.70:
        return hi + rng.uniform(-0.05, 0.01)
    return rng.uniform(lo, hi)


def _configs(rng: random.Random) -> tuple[EmbodimentConfig, SafetyConfig]:
    joints = ["lift", "arm", "base"]
    rng.shuffle(joints)
    emb = EmbodimentConfig(
        dx=AxisMap(joints[0], rng.choice((1, -1)), rng.choice((1.0, 0.5, 3.0, 10.0))),
        dy=AxisMap(joints[1], rng.choice((1, -1)), rng.choice((1.0, 2.0))),
        dz=AxisMap(joints[2], rng.choice((1, -1)), 1.0),
        action_scale=rng.choice((1.0, 0.3, 0.05)),
    )
    safety = SafetyConfig(
        mode=rng.choice(("clip", "reject")),
        lift_range_m=rng.choice(((0.0, 1.10), (0.2, 0.9))),
        max_chunk_travel_m=PerJoint(rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0)),
        workspace_m=PerJoint(rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0)),
    )
    return emb, safety


@pytest.mark.slow
def test_fuzz_no_command_outside_limits_reaches_the_backend():
    rng = random.Random(20250905)
    t0 = time.perf_counter()
    total = outcomes_done = outcomes_rejected = moves = 0
    while total < N_CHUNKS:
        emb, safety = _configs(rng)
        start = JointState(
            _near(rng, *safety.lift_range_m), _near(rng, *safety.arm_range_m), rng.uniform(-1, 1), 0.0
        )
        backend = RecordingBackend(safety, emb, start)
        ex = ChunkExecutor(backend, emb, safety)
        for _ in range(rng.randint(1, 30)):
            chunk, garbage = _chunk(rng)
            backend.new_chunk()
            n_calls = len(backend.calls)
            report = ex.execute(chunk)
            total += 1
            assert not backend.violations, backend.violations
            if garbage:
                assert report.status == "rejected", (chunk, report)
                assert len(backend.calls) == n_calls, "a rejected chunk sent commands"
            else:
                assert report.status in ("done", "rejected"), report
                if safety.mode == "clip":
                    assert report.status == "done", report.reason
            if report.status == "rejected":
                assert report.reason
                ex.reset_for_new_task()
                backend.new_task()
                outcomes_rejected += 1
            else:
                outcomes_done += 1
        moves += sum(1 for c in backend.calls if c[0] == "move_by")
    elapsed = time.perf_counter() - t0
    print(f"fuzz: {total} chunks ({outcomes_done} done, {outcomes_rejected} rejected) in {elapsed:.2f} s")
    # Both outcomes must be well represented, or the fuzz is not exercising the layer.
    assert outcomes_done > N_CHUNKS // 5 and outcomes_rejected > N_CHUNKS // 5


def test_fuzz_bad_robot_states_are_always_rejected():
    rng = random.Random(7)
    emb, safety = EmbodimentConfig(), SafetyConfig()
    chunk = ActionChunk((ActionStep(1.0, 1.0, 1.0, 1),))
    for _ in range(2000):
        bad = rng.choice(("nan", "inf", "runstop", "unhomed"))
        vals = [rng.uniform(0.1, 0.4) for _ in range(4)]
        if bad in ("nan", "inf"):
            vals[rng.randrange(4)] = math.nan if bad == "nan" else -math.inf
        backend = RecordingBackend(
            safety, emb, JointState(*vals), homed=bad != "unhomed", runstopped=bad == "runstop"
        )
        backend.new_chunk()
        report = ChunkExecutor(backend, emb, safety).execute(chunk)
        assert report.status == "rejected" and not backend.calls, report


finite_cm = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.one_of(finite_cm, any_float), finite_cm, finite_cm, st.sampled_from((0, 1))),
        min_size=1,
        max_size=16,
    ),
    lift=st.floats(-0.01, 1.11),
    arm=st.floats(-0.01, 0.53),
    mode=st.sampled_from(("clip", "reject")),
)
def test_planned_positions_never_leave_the_planning_range(steps, lift, arm, mode):
    safety = SafetyConfig(mode=mode)
    status = RobotStatus(JointState(lift, arm, 0.0, 0.0), True, False)
    report = validate_chunk(
        ActionChunk(tuple(ActionStep(*s) for s in steps)), status, EmbodimentConfig(), safety
    )
    if any(not math.isfinite(s[0]) or abs(s[0]) > 10.0 for s in steps):
        assert not report.ok
        return
    lo_l, hi_l = 0.02, 1.08
    lo_a, hi_a = 0.02, 0.50
    for c in report.commands:
        t = c.target
        assert min(lo_l, lift) - EPS <= t.lift_m <= max(hi_l, lift) + EPS
        assert min(lo_a, arm) - EPS <= t.arm_m <= max(hi_a, arm) + EPS
    if mode == "clip":
        assert report.ok and len(report.commands) == len(steps)
