"""The task state machine of a rollout, and the rules for what counts as a task.

Pure Python (no ROS): the policy node feeds it events (subtasks generated, a chunk sent, the
executor's report, the verifier's verdict) and publishes what it says. One TaskRun per task:

    planning --subtasks--> running: [generating -> executing -> verifying] per cycle
    verdict advance on the last subtask           -> succeeded
    verdict retry beyond max_retries on a subtask -> failed
    verdict retry on the subtask after a move, each move_again_after-th -> back to that move
    cycle limit, executor abort/failure/rejection, model error -> failed
    a newer task                                  -> preempted

Events for another cycle or phase than the current one are stale and ignored (returns False),
so a late verdict or report can never move the task twice.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .action_language.subtasks import control_characters
from .checks import integer
from .topics import EXECUTOR_EVENT, FAILED, PLANNING, PREEMPTED, RUNNING, SUCCEEDED, TERMINAL_STATES, VERDICT

TASK_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # fullmatch: "$" would let a final newline through
# Phases of a cycle while the task is running.
GENERATING, EXECUTING, VERIFYING = "generating", "executing", "verifying"
# Executor report statuses after which the verifier judges the result.
EXECUTED_OK = ("done", "dry_run")
MOVE_VERBS = ("move", "muévete")
"""First words of the subtasks that bring the gripper to where the next one acts ("move above
the red block", the simulator's English and Spanish phrasing)."""
MOVE_AGAIN_AFTER = 1
"""The policy node's and the evaluation's move_again_after (docs/miniature.md, finding 51): a
grasp that missed means the move before it ended out of reach, and a grasp retried from there
misses again."""
_FIRST_WORD = re.compile(r"\s*([^\W\d_]+)")


class TaskRejected(ValueError):
    """A /task payload that is not a task; the message says why, in one sentence.

    task_id is the id the payload asked for, when it got that far (so a client can match it).
    """

    def __init__(self, reason: str, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.task_id = task_id


@dataclass(frozen=True)
class TaskRequest:
    instruction: str
    task_id: str | None  # None: the policy assigns one


def parse_task_message(data: Any, max_chars: int) -> TaskRequest:
    """Read a /task payload: plain text, or a JSON object {"task": text, "id": optional id}.

    A payload whose first non-blank character is '{' is read as JSON. Raises TaskRejected for
    empty or whitespace-only text, text longer than max_chars, control characters, text with no
    letter or digit, and JSON that is malformed, nested too deeply or has other keys or types.
    Line breaks, tabs and runs of spaces become single spaces.
    """
    if not isinstance(data, str):
        raise TaskRejected(f"the task must be a string, got {type(data).__name__}")
    task_id: str | None = None
    text = data
    if data.lstrip().startswith("{"):
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise TaskRejected(f"the task looks like JSON but does not parse: {exc}") from None
        except RecursionError:  # a few KB of nested brackets would otherwise end the node
            raise TaskRejected("the task looks like JSON but is nested too deeply to parse") from None
        if not isinstance(obj, dict):
            raise TaskRejected("a JSON task must be an object {\"task\": ..., \"id\": ...}")
        unknown = sorted(set(obj) - {"task", "id"})
        if unknown:
            raise TaskRejected(f"a JSON task takes only the keys 'task' and 'id', got {unknown}")
        if not isinstance(obj.get("task"), str):
            raise TaskRejected("a JSON task needs a string 'task'")
        text = obj["task"]
        if "id" in obj:
            if not isinstance(obj["id"], str) or not TASK_ID_RE.fullmatch(obj["id"]):
                raise TaskRejected("a task id must be 1-64 characters of letters, digits and _ . : -")
            task_id = obj["id"]
    instruction = text.strip()
    if not instruction:
        raise TaskRejected("the task is empty (or only whitespace)", task_id)
    if len(instruction) > max_chars:
        raise TaskRejected(f"the task has {len(instruction)} characters, more than the limit of {max_chars}", task_id)
    if control_characters(instruction, allowed="\t\n\r"):
        raise TaskRejected("the task contains control characters", task_id)
    # one line with single spaces, as the dataset builder writes instructions: a line break in a
    # task would otherwise start a prompt line of its own ("Current subtask: ...") that the model
    # was never trained on
    instruction = " ".join(instruction.split())
    if not any(char.isalnum() for char in instruction):  # e.g. only a zero-width space: nothing to do
        raise TaskRejected("the task has no letters or digits", task_id)
    return TaskRequest(instruction, task_id)


@dataclass
class TaskRun:
    """State of one task; the policy node owns exactly one current TaskRun."""

    task_id: str
    instruction: str
    max_retries_per_subtask: int = 3
    max_cycles: int = 20
    move_again_after: int = MOVE_AGAIN_AFTER  # a subtask after a move judged not done this often goes back to it (0: never)
    state: str = PLANNING
    phase: str = ""
    subtasks: list[str] = field(default_factory=list)
    index: int = 0
    furthest: int = 0  # the furthest subtask index reached: index goes back when the task moves again
    cycle: int = 0  # number of the current (or last) cycle, from 1
    retries: list[int] = field(default_factory=list)
    parse_failures: int = 0
    message: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    held_verdict: tuple[int, bool, str] | None = None  # a verdict heard before the executor's report

    def __post_init__(self) -> None:
        if self.max_retries_per_subtask < 0:
            raise ValueError(f"max_retries_per_subtask must be >= 0, got {self.max_retries_per_subtask}")
        if self.max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1, got {self.max_cycles}")
        integer(self.move_again_after, "move_again_after", 0)

    # ---- queries ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def needs_chunk(self) -> bool:
        """True when the policy should generate the next cycle's plan and chunk."""
        return self.state == RUNNING and self.phase == GENERATING

    @property
    def subtask(self) -> str:
        return self.subtasks[self.index] if self.state == RUNNING and self.index < len(self.subtasks) else ""

    @property
    def next_subtask(self) -> str:
        """The subtask after the current one ('' when the current one is the last)."""
        return self.subtasks[self.index + 1] if self.index + 1 < len(self.subtasks) else ""

    def snapshot(self) -> dict[str, Any]:
        """The fields of /policy/status (without the schema version)."""
        return {
            "task_id": self.task_id,
            "task": self.instruction,
            "state": self.state,
            "phase": self.phase,
            "subtasks": list(self.subtasks),
            "subtask_index": self.index,
            "furthest_subtask_index": self.furthest,
            "subtask": self.subtask,
            "cycle": self.cycle,
            "retries": list(self.retries),
            "parse_failures": self.parse_failures,
            "message": self.message,
        }

    # ---- events ----------------------------------------------------------------------

    def set_subtasks(self, subtasks: list[str]) -> bool:
        """The model's subtask list: start running, or fail if it is empty."""
        if self.state != PLANNING:
            return False
        items = [s.strip() for s in subtasks if isinstance(s, str) and s.strip()]
        if not items:
            return self.fail("the model produced no subtasks")
        self.subtasks = items
        self.retries = [0] * len(items)
        self.state, self.phase, self.index = RUNNING, GENERATING, 0
        self.message = f"subtask 1/{len(items)}: {items[0]}"
        return True

    def chunk_sent(self, cycle: int, parse_failures: int = 0) -> bool:
        """The policy published cycle's chunk; wait for the executor."""
        if self.state != RUNNING or self.phase != GENERATING or cycle != self.cycle + 1:
            return False
        self.cycle = cycle
        self.parse_failures += max(0, int(parse_failures))
        self.phase = EXECUTING
        return True

    def executed(self, cycle: int, status: str, reason: str = "") -> bool:
        """The executor's final report for a cycle: done/dry_run -> verify; anything else fails."""
        if self.state != RUNNING or self.phase != EXECUTING or cycle != self.cycle:
            return False
        self.history.append({"cycle": cycle, "subtask_index": self.index, "execution": status})
        held, self.held_verdict = self.held_verdict, None
        if status in EXECUTED_OK:
            self.phase = VERIFYING
            if held is not None and held[0] == cycle:
                self.verdict(*held)
            return True
        return self.fail(f"executor {status} cycle {cycle}: {reason or 'no reason given'}")

    def verdict(self, cycle: int, advance: bool, reason: str = "") -> bool:
        """The verifier's verdict on a cycle; moves to the next cycle, subtask or the end.

        Topics from different processes keep no order between them: the verifier judges after
        the executor's report, yet its verdict can reach the policy first. Such a verdict is
        held and applied when the report comes (`executed`), instead of being lost and leaving
        the task waiting for ever."""
        if self.state == RUNNING and self.phase == EXECUTING and cycle == self.cycle:
            self.held_verdict = (cycle, advance, reason)
            return False
        if self.state != RUNNING or self.phase != VERIFYING or cycle != self.cycle:
            return False
        self.history[-1]["verdict"] = "advance" if advance else "retry"
        if advance:
            self.index += 1
            self.furthest = max(self.furthest, min(self.index, len(self.subtasks) - 1))
            if self.index >= len(self.subtasks):
                self.state, self.phase = SUCCEEDED, ""
                self.index = len(self.subtasks) - 1
                self.message = f"all {len(self.subtasks)} subtasks done (by the verifier's judgement)"
                return True
            self.message = f"subtask {self.index + 1}/{len(self.subtasks)}: {self.subtasks[self.index]}"
        else:
            self.retries[self.index] += 1
            if self.retries[self.index] > self.max_retries_per_subtask:
                return self.fail(
                    f"subtask {self.index + 1} ({self.subtasks[self.index]!r}) not done after "
                    f"{self.max_retries_per_subtask} retries" + (f"; last verdict: {reason}" if reason else "")
                )
            if self._moves_again() and self.cycle < self.max_cycles:
                missed, self.index = self.index, self.index - 1
                self.message = (
                    f"back to subtask {self.index + 1}/{len(self.subtasks)}: {self.subtasks[self.index]} "
                    f"({self.subtasks[missed]!r} judged not done, retry {self.retries[missed]}/"
                    f"{self.max_retries_per_subtask})"
                )
            else:
                self.message = (
                    f"retry {self.retries[self.index]}/{self.max_retries_per_subtask} of subtask "
                    f"{self.index + 1}/{len(self.subtasks)}: {self.subtasks[self.index]}"
                )
        if self.cycle >= self.max_cycles:
            return self.fail(f"cycle limit of {self.max_cycles} reached before the task was done")
        self.phase = GENERATING
        return True

    def _moves_again(self) -> bool:
        """Whether the retried subtask sends the task back to the move before it: when a grasp
        misses, the gripper is not where the grasp needs it, which retrying the grasp cannot
        change. Each subtask keeps its retries, so the retry limit bounds both (and a verdict
        margin that falls with the move's retries stays lower)."""
        if not self.move_again_after or self.index == 0 or self.retries[self.index] % self.move_again_after:
            return False
        first = _FIRST_WORD.match(unicodedata.normalize("NFC", self.subtasks[self.index - 1]))
        return first is not None and first.group(1).lower() in MOVE_VERBS

    def verifier_failed(self, cycle: int, reason: str) -> bool:
        """The verifier could not judge the running cycle (its model or server raised): the task
        fails with the verifier's reason, instead of retrying with nothing judging the retries."""
        if self.state != RUNNING or self.phase not in (EXECUTING, VERIFYING) or cycle != self.cycle:
            return False
        return self.fail(f"the verifier failed on cycle {cycle}: {reason or 'no reason given'}")

    def overdue(self, waited_s: float, report_timeout_s: float, verdict_timeout_s: float,
                generate_timeout_s: float) -> str:
        """Why the task has waited too long in its phase ('' if it has not; a timeout of 0 is
        off). A subtask list or chunk the model has not written, a chunk with no final report, or
        a report with no verdict means the model (or its server), the executor or the verifier is
        gone or hung, and the task would otherwise wait for ever."""
        generating = self.state == PLANNING or (self.state == RUNNING and self.phase == GENERATING)
        if generating and 0 < generate_timeout_s < waited_s:
            what = "subtask list" if self.state == PLANNING else f"chunk of cycle {self.cycle + 1}"
            return (f"the model has not written the {what} in {generate_timeout_s:g} s (a hung model or "
                    "server? generate_timeout_s)")
        if self.state != RUNNING:
            return ""
        if self.phase == EXECUTING and 0 < report_timeout_s < waited_s:
            return (f"no report from the executor on {EXECUTOR_EVENT.name} for cycle {self.cycle} in "
                    f"{report_timeout_s:g} s (is the executor running?)")
        if self.phase == VERIFYING and 0 < verdict_timeout_s < waited_s:
            return (f"no verdict on {VERDICT.name} for cycle {self.cycle} in {verdict_timeout_s:g} s "
                    f"(is the verifier running?)")
        return ""

    def fail(self, reason: str) -> bool:
        if self.done:
            return False
        self.state, self.phase, self.message = FAILED, "", reason
        return True

    def preempt(self, by_task_id: str) -> bool:
        if self.done:
            return False
        self.state, self.phase, self.message = PREEMPTED, "", f"pre-empted by task {by_task_id}"
        return True


def verdict_from_text(text: str) -> tuple[bool | None, str]:
    """An operator's or server's free-text answer -> (advance?, reason); None when unclear.

    Accepts advance/yes/done/next/true and retry/no/again/false as the first word, or a JSON
    object {"verdict": "advance"|"retry", "reason": ...}.
    """
    s = (text or "").strip()
    reason = ""
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except (ValueError, RecursionError):  # (nested too deeply: refused, not raised into the node)
            return None, "answer is not valid JSON"
        if not isinstance(obj, dict):
            return None, "answer is not a JSON object"
        s = str(obj.get("verdict", ""))
        reason = str(obj.get("reason", ""))
    words = re.findall(r"[a-z]+", s.lower())
    if not words:
        return None, "empty answer"
    advance, retry = words[0] in ADVANCE_WORDS, words[0] in RETRY_WORDS
    if advance and not set(words) & RETRY_WORDS or retry and not set(words) & ADVANCE_WORDS:
        return advance, reason or s
    if advance or retry:  # "Done? Not yet, retry.": its first word alone would move the task on
        return None, f"answer {s[:80]!r} says both advance and retry"
    return None, f"answer {s[:80]!r} is neither advance nor retry"


ADVANCE_WORDS = frozenset(("advance", "yes", "done", "next", "true", "success", "succeeded"))
RETRY_WORDS = frozenset(("retry", "no", "again", "false", "fail", "failed"))


@dataclass(frozen=True)
class ChunkOrder:
    """A decoded /policy/action_chunk payload: what the executor is asked to run."""

    task_id: str
    cycle: int
    subtask_index: int
    subtask: str
    next_subtask: str
    image_stamp_ns: int
    chunk: Any  # action_language.types.ActionChunk
    text: str


def parse_chunk_payload(text: str) -> ChunkOrder:
    """Decode and check a chunk payload; raises PayloadError saying what is wrong.

    The steps are only checked for shape here (lists of four numbers); the executor's safety
    layer checks every value against the limits before anything moves.
    """
    from .action_language.types import ActionChunk, ActionStep
    from .topics import PayloadError, decode

    d = decode(text, ("task_id", "cycle", "subtask_index", "steps"))
    if not isinstance(d["task_id"], str) or not d["task_id"]:
        raise PayloadError("chunk payload task_id must be a non-empty string")
    for key in ("cycle", "subtask_index"):
        if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < 0:
            raise PayloadError(f"chunk payload {key} must be a non-negative integer, got {d[key]!r}")
    steps = d["steps"]
    if not isinstance(steps, list) or not steps:
        raise PayloadError("chunk payload steps must be a non-empty list of [dx, dy, dz, gripper]")
    out = []
    for i, s in enumerate(steps):
        if not isinstance(s, list) or len(s) != 4:
            raise PayloadError(f"chunk payload step {i} must be a list [dx, dy, dz, gripper], got {s!r}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in s):
            raise PayloadError(f"chunk payload step {i} must hold numbers, got {s!r}")
        try:
            out.append(ActionStep(float(s[0]), float(s[1]), float(s[2]), s[3]))
        except OverflowError:  # JSON integers have no bound; a float has
            raise PayloadError(f"chunk payload step {i} holds a number too large for a float") from None
    stamp = d.get("image_stamp_ns", 0)
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise PayloadError(f"chunk payload image_stamp_ns must be an integer, got {stamp!r}")
    return ChunkOrder(
        task_id=d["task_id"],
        cycle=d["cycle"],
        subtask_index=d["subtask_index"],
        subtask=str(d.get("subtask", "")),
        next_subtask=str(d.get("next_subtask", "")),
        image_stamp_ns=stamp,
        chunk=ActionChunk(tuple(out)),
        text=str(d.get("text", "")),
    )
