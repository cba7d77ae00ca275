"""The one episode format every source converts into (see docs/data_and_training.md).

An episode is a folder holding episode.json and its frames (PNG or JPEG), or one line of a
JSONL file whose image paths are relative to that file's folder. Each step records the image
the step was taken from, the end-effector delta it executed (cm, task frame: +x forward,
+y left, +z up), the gripper command after it (1 open, 0 closed) and optionally the subtask
it belongs to and that subtask's motion plan. Loaders validate everything up front, so the
dataset builder can trust an EpisodeRecord, and report each rejected episode with its reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "vlm2vla-episode"
VERSION = 1
EPISODE_FILE = "episode.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class EpisodeError(ValueError):
    """An episode that cannot be used; the message says why in one sentence."""


@dataclass(frozen=True)
class StepRecord:
    image: str | None
    """Frame file, relative to the episode's folder; None when no frame was recorded at this step."""
    delta_cm: tuple[float, float, float]
    gripper: int
    subtask: str | None = None
    subtask_index: int | None = None
    plan: str | None = None


@dataclass
class EpisodeRecord:
    episode_id: str
    instruction: str
    source: str
    steps: list[StepRecord]
    base_dir: Path
    final_image: str | None = None
    success: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def image_path(self, name: str) -> Path:
        return self.base_dir / name

    def deltas_cm(self) -> np.ndarray:
        return np.array([s.delta_cm for s in self.steps], dtype=np.float64).reshape(-1, 3)

    def gripper_states(self) -> list[int]:
        return [s.gripper for s in self.steps]

    @property
    def annotated(self) -> bool:
        """True when every step names its subtask."""
        return all(s.subtask is not None for s in self.steps)

    def subtask_spans(self) -> list[tuple[int, int, str]]:
        """(start, stop, subtask) of each annotated sub-trajectory, in order."""
        if not self.annotated:
            raise EpisodeError(f"episode {self.episode_id} has no subtask annotations")
        spans: list[tuple[int, int, str]] = []
        start = 0
        for i in range(1, len(self.steps) + 1):
            if i == len(self.steps) or self.steps[i].subtask_index != self.steps[start].subtask_index:
                spans.append((start, i, str(self.steps[start].subtask)))
                start = i
        return spans

    def to_dict(self) -> dict[str, Any]:
        steps = []
        for s in self.steps:
            item: dict[str, Any] = {"image": s.image, "delta_cm": list(s.delta_cm), "gripper": s.gripper}
            for key in ("subtask", "subtask_index", "plan"):
                if getattr(s, key) is not None:
                    item[key] = getattr(s, key)
            steps.append(item)
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "episode_id": self.episode_id,
            "instruction": self.instruction,
            "source": self.source,
            "success": self.success,
            "final_image": self.final_image,
            "meta": self.meta,
            "steps": steps,
        }
        return data


def episode_from_dict(data: Any, base_dir: Path, where: str) -> EpisodeRecord:
    """Validate one episode object; raises EpisodeError naming `where` and the cause."""
    if not isinstance(data, dict):
        raise EpisodeError(f"{where}: an episode must be a JSON object, got {type(data).__name__}")
    if data.get("format", FORMAT) != FORMAT or data.get("version", VERSION) != VERSION:
        raise EpisodeError(f"{where}: format {data.get('format')!r} version {data.get('version')!r} is not {FORMAT} v{VERSION}")
    episode_id = data.get("episode_id")
    if not isinstance(episode_id, str) or not episode_id.strip() or "/" in episode_id or episode_id.startswith("."):
        raise EpisodeError(f"{where}: episode_id must be a non-empty name without '/', got {episode_id!r}")
    instruction = data.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise EpisodeError(f"{where}: the episode has no instruction")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise EpisodeError(f"{where}: the episode has no actions (steps is missing or empty)")
    steps = [_step(raw, base_dir, f"{where}: step {i}") for i, raw in enumerate(raw_steps)]
    if steps[0].image is None:
        raise EpisodeError(f"{where}: the first step has no image")
    _check_subtasks(steps, where)
    final_image = data.get("final_image")
    if final_image is not None:
        _check_image(final_image, base_dir, f"{where}: final_image")
    success = data.get("success")
    if success is not None and not isinstance(success, bool):
        raise EpisodeError(f"{where}: success must be true, false or null, got {success!r}")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise EpisodeError(f"{where}: meta must be an object")
    return EpisodeRecord(
        episode_id=episode_id.strip(),
        instruction=" ".join(instruction.split()),
        source=str(data.get("source", "unknown")),
        steps=steps,
        base_dir=base_dir,
        final_image=final_image,
        success=success,
        meta=meta,
    )


def _step(raw: Any, base_dir: Path, where: str) -> StepRecord:
    if not isinstance(raw, dict):
        raise EpisodeError(f"{where} must be an object")
    image = raw.get("image")
    if image is not None:
        _check_image(image, base_dir, where)
    delta = raw.get("delta_cm")
    if (
        not isinstance(delta, list)
        or len(delta) != 3
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in delta)
    ):
        raise EpisodeError(f"{where} has no action: delta_cm must be three finite numbers, got {delta!r}")
    gripper = raw.get("gripper")
    if gripper not in (0, 1) or isinstance(gripper, bool):
        raise EpisodeError(f"{where}: gripper must be 0 (closed) or 1 (open), got {gripper!r}")
    subtask = raw.get("subtask")
    if subtask is not None and (not isinstance(subtask, str) or not subtask.strip()):
        raise EpisodeError(f"{where}: subtask must be a non-empty string")
    index = raw.get("subtask_index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise EpisodeError(f"{where}: subtask_index must be a non-negative integer, got {index!r}")
    if index is not None and subtask is None:
        raise EpisodeError(f"{where}: subtask_index is given without its subtask text")
    plan = raw.get("plan")
    if plan is not None and (not isinstance(plan, str) or not plan.strip()):
        raise EpisodeError(f"{where}: plan must be a non-empty string")
    return StepRecord(
        image=image,
        delta_cm=(float(delta[0]), float(delta[1]), float(delta[2])),
        gripper=int(gripper),
        subtask=" ".join(subtask.split()) if subtask else None,
        subtask_index=index,
        plan=" ".join(plan.split()) if plan else None,
    )


def _check_image(name: Any, base_dir: Path, where: str) -> None:
    """The frame must exist and read as an image: an empty or corrupt file would otherwise be
    copied into the dataset and fail only in training (verify() checks without decoding)."""
    from PIL import Image

    if not isinstance(name, str) or not name.lower().endswith(IMAGE_SUFFIXES):
        raise EpisodeError(f"{where}: image must be a .png or .jpg file name, got {name!r}")
    if not (base_dir / name).is_file():
        raise EpisodeError(f"{where}: image {name} does not exist in {base_dir}")
    try:
        with Image.open(base_dir / name) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError) as exc:
        raise EpisodeError(f"{where}: image {name} cannot be read as an image ({exc})") from None


def _check_subtasks(steps: list[StepRecord], where: str) -> None:
    """All steps annotated or none; indices (given or derived from text changes) never go back."""
    named = [s.subtask is not None for s in steps]
    if any(named) and not all(named):
        raise EpisodeError(f"{where}: some steps name a subtask and others do not")
    if not all(named):
        return
    derived = 0
    for i, step in enumerate(steps):
        if i > 0 and step.subtask != steps[i - 1].subtask:
            derived += 1
        if step.subtask_index is None:
            steps[i] = StepRecord(step.image, step.delta_cm, step.gripper, step.subtask, derived, step.plan)
    indices = [s.subtask_index for s in steps]
    if any(b < a for a, b in zip(indices, indices[1:])):  # type: ignore[operator]
        raise EpisodeError(f"{where}: subtask_index goes backwards; sub-trajectories must be contiguous")


@dataclass
class LoadReport:
    """Episodes that loaded and those that did not, each with its reason."""

    episodes: list[EpisodeRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.episodes)} episode(s) loaded, {len(self.skipped)} skipped"


def load_episode_dir(folder: Path) -> EpisodeRecord:
    file = folder / EPISODE_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EpisodeError(f"{file}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise EpisodeError(f"{file}: is not valid JSON ({exc})") from None
    return episode_from_dict(data, folder, str(file))


def load_jsonl(file: Path, report: LoadReport) -> None:
    """One episode per line; image paths are relative to the file's folder."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        report.skipped.append((str(file), f"cannot be read ({exc.strerror})"))
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            report.skipped.append((where, f"is not valid JSON ({exc})"))
            continue
        try:
            report.episodes.append(episode_from_dict(data, file.parent, where))
        except EpisodeError as exc:
            report.skipped.append((where, str(exc)))


def load_episodes(paths: Iterable[os.PathLike]) -> LoadReport:
    """Episodes from episode folders, folders of episode folders, and JSONL files.

    Duplicate episode ids keep the first and skip the rest, so the split stays clean.
    """
    report = LoadReport()
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.suffix == ".jsonl":
            load_jsonl(path, report)
        elif (path / EPISODE_FILE).is_file():
            _load_one(path, report)
        elif path.is_dir():
            children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            found = False
            strays = []
            for child in children:
                if (child / EPISODE_FILE).is_file():
                    found = True
                    _load_one(child, report)
                elif child.is_file() and child.suffix == ".jsonl":
                    found = True
                    load_jsonl(child, report)
                elif child.is_dir():
                    strays.append(child)
            if not found:
                report.skipped.append((str(path), "holds no episode.json folders and no .jsonl files"))
            else:  # among episodes, a folder without its episode.json is a broken episode: say so
                report.skipped += [(str(child), f"has no {EPISODE_FILE}") for child in strays]
        else:
            report.skipped.append((str(path), "does not exist or is not an episode folder or .jsonl file"))
    seen: dict[str, str] = {}
    unique = []
    for episode in report.episodes:
        if episode.episode_id in seen:
            report.skipped.append((episode.episode_id, f"duplicate episode_id (first seen in {seen[episode.episode_id]})"))
            continue
        seen[episode.episode_id] = str(episode.base_dir)
        unique.append(episode)
    report.episodes = unique
    return report


def _load_one(folder: Path, report: LoadReport) -> None:
    try:
        report.episodes.append(load_episode_dir(folder))
    except EpisodeError as exc:
        report.skipped.append((str(folder), str(exc)))


def write_episode(
    root: Path,
    episode_id: str,
    instruction: str,
    source: str,
    frames: Sequence[np.ndarray | None],
    deltas_cm: Sequence[Sequence[float]],
    gripper: Sequence[int],
    subtasks: Sequence[str] | None = None,
    subtask_indices: Sequence[int] | None = None,
    plans: Sequence[str | None] | None = None,
    final_frame: np.ndarray | None = None,
    success: bool | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write one episode folder atomically (staged, then renamed); returns its path.

    frames[i] is the RGB image step i was taken from (None: not recorded). An existing
    episode folder is never overwritten: the caller skips it (that is how reruns resume).
    """
    from PIL import Image

    target = root / episode_id
    if target.exists():
        raise FileExistsError(f"episode folder {target} exists already")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{episode_id}-", dir=root))
    try:
        steps = []
        for i, frame in enumerate(frames):
            name = None
            if frame is not None:
                name = f"{i:06d}.png"
                Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(staging / name)
            step: dict[str, Any] = {
                "image": name,
                "delta_cm": [round(float(v), 4) for v in deltas_cm[i]],
                "gripper": int(gripper[i]),
            }
            if subtasks is not None:
                step["subtask"] = subtasks[i]
                if subtask_indices is not None:
                    step["subtask_index"] = int(subtask_indices[i])
            if plans is not None and plans[i]:
                step["plan"] = plans[i]
            steps.append(step)
        final_name = None
        if final_frame is not None:
            final_name = "final.png"
            Image.fromarray(np.asarray(final_frame, dtype=np.uint8)).save(staging / final_name)
        data = {
            "format": FORMAT,
            "version": VERSION,
            "episode_id": episode_id,
            "instruction": instruction,
            "source": source,
            "success": success,
            "final_image": final_name,
            "meta": meta or {},
            "steps": steps,
        }
        episode_from_dict(data, staging, episode_id)  # never write what the loader would reject
        (staging / EPISODE_FILE).write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
