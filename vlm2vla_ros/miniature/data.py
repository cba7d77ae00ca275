"""Action data for the miniature: scripted-expert episodes (English instructions only) -> the
project's dataset builder.

Besides each scene's own demonstration, `augment` more demonstrations of the same scene start
with the gripper somewhere else: anywhere in the workspace, or within a few centimetres of the
first block to pick. A closed-loop policy whose first move lands a little off then has seen how
the expert corrects from there (the verifier says retry and the subtask is asked again).

Episodes carry frames only where the builder uses them (the first step of each subtask and
the final frame), which keeps the export fast; the builder cuts chunks at frames, so every
subtask is one chunk unless it needs more than limits.max_steps merged moves. With `merge`
given, the expert runs without a camera and its frames are drawn afterwards at every merged
move's first step (`move_starts`, `with_frames`): the builder can then cut chunks of one move,
each from the image the move was taken from (a closed loop of single moves).

`reach_demonstration` is the expert picking up a block from a gripper start drawn near it,
on a new scene per seed: many more first moves than the task demonstrations give, each from
its own image (finding 18). `grasp_demonstration` starts at the grasp instead, from where an
imperfect "move above" leaves the gripper (off to the side, too high or too low, or closed
beside the block), and the expert's grasp goes to the block's centre from there (finding 22).

`with_near_plan_copies` repeats the plans that start "move above" a block from 1.5-5 cm off,
where the plans' dead band sits (findings 33-34).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vlm2vla_ros.action_language.trajectory import MergeConfig, merge_segments
from vlm2vla_ros.data.builder import BuildConfig, BuildReport, build_dataset
from vlm2vla_ros.data.episode import load_episodes
from vlm2vla_ros.data.labeller import AnnotationLabeller
from vlm2vla_ros.data.sim_source import write_expert_episode
from vlm2vla_ros.sim.expert import Episode, ExpertConfig, ScriptedExpert
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.tasks import GRASP, Task
from vlm2vla_ros.sim.views import TABLE_VIEW
from vlm2vla_ros.sim.world import SimWorld
from vlm2vla_ros.training.place_head import plan_total_cm

from .vqa import put_gripper_by, replay, scene_exists

ACTION_STAGES = ("subtasks", "plan", "chunk")
"""What the adapter learns. Verification is the base model's job (adapter off)."""
MIDDLE_GRASP = ExpertConfig()
"""The expert the demonstrations use unless told otherwise: it grasps a block at its middle."""


@dataclass
class ExportResult:
    written: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def demonstration(
    kind: str, seed: int, variant: int, image_size: int, view: str = TABLE_VIEW, merge: MergeConfig | None = None,
    expert: ExpertConfig = MIDDLE_GRASP,
) -> Episode:
    """The expert solving scene (kind, seed); variant > 0 starts the gripper elsewhere. With
    `merge`, frames only at every merged move's first step (see the module's docstring)."""
    world, task = make_scene(seed, kind)
    expert_seed = seed
    if variant > 0:
        rng = random.Random(f"vlm2vla-mini-start:{kind}:{seed}:{variant}")
        ws = world.workspace
        first = world.object(task.targets[0])
        if rng.random() < 0.5:
            angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.01, 0.06)
            target = (first.x + dist * math.cos(angle), first.y + dist * math.sin(angle), rng.uniform(0.08, 0.2))
        else:
            target = (rng.uniform(ws.x_min, ws.x_max), rng.uniform(ws.y_min, ws.y_max), rng.uniform(0.06, 0.25))
        world.move_gripper(target[0] - world.gripper_x, target[1] - world.gripper_y, target[2] - world.gripper_z)
        expert_seed = seed + 1_000_003 * variant
    return _solve(world, task, expert_seed, image_size, view, merge, expert)


REACH_RADIUS_M = 0.20
"""A reach demonstration's gripper starts up to this far from the block sideways (a scene's own
start is 17 cm from it on average in the held-out pick-ups)."""
REACH_HEIGHT_M = (0.03, 0.13)
"""... and this far above the block's top."""


def _pick_up_scene(seed: int, stream: str) -> tuple[SimWorld, Task, random.Random] | None:
    """Pick-up scene `seed`, cut down to the named block half the time, and the seed's random
    stream for `stream` that decided it; None when make_scene cannot lay the scene out."""
    from vlm2vla_ros.training.evaluate import named_only

    try:
        world, task = make_scene(seed, "pick_up")
    except RuntimeError:  # one of the few seeds it cannot lay out
        return None
    rng = random.Random(f"vlm2vla-mini-{stream}:{seed}")
    if rng.random() < 0.5:
        world = named_only(world, task)
    return world, task, rng


def reach_start(seed: int) -> tuple[SimWorld, Task] | None:
    """Pick-up scene `seed` as a reach demonstration starts: half the scenes cut down to the named
    block, half the gripper starts moved to a random point near it (REACH_RADIUS_M sideways,
    REACH_HEIGHT_M above its top). None when make_scene cannot lay the scene out."""
    laid_out = _pick_up_scene(seed, "reach")
    if laid_out is None:
        return None
    world, task, rng = laid_out
    if rng.random() < 0.5:
        block = world.object(task.pick)
        radius, angle = rng.uniform(0.0, REACH_RADIUS_M), rng.uniform(0.0, 2 * math.pi)
        put_gripper_by(world, block, radius, angle, rng.uniform(*REACH_HEIGHT_M))
    return world, task


def reach_demonstration(seed: int, image_size: int, view: str, merge: MergeConfig,
                        expert: ExpertConfig = MIDDLE_GRASP) -> Episode | None:
    """The expert picking up the named block from reach_start(seed), with frames at every merged
    move's first step; None when the scene cannot be laid out."""
    start = reach_start(seed)
    return None if start is None else _solve(*start, seed, image_size, view, merge, expert)


GRASP_START_OFF_M = 0.04
"""A grasp demonstration's gripper starts up to this far from the block sideways: the model's
own "move above" chunks end 1-3 cm off when the verifier passes them (runs N and O)."""
GRASP_START_HEIGHT_M = (-0.02, 0.10)
"""... its fingertips this far above the block's top (below it: lowered beside it) ..."""
GRASP_START_CLOSED = 0.5
"""... and closed this share of the time, as a grasp that missed leaves it."""


def grasp_start(seed: int) -> tuple[SimWorld, Task] | None:
    """Pick-up scene `seed` as a grasp demonstration starts: half the scenes cut down to the named
    block; the gripper where a "move above" that fell short leaves it (GRASP_START_*), not holding
    the block. None when make_scene cannot lay the scene out."""
    laid_out = _pick_up_scene(seed, "grasp")
    if laid_out is None:
        return None
    world, task, rng = laid_out
    block = world.object(task.pick)
    put_gripper_by(world, block, rng.uniform(0.0, GRASP_START_OFF_M), rng.uniform(0.0, 2 * math.pi),
                   rng.uniform(*GRASP_START_HEIGHT_M))
    if rng.random() < GRASP_START_CLOSED:
        if world.set_gripper(False) is not None:
            world.set_gripper(True)  # the close held the block: a grasp already done teaches nothing
        else:
            # Closed beside the block below its top, the fingers would be inside it; the world
            # lifts a closed gripper onto what is beneath it at its next move, which the
            # demonstration would record as a "move above" that rises (finding 40). Settle it now.
            world.move_gripper(0.0, 0.0, 0.0)
    return world, task


def grasp_demonstration(seed: int, image_size: int, view: str, merge: MergeConfig,
                        expert: ExpertConfig = MIDDLE_GRASP) -> Episode | None:
    """The expert finishing the pick-up from grasp_start(seed): the subtasks before the grasp
    count as done (a still step each), and the grasp goes to the block's centre
    (ExpertConfig.grasp_recentres); frames at every merged move's first step. None when the
    scene cannot be laid out."""
    start = grasp_start(seed)
    if start is None:
        return None
    world, task = start
    first = next(i for i, sub in enumerate(task.plan) if sub.action == GRASP)
    return _solve(world, task, seed, image_size, view, merge, replace(expert, grasp_recentres=True), first)


def _solve(world: SimWorld, task: Task, seed: int, image_size: int, view: str, merge: MergeConfig | None,
           expert: ExpertConfig, first_subtask: int = 0) -> Episode:
    solver = ScriptedExpert(expert)
    if merge is None:
        return solver.run(world, task, seed, image_size, view, first_subtask)
    start = world.copy()
    episode = solver.run(world, task, seed, None, view, first_subtask)
    return with_frames(start, episode, move_starts(episode, merge), image_size, view)


def move_starts(episode: Episode, merge: MergeConfig) -> list[int]:
    """The first step of every merged move, counted per subtask as the dataset builder counts
    them: where it can cut a chunk of one move."""
    bounds = [*episode.subtask_starts(), len(episode.steps)]
    deltas, grippers = episode.deltas_cm(), episode.gripper_states()
    return [a + segment.start for a, b in zip(bounds, bounds[1:])
            for segment in merge_segments(deltas[a:b], grippers[a:b], merge, int(grippers[a - 1]) if a > 0 else None)]


def with_frames(start: SimWorld, episode: Episode, steps: Sequence[int], image_size: int, view: str) -> Episode:
    """The episode with the images of `steps` and the final one, drawn by replaying its moves
    from a copy of `start` (the world it began in); the simulator is deterministic, so these are
    the images the expert would have seen."""
    from vlm2vla_ros.sim.render import render

    world, wanted = start.copy(), set(steps)
    for index, step in enumerate(episode.steps):
        step.image = render(world, image_size, image_size, view) if index in wanted else None
        replay(world, episode, index, index + 1)
    episode.final_image = render(world, image_size, image_size, view)
    return episode


def export_episodes(
    root: Path,
    kinds: Sequence[str],
    seeds: Sequence[int],
    augment: int = 1,
    image_size: int = 224,
    view: str = TABLE_VIEW,
    merge: MergeConfig | None = None,
    expert: ExpertConfig = MIDDLE_GRASP,
) -> ExportResult:
    """Write one episode per (kind, seed, variant) under root (English instructions), its frames
    in the camera view the policy will see (with `merge`, at every merged move's first step)."""
    result = ExportResult()
    for kind in kinds:
        for seed in seeds:
            if not scene_exists(seed, kind):
                result.failed.append(f"mini-{kind}-{seed:05d} (make_scene cannot lay it out)")
                continue
            for variant in range(augment + 1):
                episode_id = f"mini-{kind}-{seed:05d}-v{variant}"
                episode = demonstration(kind, seed, variant, image_size, view, merge, expert)
                meta = {"task_kind": kind, "seed": seed, "variant": variant, "lang": "en"}
                _write(root, episode_id, episode, meta, result, key_frames_only=merge is None)
    return result


def export_reach_demonstrations(
    root: Path, seeds: Sequence[int], image_size: int, view: str, merge: MergeConfig, grasp: bool = False,
    expert: ExpertConfig = MIDDLE_GRASP,
) -> ExportResult:
    """Write reach_demonstration(seed) (grasp: grasp_demonstration(seed)) for each seed
    make_scene can lay out under root (no seeds: nothing)."""
    result = ExportResult()
    demonstrate, name = (grasp_demonstration, "grasp") if grasp else (reach_demonstration, "reach")
    for seed in seeds:
        episode = demonstrate(seed, image_size, view, merge, expert)
        if episode is not None:
            _write(root, f"mini-{name}-{seed:07d}", episode, {"task_kind": "pick_up", "seed": seed, name: True, "lang": "en"},
                   result, key_frames_only=False)
    return result


def _write(root: Path, episode_id: str, episode: Episode, meta: dict, result: ExportResult, key_frames_only: bool) -> None:
    if not episode.success or not episode.steps:
        result.failed.append(episode_id)
        return
    write_expert_episode(root, episode_id, episode, "en", "sim-expert-miniature", meta, key_frames_only=key_frames_only)
    result.written.append(episode_id)


def build_action_dataset(episode_root: Path, out_dir: Path, config: BuildConfig | None = None) -> BuildReport:
    """The project's builder on the exported episodes (annotations: the expert's own subtasks,
    verbalised plans); verify and direction examples are left out (see ACTION_STAGES)."""
    loaded = load_episodes([episode_root])
    if loaded.skipped:
        raise ValueError(f"{len(loaded.skipped)} exported episode(s) were rejected: {loaded.skipped[:3]}")
    config = config or BuildConfig(verify_examples=False, direction_examples=False, val_fraction=0.05)
    return build_dataset(loaded.episodes, out_dir, AnnotationLabeller(), config)


NEAR_PLAN_CM = (1.5, 5.0)
"""Sideways totals, stated by a "move above" plan for a block, at which the plans' dead band
sits: 1.5 cm is a grasp's tolerance, and from 5 cm the plans read the move (finding 33)."""


def near_block_plan(example: dict) -> bool:
    """Whether a dataset example is a "move above" plan for a block whose stated total
    ("[dx, dy, dz] cm to go.", BuildConfig.plan_totals) is NEAR_PLAN_CM sideways."""
    subtask = example.get("meta", {}).get("subtask", "")  # English: the action data's only language
    total = plan_total_cm(example)
    if not (subtask.startswith("move above the ") and subtask.endswith(" block") and total is not None):
        return False
    low, high = NEAR_PLAN_CM
    return low <= math.hypot(total[0], total[1]) < high


def with_near_plan_copies(lines: Sequence[str], copies: int) -> list[str]:
    """Dataset lines with every near_block_plan followed by copies - 1 copies of it (ids
    suffixed /near1, /near2, ...), so the LoRA stage sees each that many times."""
    if copies <= 1:
        return list(lines)
    out = []
    for line in lines:
        out.append(line)
        example = json.loads(line)
        if near_block_plan(example):
            out += [json.dumps({**example, "id": f"{example['id']}/near{k}"}) + "\n" for k in range(1, copies)]
    return out
