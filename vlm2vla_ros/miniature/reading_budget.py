"""How well must a policy read the named object's place? The scripted expert, misreading it.

The miniature's chunks fail mostly because the model writes where the block is a few
centimetres off (docs/miniature.md, findings 28-32). This module puts a number on how precise
that reading must be for the closed loop to pick blocks up: `MisreadingExpert` is a policy
engine that writes, each cycle, the chunk the experiment's training data would hold for the
scene as it stands (the scripted expert's solution of the current subtask, merged as the
dataset builder merges it, cut to the chunk's moves), except that the object the subtask names
is shifted by a reading error. Everything else is perfect: the subtask list, the motion, and
the verdicts (the simulator judges, as in the experiment's `judged_kinds` section).

The error is Gaussian on each horizontal axis, sigma_cm per axis, with a share `persistent` of
its variance drawn once per episode (a bias the policy keeps) and the rest drawn afresh each
cycle (a reading that varies from image to image). A dead band adds what the miniature's greedy
plans do near the block (finding 32): within dead_band_cm of the object a "move above" aims at,
the reading says it is already there.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlm2vla_ros.action_language import ActionChunk, ActionLimits, MergeConfig
from vlm2vla_ros.checks import real
from vlm2vla_ros.sim.expert import ScriptedExpert
from vlm2vla_ros.sim.tasks import MOVE_ABOVE
from vlm2vla_ros.sim.world import SimWorld
from vlm2vla_ros.training.evaluate import closed_loop_episode, evaluation_scene, subtask_moves

from .vqa import simulator_verdict


@dataclass(frozen=True)
class ReadingError:
    """A reading error: sigma_cm on each horizontal axis, `persistent` of its variance fixed
    for the episode and the rest drawn again every cycle; within dead_band_cm of where a "move
    above" should end, no move at all."""

    sigma_cm: float
    persistent: float = 0.0
    dead_band_cm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sigma_cm", "dead_band_cm"):
            real(getattr(self, name), f"ReadingError.{name}", lo=0.0)
        real(self.persistent, "ReadingError.persistent", 0.0, 1.0)

    @property
    def persistent_sigma_cm(self) -> float:
        return self.sigma_cm * math.sqrt(self.persistent)

    @property
    def fresh_sigma_cm(self) -> float:
        return self.sigma_cm * math.sqrt(1.0 - self.persistent)


class MisreadingExpert:
    """closed_loop_episode's engine and judge for one scene: the expert's next chunk with the
    named object misread, and the simulator's verdict. The judge is how it sees the world: the
    episode hands the judge the world after every cycle, and the first cycle starts from the
    seeded scene the episode also starts from."""

    def __init__(self, world: SimWorld, task: Any, seed: int, error: ReadingError, merge: MergeConfig,
                 limits: ActionLimits) -> None:
        self.world, self.task, self.seed, self.error = world.copy(), task, seed, error
        self.merge, self.limits = merge, limits
        self.rng = random.Random(f"vlm2vla-reading-budget:{seed}:{error.sigma_cm}:{error.persistent}")
        self.bias = (self.rng.gauss(0.0, error.persistent_sigma_cm), self.rng.gauss(0.0, error.persistent_sigma_cm))
        self.cycles = 0
        self.errors_cm: list[float] = []  # each cycle's Gaussian draw (the dead band aside)

    def judge(self, world: SimWorld, task: Any, subtask: str) -> bool:
        self.world = world
        return simulator_verdict(world, task, subtask)

    def subtasks(self, image: Any, task: str) -> Any:
        from vlm2vla_ros.policy.types import SubtaskResult

        names = self.task.subtasks("en")
        return SubtaskResult(list(names), "; ".join(names), {}, {})

    def cycle(self, image: Any, task: str, subtask: str) -> Any:
        from vlm2vla_ros.policy.types import CycleResult

        self.cycles += 1
        index = self.task.subtasks("en").index(subtask)
        ex = self.bias[0] + self.rng.gauss(0.0, self.error.fresh_sigma_cm)
        ey = self.bias[1] + self.rng.gauss(0.0, self.error.fresh_sigma_cm)
        self.errors_cm.append(math.hypot(ex, ey))
        misread, sub = self.world.copy(), self.task.plan[index]
        if sub.obj is not None:  # "lift the gripper" reads no object's place
            named = misread.object(sub.obj)
            if sub.action == MOVE_ABOVE:
                # The point the expert brings over the object: the held block's centre, else the gripper.
                (gx, gy, _), (ox, oy, _) = misread.gripper, misread.held_offset
                left = ((gx + ox - named.x) * 100.0, (gy + oy - named.y) * 100.0)
                if math.hypot(*left) < self.error.dead_band_cm:
                    ex, ey = left
            named.x += ex / 100.0
            named.y += ey / 100.0
        held = int(misread.gripper_open)
        episode = ScriptedExpert().run(misread, self.task, self.seed * 1000 + self.cycles, first_subtask=index)
        moves = subtask_moves(episode, index, self.merge, held, self.limits)
        chunk = ActionChunk(tuple(moves[: self.limits.max_steps]))
        return CycleResult(f"misread by {ex:.1f}, {ey:.1f} cm", chunk, "", "", {}, {})

    def verify(self, before: Any, after: Any, subtask: str, next_subtask: str, retries: int = 0) -> Any:
        raise RuntimeError("MisreadingExpert is judged by the simulator: pass its judge to closed_loop_episode")


NEAR_BAND_CM = (1.5, 5.0)
"""Where the dead band is measured: the named block this far from the gripper, horizontally."""
STILL_CM = 0.5
"""... and a stated total shorter than this, horizontally, says "already there"."""


@dataclass(frozen=True)
class StatedTotal:
    """One plan's stated total ("[dx, dy, dz] cm to go") against where the named block was."""

    cycle: int
    block_x_cm: float  # the block from the gripper, horizontally
    block_y_cm: float
    stated_x_cm: float
    stated_y_cm: float

    @property
    def error(self) -> tuple[float, float]:
        """Where the total would leave the gripper from the block."""
        return self.stated_x_cm - self.block_x_cm, self.stated_y_cm - self.block_y_cm


@dataclass(frozen=True)
class ReadingEstimate:
    """A policy's reading error, measured on its plans' stated totals (plan_totals): the
    budget's coordinates."""

    plans: int
    median_error_cm: float
    persistent: float  # E[e_k . e_k+1] / E[|e|^2] over consecutive cycles: 1 a fixed bias, 0 fresh
    pairs: int
    near_plans: int  # plans stated with the block NEAR_BAND_CM away
    near_still: int  # ... of which say it is already there (under STILL_CM): the dead band


def estimate_reading(totals: Sequence[Sequence[StatedTotal]]) -> ReadingEstimate | None:
    """The median horizontal error, the persistent share and the dead band of per-episode
    stated totals (experiment.stated_totals). Uncentred, so an error every plan shares
    counts as persistent, as the budget's bias does. None without a pair of consecutive cycles."""
    errors = [t.error for episode in totals for t in episode]
    pairs = [(a.error, b.error) for episode in totals for a, b in zip(episode, episode[1:]) if b.cycle == a.cycle + 1]
    if not pairs:
        return None
    power = statistics.fmean(x * x + y * y for x, y in errors)
    shared = statistics.fmean(ax * bx + ay * by for (ax, ay), (bx, by) in pairs)
    persistent = min(max(shared / power, 0.0), 1.0) if power > 0 else 0.0  # no error: nothing persists
    near = [t for episode in totals for t in episode
            if NEAR_BAND_CM[0] <= math.hypot(t.block_x_cm, t.block_y_cm) <= NEAR_BAND_CM[1]]
    still = sum(math.hypot(t.stated_x_cm, t.stated_y_cm) < STILL_CM for t in near)
    return ReadingEstimate(len(errors), statistics.median(math.hypot(x, y) for x, y in errors), persistent, len(pairs),
                           len(near), still)


@dataclass(frozen=True)
class BudgetPoint:
    """Closed-loop success at one reading error over a set of scenes."""

    error: ReadingError
    episodes: int
    successes: int
    median_error_cm: float  # of the Gaussian errors the cycles drew (the dead band aside)


def budget_point(error: ReadingError, kind: str, config: Any, alone: bool = False) -> BudgetPoint:
    """Success of MisreadingExpert with `error` over the held-out scenes of `kind` as the
    experiment `config` (an ExperimentConfig) evaluates them: its seeds, camera, cycle limit,
    return to a move after a missed grasp, and action data's merge rule and chunk size."""
    from .experiment import eval_seeds, max_cycles

    build, seeds = config.action_build(), eval_seeds(config, kind)
    successes, errors = 0, []
    for seed in seeds:
        world, task = evaluation_scene(kind, seed, alone)
        engine = MisreadingExpert(world, task, seed, error, build.merge, build.limits)
        record = closed_loop_episode(engine, kind, seed, max_cycles(config, kind, seed), image_size=32, alone=alone,
                                     view=config.view, judge=engine.judge, move_again_after=config.move_again_after)
        successes += int(record["success"])
        errors += engine.errors_cm
    return BudgetPoint(error, len(seeds), successes, statistics.median(errors) if errors else 0.0)


def budget_table(points: Sequence[BudgetPoint], sigmas: Sequence[float], persistents: Sequence[float]) -> list[str]:
    """Markdown: success per sigma (rows) and persistent share (columns), with the median
    horizontal error each sigma draws."""
    found = {(p.error.sigma_cm, p.error.persistent): p for p in points}
    header = "| sigma a side (cm) | median error (cm) | " + " | ".join(f"{q:g} persistent" for q in persistents) + " |"
    lines = [header, "|" + "---|" * (len(persistents) + 2)]
    for sigma in sigmas:
        row = [found[(sigma, q)] for q in persistents]
        median = statistics.median(p.median_error_cm for p in row)
        lines.append(f"| {sigma:g} | {median:.1f} | " + " | ".join(f"{p.successes} / {p.episodes}" for p in row) + " |")
    return lines
