"""Episodes -> chat-formatted training examples for every stage (vlm2vla-dataset's core).

Per episode: a subtask-list example from the first frame; per sub-trajectory its actions
merged with the action language's rule and cut into chunks of at most limits.max_steps moves,
each giving a plan example and a chunk example (the chunk continues the plan conversation);
subtask-completion examples (before/after frames, positive and negative) and
movement-direction questions. Messages come from policy/prompts.py, the same functions the
policy engine asks with.

Output folder (resumable: an episode whose examples file exists is not labelled again):
    images/<episode_id>/...   frames the examples use (copied, so the folder is portable)
    episodes/<episode_id>.jsonl  that episode's examples, written atomically
    train.jsonl, val.jsonl    all examples, split by a hash of the episode's split group
    build.json                settings, counts, skipped episodes with reasons
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm2vla_ros.action_language import (
    ActionChunk,
    ActionLimits,
    ActionStep,
    ActionValueError,
    MergeConfig,
    below_resolution,
    merge_segments,
    merge_trajectory,
    plan_with_total,
    verbalise_moves,
)
from vlm2vla_ros.files import copy_whole, replaced_whole, write_whole
from vlm2vla_ros.policy import prompts
from vlm2vla_ros.policy.prompts import PromptTemplates

from .episode import EpisodeRecord
from .labeller import AnnotationLabeller, LabelError, Labeller, VerbaliserLabeller
from .sim_source import sim_episode_id, sim_split_group

REHEARSAL_STAGE = "rehearsal"
"""A base model's own pretraining examples mixed into the fine-tuning data (the builder writes
none; the miniature experiment adds them, docs/miniature.md finding 19)."""
STAGES = ("subtasks", "plan", "chunk", "verify", "direction", REHEARSAL_STAGE)
BUILD_FILE = "build.json"
OUTPUT_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""Errors of the output side (a full disk, a quota, a read-only mount): they end the build, where an
unreadable frame costs its episode alone."""


@dataclass(frozen=True)
class BuildConfig:
    merge: MergeConfig = MergeConfig()
    limits: ActionLimits = ActionLimits()
    val_fraction: float = 0.1
    split_salt: str = "vlm2vla"
    include_failed: bool = False
    """Use episodes whose success is false (rollouts that failed); unknown success is always used."""
    verify_examples: bool = True
    direction_examples: bool = True
    direction_min_cm: float = 1.0
    """A chunk moving at least this far sideways asks left/right."""
    direction_still_cm: float = 0.3
    """A chunk moving less than this sideways (and at least direction_min_cm overall) asks none."""
    prompts: PromptTemplates = prompts.DEFAULT_PROMPTS
    plan_totals: bool = False
    """Every plan starts with the whole move left in its subtask from the chunk's frame,
    "[dx, dy, dz] cm to go." (plan_with_total), summed from the recorded moves, so it needs no
    world state (docs/miniature.md, finding 28)."""

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.direction_still_cm < self.direction_min_cm:
            raise ValueError("direction_still_cm must be >= 0 and below direction_min_cm")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resume must share: all but the split, which is recomputed on every run.
        include_failed stays in: episode files built with it would stay in the splits without it."""
        data = dataclasses.asdict(self)
        data.pop("val_fraction")
        data.pop("split_salt")
        return data


@dataclass
class BuildReport:
    out_dir: Path
    episodes_built: list[str] = field(default_factory=list)
    episodes_resumed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    labeller: dict[str, Any] = field(default_factory=dict)

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def summary(self) -> str:
        totals = {split: sum(stages.values()) for split, stages in self.counts.items()}
        return (
            f"{len(self.episodes_built)} episode(s) built, {len(self.episodes_resumed)} resumed, "
            f"{len(self.skipped)} skipped; examples: "
            + ", ".join(f"{split} {n}" for split, n in sorted(totals.items()))
        )


def split_group(episode: EpisodeRecord) -> str:
    """What the split is drawn for: episodes of one demonstration (the same scene in another
    language, the tasks of one bag) share meta["split_group"] and so a split, or validation
    would score examples whose twins were trained on. A `dataset sim` episode exported before
    the group was written gets it from its id; any other episode is its own group."""
    group = episode.meta.get("split_group")
    if isinstance(group, str) and group:
        return group
    kind, seed, lang = (episode.meta.get(k) for k in ("task_kind", "seed", "lang"))
    named = isinstance(kind, str) and isinstance(seed, int) and not isinstance(seed, bool) and isinstance(lang, str)
    if named and episode.episode_id == sim_episode_id(kind, seed, lang):
        return sim_split_group(seed)
    return episode.episode_id


def split_of(group: str, val_fraction: float, salt: str) -> str:
    """"val" or "train", fixed by a hash of the split group (stable across reruns and machines)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


@dataclass(frozen=True)
class ChunkWindow:
    start: int
    stop: int
    steps: tuple[ActionStep, ...]
    initial_gripper: int | None


def chunk_windows(
    episode: EpisodeRecord, start: int, stop: int, config: BuildConfig
) -> tuple[list[ChunkWindow], int]:
    """Merged chunks covering steps [start, stop), each at most limits.max_steps moves.

    Chunks are cut only where a merged move begins at a step with a frame (the chunk's
    observation), and never before a move that neither moves nor changes the gripper: such a
    move is the still step where the gripper acts, and its change already rides on the move
    before it (merge_segments), so a cut there would split "move down, then close" into a move
    with the gripper open and a chunk that only closes it (docs/miniature.md, finding 29).
    "Neither moves" is below_resolution's, so a recorded still step's noise does not cut either.
    Returns the windows and how many moves were dropped because no frame allowed a cut in time.
    """
    deltas = episode.deltas_cm()[start:stop]
    grip = episode.gripper_states()[start:stop]
    segments = merge_segments(deltas, grip, config.merge, _gripper_before(episode, start), config.limits)
    cuts = [0]
    count = 0
    for previous, segment in zip([None, *segments], segments):
        if previous is not None and segment.gripper == previous.gripper and below_resolution(
                deltas[segment.start:segment.stop], config.limits):
            continue  # adds no step to the chunk it ends up in
        if count >= config.limits.max_steps and segment.start > cuts[-1] and episode.steps[start + segment.start].image:
            cuts.append(segment.start)
            count = 0
        count += 1
    cuts.append(len(deltas))
    windows: list[ChunkWindow] = []
    dropped = 0
    for a, b in zip(cuts, cuts[1:]):
        before = _gripper_before(episode, start + a)
        merged = merge_trajectory(deltas[a:b], grip[a:b], config.merge, config.limits, before)
        if len(merged) > config.limits.max_steps:
            dropped += len(merged) - config.limits.max_steps
            merged = merged[: config.limits.max_steps]
        windows.append(ChunkWindow(start + a, start + b, tuple(merged), before))
    return windows, dropped


def remaining_cm(episode: EpisodeRecord, start: int, stop: int) -> tuple[float, float, float]:
    """The summed move of steps [start, stop): what is left of a subtask from step start."""
    dx, dy, dz = episode.deltas_cm()[start:stop].sum(axis=0)
    return float(dx), float(dy), float(dz)


def _gripper_before(episode: EpisodeRecord, step: int) -> int | None:
    """The gripper command in force before `step` (None before the first)."""
    return episode.steps[step - 1].gripper if step > 0 else None


def _inside(name: str) -> str:
    """A frame's name inside its episode's images folder. A JSONL dataset may name frames by
    absolute paths or with '..': copied as named, two datasets' "../img/000.png" would land on
    one file (and each train on the other's frame), and an absolute one would not be copied at
    all. Those get a flat name with a digest of the whole path."""
    if not Path(name).is_absolute() and ".." not in Path(name).parts:
        return name
    return f"{hashlib.sha256(name.encode('utf-8')).hexdigest()[:12]}-{Path(name).name}"


class EpisodeExamples:
    """Collects one episode's examples; image paths are relative to the dataset folder."""

    def __init__(self, episode: EpisodeRecord, out_dir: Path) -> None:
        self.episode = episode
        self.out_dir = out_dir
        self.examples: list[dict[str, Any]] = []
        self._copied: dict[str, str] = {}

    def image(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name not in self._copied:
            rel = Path("images") / self.episode.episode_id / _inside(name)
            target = self.out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():  # copied whole or not at all: a build cut short mid-copy is resumed
                copy_whole(self.episode.image_path(name), target)
            self._copied[name] = rel.as_posix()
        return self._copied[name]

    def add(self, stage: str, messages: list[dict[str, Any]], answer: str, images: Sequence[str], **meta: Any) -> None:
        if prompts.count_images(messages) != len(images):
            raise AssertionError(f"{stage} example has {len(images)} image(s) for {prompts.count_images(messages)} slot(s)")
        self.examples.append(
            {
                "id": f"{self.episode.episode_id}/{stage}/{len([e for e in self.examples if e['stage'] == stage])}",
                "stage": stage,
                "episode_id": self.episode.episode_id,
                "split_group": split_group(self.episode),
                "messages": prompts.with_answer(messages, answer),
                "images": list(images),
                "meta": meta,
            }
        )


def episode_examples(
    episode: EpisodeRecord, labeller: Labeller, out_dir: Path, config: BuildConfig, report: BuildReport
) -> list[dict[str, Any]]:
    """Every example of one episode; raises LabelError or ActionValueError when it has none."""
    labels = labeller.label(episode)
    templates = config.prompts
    task = episode.instruction
    ex = EpisodeExamples(episode, out_dir)
    subtasks = [label.subtask for label in labels.subtasks]
    first = ex.image(episode.steps[0].image)
    assert first is not None  # the loader guarantees a first frame
    ex.add("subtasks", prompts.subtasks_messages(task, templates), prompts.subtasks_answer(subtasks), [first], subtasks=subtasks, labels=labels.origin)
    for k, label in enumerate(labels.subtasks):
        windows, dropped = chunk_windows(episode, label.start, label.stop, config)
        report.note("moves_dropped_no_frame", dropped)
        for w_index, window in enumerate(windows):
            image = ex.image(episode.steps[window.start].image)
            if image is None:
                report.note("chunks_without_frame")
                continue
            if all(s.dx == s.dy == s.dz == 0 for s in window.steps) and all(
                s.gripper == (window.initial_gripper if window.initial_gripper is not None else window.steps[0].gripper)
                for s in window.steps
            ):
                report.note("chunks_without_motion")
                continue
            chunk = ActionChunk(window.steps)
            if label.plan and len(windows) == 1:
                plan = label.plan
            else:
                plan = verbalise_moves(chunk, window.initial_gripper)
                if label.plan:
                    report.note("plans_verbalised_for_split_subtask")
            if config.plan_totals:
                plan = plan_with_total(plan, remaining_cm(episode, window.start, label.stop))
            values = [[s.dx, s.dy, s.dz, s.gripper] for s in chunk.steps]
            meta = dict(task=task, subtask=label.subtask, subtask_index=k, window=w_index, plan=plan, chunk=values)
            ex.add("plan", prompts.plan_messages(task, label.subtask, templates), plan, [image], **meta)
            answer = prompts.chunk_answer(chunk, config.limits)
            ex.add("chunk", prompts.chunk_messages(task, label.subtask, plan, templates), answer, [image], **meta)
            if config.direction_examples:
                _direction_example(ex, episode, window, config)
        if config.verify_examples:
            next_subtask = subtasks[k + 1] if k + 1 < len(subtasks) else ""
            _verify_examples(ex, episode, label.start, label.stop, label.subtask, next_subtask, config)
    return ex.examples


def _frame_after(episode: EpisodeRecord, stop: int) -> str | None:
    if stop < len(episode.steps):
        return episode.steps[stop].image
    return episode.final_image


def _verify_examples(
    ex: EpisodeExamples, episode: EpisodeRecord, start: int, stop: int, subtask: str, next_subtask: str, config: BuildConfig
) -> None:
    """Positive: from the sub-trajectory's first frame to the next one's. Negative: to a frame
    a third of the way through, when the subtask is clearly not done yet."""
    before = ex.image(episode.steps[start].image)
    after = ex.image(_frame_after(episode, stop))
    messages = prompts.verify_messages(subtask, next_subtask, config.prompts)
    if before is not None and after is not None:
        ex.add("verify", messages, prompts.verify_answer(True), [before, after], subtask=subtask, advance=True)
    middle = start + (stop - start) // 3
    partial = ex.image(episode.steps[middle].image) if middle > start else None
    if before is not None and partial is not None:
        ex.add("verify", messages, prompts.verify_answer(False), [before, partial], subtask=subtask, advance=False)


def _direction_example(ex: EpisodeExamples, episode: EpisodeRecord, window: ChunkWindow, config: BuildConfig) -> None:
    """Left/right/none from the chunk's start frame to the frame after it (ambiguous moves skipped)."""
    before = ex.image(episode.steps[window.start].image)
    after = ex.image(_frame_after(episode, window.stop))
    if before is None or after is None:
        return
    dx = sum(s.dx for s in window.steps)
    dy = sum(s.dy for s in window.steps)
    dz = sum(s.dz for s in window.steps)
    if abs(dy) >= config.direction_min_cm:
        direction = "left" if dy > 0 else "right"
    elif abs(dy) <= config.direction_still_cm and max(abs(dx), abs(dz)) >= config.direction_min_cm:
        direction = "none"
    else:
        return
    ex.add(
        "direction",
        prompts.direction_messages(config.prompts),
        prompts.direction_answer(direction),
        [before, after],
        dy_cm=round(dy, 2),
    )


def build_dataset(
    episodes: Sequence[EpisodeRecord],
    out_dir: Path,
    labeller: Labeller,
    config: BuildConfig = BuildConfig(),
    fallback: bool = True,
    progress: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
) -> BuildReport:
    """Write every usable episode's examples, then train.jsonl / val.jsonl and build.json.

    fallback: when the labeller fails on an episode, label it from its annotations (or with
    the verbaliser) instead of skipping it. `skipped` carries episodes the loader rejected,
    so build.json lists every episode that did not make it and why.
    """
    from tqdm import tqdm

    if out_dir.is_dir() and not (out_dir / BUILD_FILE).exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty and holds no dataset build ({BUILD_FILE}) to go on with: "
                              "give a new or empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_config(out_dir, build_settings(config, labeller))
    if not (out_dir / BUILD_FILE).exists():  # the settings first, so a first build cut short is resumed only with them
        _write_build(out_dir, {"config": build_settings(config, labeller), "finished": False})
    report = BuildReport(out_dir=out_dir, skipped=list(skipped))
    per_episode = out_dir / "episodes"
    per_episode.mkdir(exist_ok=True)
    for episode in tqdm(episodes, desc="episodes", disable=not progress):
        target = per_episode / f"{episode.episode_id}.jsonl"
        if target.exists():
            report.episodes_resumed.append(episode.episode_id)
            continue
        if episode.success is False and not config.include_failed:
            report.skipped.append((episode.episode_id, "the episode did not succeed (failed, or pre-empted or unfinished in a bag; use --include-failed to keep it)"))
            continue
        try:
            try:
                examples = episode_examples(episode, labeller, out_dir, config, report)
            except LabelError:
                if not fallback:
                    raise
                report.note("labeller_fallbacks")
                backup = AnnotationLabeller() if episode.annotated else VerbaliserLabeller()
                examples = episode_examples(episode, backup, out_dir, config, report)
        except (LabelError, ActionValueError) as exc:
            report.skipped.append((episode.episode_id, str(exc)))
            continue
        except OSError as exc:  # a frame that cannot be read or copied costs this episode only ...
            if exc.errno in OUTPUT_FULL:  # ... but a full or read-only output would cost every one
                raise
            report.skipped.append((episode.episode_id, f"a file cannot be read or written ({exc})"))
            continue
        write_whole(target, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
        report.episodes_built.append(episode.episode_id)
    stats = getattr(labeller, "stats", None)
    if stats is not None:
        report.labeller = dataclasses.asdict(stats)
    assemble_splits(out_dir, config, report, labeller.name, {e.episode_id: split_group(e) for e in episodes})
    return report


def build_settings(config: BuildConfig, labeller: Labeller | str) -> dict[str, Any]:
    """What build.json records as "config" and a resume must match: the config's fingerprint
    and the labeller's kind (examples already written keep the labels they were built with)."""
    name = labeller if isinstance(labeller, str) else labeller.name
    return {**config.fingerprint(), "labeller": name}


def _file_split_group(file: Path) -> str:
    """The split group an episode file's examples were written with (its name for files
    written before examples carried one)."""
    with file.open(encoding="utf-8") as handle:
        first = handle.readline()
    group = json.loads(first).get("split_group") if first.strip() else None
    return group if isinstance(group, str) and group else file.stem


def assemble_splits(
    out_dir: Path, config: BuildConfig, report: BuildReport, labeller: str, groups_now: dict[str, str]
) -> None:
    """train.jsonl and val.jsonl from every episode file in the folder (old runs' included).
    groups_now: this run's episodes' split groups, which win over those their files recorded
    (a file built before examples carried one has none)."""
    files = sorted((out_dir / "episodes").glob("*.jsonl"))
    ids = [f.stem for f in files]
    groups = {i: groups_now.get(i) or _file_split_group(f) for f, i in zip(files, ids)}
    by_group = {g: split_of(g, config.val_fraction, config.split_salt) for g in groups.values()}
    if config.val_fraction > 0 and len(by_group) >= 2 and "val" not in by_group.values():
        # Too few groups for the hash to pick one: the lowest hash goes to validation.
        lowest = min(by_group, key=lambda g: hashlib.sha256(f"{config.split_salt}:{g}".encode()).digest())
        by_group[lowest] = "val"
    splits = {i: by_group[groups[i]] for i in ids}
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    with contextlib.ExitStack() as stack:
        handles = {name: stack.enter_context(replaced_whole(out_dir / f"{name}.jsonl")) for name in ("train", "val")}
        for file, episode_id in zip(files, ids):
            split = splits[episode_id]
            for line in file.read_text(encoding="utf-8").splitlines():
                example = json.loads(line)
                example["split"] = split
                handles[split].write(json.dumps(example, ensure_ascii=False) + "\n")
                counts[split][example["stage"]] = counts[split].get(example["stage"], 0) + 1
    report.counts = counts
    build = {
        "config": build_settings(config, labeller),
        "val_fraction": config.val_fraction,
        "episodes": {"train": sorted(i for i in ids if splits[i] == "train"), "val": sorted(i for i in ids if splits[i] == "val")},
        "counts": counts,
        "this_run": {
            "built": report.episodes_built,
            "resumed": report.episodes_resumed,
            "skipped": [{"episode": e, "reason": r} for e, r in report.skipped],
            "notes": report.notes,
            "labeller": report.labeller,
        },
    }
    _write_build(out_dir, build)


def _write_build(out_dir: Path, build: dict[str, Any]) -> None:
    """build.json whole or not at all: a resume compares its settings."""
    write_whole(out_dir / BUILD_FILE, json.dumps(build, indent=1, ensure_ascii=False))


def _check_same_config(out_dir: Path, settings: dict[str, Any]) -> None:
    """Resuming into a folder built with other settings would mix two datasets: refuse, naming
    the settings that differ. A setting an older build.json does not record is not compared."""
    file = out_dir / BUILD_FILE
    if not file.is_file():
        return
    try:
        previous = json.loads(file.read_text(encoding="utf-8")).get("config")
    except (ValueError, AttributeError):
        previous = None
    if not isinstance(previous, dict):  # not a guess: what was built with what is unknown
        raise ValueError(f"{file} cannot be read, so the settings {out_dir} was built with are unknown; "
                         f"build into a new folder, or delete {file} to resume without the check")
    current = json.loads(json.dumps(settings))
    changed = [
        key if isinstance(current[key], dict) else f"{key} {previous[key]} -> {current[key]}"
        for key in current
        if key in previous and previous[key] != current[key]
    ]
    changed += [key for key in previous if key not in current]
    if changed:
        raise ValueError(
            f"{out_dir} was built with different settings ({', '.join(changed)}); build into a new folder or delete it first"
        )


def answer_text(example: dict[str, Any]) -> str:
    """The text of an example's answer: its last message's content, or that content's text
    parts joined (the builder writes parts; chat messages may also carry a plain string)."""
    content = example["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(item.get("text", "") for item in content)


def read_examples(path: Path, stages: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Examples of one split file, optionally only some stages; image paths made absolute."""
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist (run vlm2vla-dataset first)")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number} is not valid JSON ({exc})") from None
        if not isinstance(example, dict) or not isinstance(example.get("stage"), str):
            raise ValueError(f"{path}:{number} is not a dataset example (a JSON object with a 'stage', as "
                             "vlm2vla-dataset writes)")
        if stages is not None and example.get("stage") not in stages:
            continue
        example["images"] = [str(path.parent / p) for p in example.get("images", [])]
        examples.append(example)
    return examples


def repeat_stages(examples: Sequence[dict[str, Any]], repeats: Mapping[str, int]) -> list[dict[str, Any]]:
    """Each example as many times as its stage's entry in `repeats` (default once): a demonstration
    gives one subtask list but a plan and a chunk per subtask, so the rare stage can be upweighted."""
    return [e for e in examples for _ in range(repeats.get(e.get("stage", ""), 1))]
