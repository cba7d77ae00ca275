"""Episodes from the simulator's scripted expert, written in the episode format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .episode import write_episode

if TYPE_CHECKING:
    from vlm2vla_ros.sim.expert import Episode


@dataclass
class ExportReport:
    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.written)} episode(s) written, {len(self.existing)} already there, "
            f"{len(self.skipped)} skipped"
        )


def write_expert_episode(
    root: Path, episode_id: str, episode: Episode, lang: str, source: str, meta: dict[str, Any], key_frames_only: bool = False
) -> Path:
    """Write a scripted-expert episode in the episode format.

    key_frames_only keeps the images where a subtask starts (all the dataset builder uses
    with verify examples off) and drops the rest, a tenth of the disk."""
    starts = set(episode.subtask_starts()) if key_frames_only else None
    names = episode.task.subtasks(lang)
    return write_episode(
        root,
        episode_id,
        instruction=episode.task.instruction(lang),
        source=source,
        frames=[s.image if starts is None or i in starts else None for i, s in enumerate(episode.steps)],
        deltas_cm=[s.delta_cm for s in episode.steps],
        gripper=[s.gripper for s in episode.steps],
        subtasks=[names[s.subtask_index] for s in episode.steps],
        subtask_indices=[s.subtask_index for s in episode.steps],
        final_frame=episode.final_image,
        success=episode.success,
        meta=meta,
    )


def sim_episode_id(task_kind: str, seed: int, lang: str) -> str:
    return f"sim-{task_kind}-{lang}-{seed:05d}"


def sim_split_group(seed: int) -> str:
    """The split group of a simulated demonstration: its scene. The scene and the expert's
    moves do not depend on the language, and the scene's objects and places are drawn from the
    seed alone, so every task kind at one seed mostly shows the same table; all of them are
    split together, or validation would score scenes the model was trained on."""
    return f"sim-scene-{seed:05d}"


def export_sim_episodes(
    out_root: Path,
    task_kinds: Sequence[str],
    seeds: Sequence[int],
    image_size: int = 224,
    lang: str = "en",
    keep_failures: bool = False,
    progress: bool = False,
) -> ExportReport:
    """Run the scripted expert for every (kind, seed) and write each episode once.

    Episodes already on disk are kept (reruns resume); failed demonstrations are skipped
    unless keep_failures, since a policy should not learn from them.
    """
    from tqdm import tqdm

    from vlm2vla_ros.sim import TASK_KINDS, run_expert

    unknown = sorted(set(task_kinds) - set(TASK_KINDS))
    if unknown:
        raise ValueError(f"unknown task kind(s) {unknown}; known: {list(TASK_KINDS)}")
    report = ExportReport()
    jobs = [(kind, seed) for kind in task_kinds for seed in seeds]
    for kind, seed in tqdm(jobs, desc="sim episodes", disable=not progress):
        episode_id = sim_episode_id(kind, seed, lang)
        if (out_root / episode_id).exists():
            report.existing.append(episode_id)
            continue
        episode = run_expert(kind, seed, image_size=image_size, render_images=True)
        if not episode.steps:
            report.skipped.append((episode_id, "the expert recorded no steps"))
            continue
        if not episode.success and not keep_failures:
            report.skipped.append((episode_id, "the expert's demonstration failed the task's success check"))
            continue
        meta = {"task_kind": kind, "seed": seed, "lang": lang, "split_group": sim_split_group(seed)}
        write_expert_episode(out_root, episode_id, episode, lang, "sim", meta)
        report.written.append(episode_id)
    return report
