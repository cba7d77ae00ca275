"""Action data for the miniature: scripted-expert episodes (English instructions only) -> the
project's dataset builder.

Besides each scene's own demonstration, `augment` more demonstrations of the same scene start
with the gripper somewhere else: anywhere in the workspace, or within a few centimetres of the
first block to pick. A closed-loop policy whose first move lands a little off then has seen how
the expert corrects from there (the verifier says retry and the subtask is asked again).

Episodes carry frames only where the builder uses them (the first step of each subtask and
the final frame), which keeps the export fast; the builder cuts chunks at frames, so every
subtask is one chunk unless it needs more than limits.max_steps merged moves.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlm2vla_ros.data.builder import BuildConfig, BuildReport, build_dataset
from vlm2vla_ros.data.episode import load_episodes
from vlm2vla_ros.data.labeller import AnnotationLabeller
from vlm2vla_ros.data.sim_source import write_expert_episode
from vlm2vla_ros.sim.expert import Episode, ScriptedExpert
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.views import TABLE_VIEW

from .vqa import scene_exists

ACTION_STAGES = ("subtasks", "plan", "chunk")
"""What the adapter learns. Verification is the base model's job (adapter off)."""


@dataclass
class ExportResult:
    written: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def demonstration(kind: str, seed: int, variant: int, image_size: int, view: str = TABLE_VIEW) -> Episode:
    """The expert solving scene (kind, seed); variant > 0 starts the gripper elsewhere."""
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
    return ScriptedExpert().run(world, task, expert_seed, image_size, view)


def export_episodes(
    root: Path,
    kinds: Sequence[str],
    seeds: Sequence[int],
    augment: int = 1,
    image_size: int = 224,
    view: str = TABLE_VIEW,
) -> ExportResult:
    """Write one episode per (kind, seed, variant) under root (English instructions), its frames
    in the camera view the policy will see."""
    result = ExportResult()
    for kind in kinds:
        for seed in seeds:
            if not scene_exists(seed, kind):
                result.failed.append(f"mini-{kind}-{seed:05d} (make_scene cannot lay it out)")
                continue
            for variant in range(augment + 1):
                episode_id = f"mini-{kind}-{seed:05d}-v{variant}"
                episode = demonstration(kind, seed, variant, image_size, view)
                if not episode.success or not episode.steps:
                    result.failed.append(episode_id)
                    continue
                meta = {"task_kind": kind, "seed": seed, "variant": variant, "lang": "en"}
                write_expert_episode(root, episode_id, episode, "en", "sim-expert-miniature", meta, key_frames_only=True)
                result.written.append(episode_id)
    return result


def build_action_dataset(episode_root: Path, out_dir: Path, config: BuildConfig | None = None) -> BuildReport:
    """The project's builder on the exported episodes (annotations: the expert's own subtasks,
    verbalised plans); verify and direction examples are left out (see ACTION_STAGES)."""
    loaded = load_episodes([episode_root])
    if loaded.skipped:
        raise ValueError(f"{len(loaded.skipped)} exported episode(s) were rejected: {loaded.skipped[:3]}")
    config = config or BuildConfig(verify_examples=False, direction_examples=False, val_fraction=0.05)
    return build_dataset(loaded.episodes, out_dir, AnnotationLabeller(), config)
