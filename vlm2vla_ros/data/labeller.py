"""Where subtasks and motion plans come from: the episode's annotations, the rule-based
verbaliser, or an external VLM behind an OpenAI-compatible /v1/chat/completions API.

A labeller turns an episode into its sub-trajectories (step ranges, each with a subtask and
optionally a motion plan). Plans left None are written by verbalise_moves from the merged
action chunk, so every chunk always has a plan that matches it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vlm2vla_ros.action_language import (
    MAX_SUBTASK_CHARS,
    MAX_SUBTASKS,
    MergeConfig,
    checked_subtasks,
    merge_segments,
)
from vlm2vla_ros.files import write_whole

from .episode import EpisodeRecord

LABELLERS = ("annotations", "verbaliser", "openai")
DEFAULT_MERGE = MergeConfig()
ON_FAILURE = ("fallback", "skip")
MAX_LABEL_CHARS = 320
"""The longest subtask or plan a labeller may answer (a plan; subtasks are held to the action
language's own rule as well)."""


class LabelError(ValueError):
    """The labeller could not label this episode; the message says why."""


@dataclass(frozen=True)
class SubtaskLabel:
    start: int
    stop: int
    subtask: str
    plan: str | None = None
    """None: the builder verbalises the merged chunk."""


@dataclass(frozen=True)
class EpisodeLabels:
    subtasks: list[SubtaskLabel]
    origin: str


class Labeller(Protocol):
    name: str

    def label(self, episode: EpisodeRecord) -> EpisodeLabels: ...


class AnnotationLabeller:
    """The episode's own subtasks and plans. A sub-trajectory keeps its plan when every step of it
    carries that one plan and, in a recorded rollout (one frame a chunk), it is one chunk. One the
    verifier retried (one plan a chunk, perhaps the same words twice) or that ends in an aborted
    chunk (no plan) has its plans verbalised from the moves: no one plan describes them all."""

    name = "annotations"

    def label(self, episode: EpisodeRecord) -> EpisodeLabels:
        if not episode.annotated:
            raise LabelError(f"episode {episode.episode_id} carries no subtask annotations")
        labels = []
        for start, stop, subtask in episode.subtask_spans():
            steps = episode.steps[start:stop]
            plans = {s.plan for s in steps}
            chunks = sum(s.image is not None for s in steps) if episode.source == "bag" else 1
            plan = plans.pop() if len(plans) == 1 and chunks == 1 else None
            labels.append(SubtaskLabel(start, stop, subtask, plan))
        return EpisodeLabels(labels, self.name)


class VerbaliserLabeller:
    """Annotated subtasks (or the instruction as the only subtask); every plan by verbalise_moves."""

    name = "verbaliser"

    def label(self, episode: EpisodeRecord) -> EpisodeLabels:
        if episode.annotated:
            spans = episode.subtask_spans()
        else:
            spans = [(0, len(episode.steps), episode.instruction)]
        return EpisodeLabels([SubtaskLabel(a, b, text) for a, b, text in spans], self.name)


LABEL_SYSTEM_PROMPT = (
    "You label robot demonstrations for training a robot policy. The robot moves its gripper in a "
    "task frame: +dx is forward (away from the robot), +dy is to the robot's left, +dz is up; "
    "distances are in centimetres. Gripper 1 means open, 0 means closed. You see frames from a "
    "camera looking at the table and the log of the gripper's moves, each with the range of "
    "steps it covers."
)
LABEL_USER_PROMPT = (
    "Task: {instruction}\n"
    "The trajectory has {steps} steps (0 to {last}).\n"
    "Moves:\n{moves}\n\n"
    "Split the trajectory into the consecutive subtasks the robot completed, in order. For each "
    "subtask give the step where it starts (the first starts at step 0, starts strictly "
    "increase), a short imperative subtask (for example \"grasp the red block\"; at most "
    f"{MAX_SUBTASK_CHARS} characters, starting with a letter), and a "
    "one-sentence motion plan that names the direction first (for example \"Move down toward "
    "the block, then close the gripper.\").\n"
    "Answer with JSON only: {{\"subtasks\": [{{\"start_step\": 0, \"subtask\": \"...\", "
    "\"plan\": \"...\"}}, ...]}}"
)


@dataclass(frozen=True)
class OpenAILabellerConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gemini-2.5-pro"
    api_key: str = ""
    timeout_s: float = 60.0
    retries: int = 3
    """Tries per episode (transport errors and malformed answers both use one)."""
    backoff_s: float = 2.0
    """Wait before the second try; doubled each further try."""
    requests_per_minute: float = 30.0
    max_frames: int = 8
    temperature: float = 0.2
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not re.match(r"https?://", self.base_url):
            raise ValueError(f"labeller base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.timeout_s > 0 or self.retries < 1 or self.backoff_s < 0 or not self.requests_per_minute > 0:
            raise ValueError("labeller timeout_s and requests_per_minute must be > 0, retries >= 1, backoff_s >= 0")
        if self.max_frames < 1:
            raise ValueError(f"labeller max_frames must be at least 1, got {self.max_frames}")


class RateLimiter:
    """At most `per_minute` calls per minute, spaced evenly (no bursts to trip a quota)."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 60.0 / per_minute
        self.clock, self.sleep = clock, sleep
        self._last: float | None = None

    def wait(self) -> None:
        now = self.clock()
        if self._last is not None and now < self._last + self.interval:
            self.sleep(self._last + self.interval - now)
            now = self.clock()
        self._last = now


@dataclass
class LabellerStats:
    requests: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    http_errors: int = 0
    malformed: int = 0
    failed_episodes: int = 0


class OpenAILabeller:
    """Asks an external VLM (Gemini, GPT-4o, a local vLLM, ...) for subtasks and plans.

    Answers are cached on disk by a hash of the whole request, so a rerun after an
    interruption pays only for what was not answered yet. Only answers that parse are cached.
    """

    name = "openai"

    def __init__(self, config: OpenAILabellerConfig, merge: MergeConfig = DEFAULT_MERGE) -> None:
        self.config = config
        self.merge = merge
        self.stats = LabellerStats()
        self.limiter = RateLimiter(config.requests_per_minute)
        self.cache = Path(config.cache_dir) if config.cache_dir else None
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)

    def label(self, episode: EpisodeRecord) -> EpisodeLabels:
        body = self.request_body(episode)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        cached = self._cached(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return EpisodeLabels(parse_label_answer(cached, len(episode.steps)), self.name)
        problem = ""
        for attempt in range(self.config.retries):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                text = self._post(body)
            except LabelError as exc:
                problem = str(exc)
                continue
            try:
                labels = parse_label_answer(text, len(episode.steps))
            except LabelError as exc:
                self.stats.malformed += 1
                problem = str(exc)
                continue
            self._store(key, text)
            return EpisodeLabels(labels, self.name)
        self.stats.failed_episodes += 1
        raise LabelError(f"the labeller gave no usable answer in {self.config.retries} tries (last: {problem})")

    def request_body(self, episode: EpisodeRecord) -> dict[str, Any]:
        """The chat request for one episode: key frames, the merged move log, the instruction."""
        segments = merge_segments(episode.deltas_cm(), episode.gripper_states(), self.merge)
        lines = []
        for segment in segments:
            move = episode.deltas_cm()[segment.start : segment.stop].sum(axis=0)
            lines.append(
                f"steps {segment.start}-{segment.stop - 1}: dx={move[0]:+.1f} dy={move[1]:+.1f} "
                f"dz={move[2]:+.1f} gripper={segment.gripper}"
            )
        content: list[dict[str, Any]] = []
        for index in _key_frames(episode, [s.start for s in segments], self.config.max_frames):
            content.append({"type": "text", "text": f"Frame at step {index}:"})
            content.append({"type": "image_url", "image_url": {"url": _data_url(episode.image_path(str(episode.steps[index].image)))}})
        if episode.final_image:
            content.append({"type": "text", "text": "Frame after the last step:"})
            content.append({"type": "image_url", "image_url": {"url": _data_url(episode.image_path(episode.final_image))}})
        steps = len(episode.steps)
        text = LABEL_USER_PROMPT.format(instruction=episode.instruction, steps=steps, last=steps - 1, moves="\n".join(lines))
        content.append({"type": "text", "text": text})
        return {
            "model": self.config.model,
            "temperature": self.config.temperature,
            "messages": [{"role": "system", "content": LABEL_SYSTEM_PROMPT}, {"role": "user", "content": content}],
        }

    def _post(self, body: dict[str, Any]) -> str:
        self.limiter.wait()
        self.stats.requests += 1
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            self.stats.http_errors += 1
            raise LabelError(f"the labeller server answered HTTP {exc.code} ({exc.reason})") from None
        except TimeoutError as exc:
            self.stats.timeouts += 1
            raise LabelError(f"the labeller did not answer within {self.config.timeout_s} s") from exc
        except (urllib.error.URLError, ConnectionError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                self.stats.timeouts += 1
                raise LabelError(f"the labeller did not answer within {self.config.timeout_s} s") from None
            self.stats.http_errors += 1
            raise LabelError(f"the labeller server at {url} cannot be reached ({reason})") from None
        try:
            return str(json.loads(raw)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            self.stats.malformed += 1
            raise LabelError("the labeller's response is not an OpenAI chat completion") from None

    def _cached(self, key: str) -> str | None:
        if self.cache is None:
            return None
        file = self.cache / f"{key}.json"
        try:
            return str(json.loads(file.read_text(encoding="utf-8"))["content"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, key: str, text: str) -> None:
        if self.cache is None:
            return
        write_whole(self.cache / f"{key}.json", json.dumps({"content": text}))


def parse_label_answer(text: str, steps: int) -> list[SubtaskLabel]:
    """Read the labeller's JSON answer (code fences and prose around it are tolerated)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise LabelError(f"the labeller's answer holds no JSON object: {text[:80]!r}")
    try:
        data = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):
        raise LabelError(f"the labeller's answer is not valid JSON: {text[:80]!r}") from None
    items = data.get("subtasks") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_SUBTASKS:
        raise LabelError(f"the labeller's answer needs 1 to {MAX_SUBTASKS} subtasks")
    starts: list[int] = []
    labels: list[SubtaskLabel] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise LabelError(f"subtask {i} of the labeller's answer is not an object")
        begin, subtask, plan = item.get("start_step"), item.get("subtask"), item.get("plan")
        if isinstance(begin, bool) or not isinstance(begin, int) or not 0 <= begin < steps:
            raise LabelError(f"subtask {i} starts at {begin!r}, not a step from 0 to {steps - 1}")
        if starts and begin <= starts[-1]:
            raise LabelError(f"subtask {i} starts at step {begin}, not after the previous start {starts[-1]}")
        if not starts and begin != 0:
            raise LabelError(f"the first subtask starts at step {begin}, not 0")
        for name, value in (("subtask", subtask), ("plan", plan)):
            if not isinstance(value, str) or not value.strip() or "\n" in value.strip() or len(value) > MAX_LABEL_CHARS:
                raise LabelError(f"subtask {i}'s {name} is not a short one-line text: {value!r:.60}")
        try:  # a subtask the decoder could never write would be refused by the dataset builder later
            (subtask,) = checked_subtasks([subtask])
        except ValueError as exc:  # its message numbers the one-item list's item 1; name the answer's
            reason = str(exc).replace("subtask 1 ", "it ", 1)
            raise LabelError(f"subtask {i} of the labeller's answer: {reason}") from None
        starts.append(begin)
        labels.append(SubtaskLabel(begin, 0, subtask, " ".join(plan.split())))
    stops = starts[1:] + [steps]
    return [SubtaskLabel(label.start, stop, label.subtask, label.plan) for label, stop in zip(labels, stops)]


def _key_frames(episode: EpisodeRecord, starts: list[int], limit: int) -> list[int]:
    """Steps with an image at merged-move starts, thinned evenly to at most `limit`."""
    frames = [i for i in starts if episode.steps[i].image is not None]
    if len(frames) > limit:
        frames = [frames[round(k * (len(frames) - 1) / (limit - 1))] for k in range(limit)] if limit > 1 else frames[:1]
    return frames


def _data_url(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class LabellerSettings:
    """Command-line choice of labeller, and what to do when the external one fails."""

    kind: str = "annotations"
    on_failure: str = "fallback"
    openai: OpenAILabellerConfig = field(default_factory=OpenAILabellerConfig)

    def __post_init__(self) -> None:
        if self.kind not in LABELLERS:
            raise ValueError(f"labeller must be one of {LABELLERS}, got {self.kind!r}")
        if self.on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {self.on_failure!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["openai"].pop("api_key", None)  # never written to disk
        return data


def make_labeller(settings: LabellerSettings, merge: MergeConfig = DEFAULT_MERGE) -> Labeller:
    if settings.kind == "annotations":
        return AnnotationLabeller()
    if settings.kind == "verbaliser":
        return VerbaliserLabeller()
    return OpenAILabeller(settings.openai, merge)
