"""Verifier backends: after each executed chunk, advance to the next subtask or retry this one.

Pure Python (no ROS). Backends:
- "vlm": the base VLM, i.e. the policy's own weights with the LoRA adapter switched off
  (PolicyEngine.verify); one model serves policy and verifier when they share a process.
- "openai": the same question to an OpenAI-compatible server (a PolicyEngine built with the
  policy's "openai" backend, whose base_model answers with the adapter off).
- "operator": a person answers on a topic; the node publishes the question and feeds the
  answer to OperatorVerifier.answer().
- "count": advance after N executed chunks on a subtask (no model; for tests and dry runs).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .checks import positive
from .rollout import verdict_from_text

BACKENDS = ("vlm", "openai", "operator", "count")


class CannotJudge(RuntimeError):
    """Nobody can judge the cycle (no operator answer): the verdict is an error, so the policy
    ends the task instead of moving the robot on with nobody judging its moves."""


@dataclass(frozen=True)
class VerifyContext:
    task_id: str
    cycle: int
    subtask_index: int
    subtask: str
    next_subtask: str
    before: Any  # HxWx3 uint8 RGB, or None when the frame was not found
    after: Any
    retries: int = 0
    """How many times the subtask was retried before this cycle (the policy's count)."""


@dataclass(frozen=True)
class Judgement:
    advance: bool
    reason: str
    raw_text: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class CountVerifier:
    """Advance once a subtask has had `n` executed chunks; never looks at the images."""

    name = "count"

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"advance_after_chunks must be a positive integer, got {n!r}")
        self.n = n
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()  # judged on the node's worker, forgotten from a callback

    def forget(self, task_id: str) -> None:
        """The id begins a new task: its subtasks count from 0 again."""
        with self._lock:
            for key in [k for k in self._counts if k[0] == task_id]:
                del self._counts[key]

    def judge(self, ctx: VerifyContext) -> Judgement:
        key = (ctx.task_id, ctx.subtask_index)
        with self._lock:
            self._counts[key] = count = self._counts.get(key, 0) + 1
        if count >= self.n:
            return Judgement(True, f"{count} chunk(s) executed on this subtask (advance after {self.n})")
        return Judgement(False, f"{count} of {self.n} chunk(s) executed on this subtask")


class EngineVerifier:
    """Asks a policy engine's verify() (base model, adapter off) whether the subtask is done."""

    def __init__(self, engine: Any, name: str = "vlm") -> None:
        self.engine, self.name = engine, name

    def judge(self, ctx: VerifyContext) -> Judgement:
        if ctx.before is None or ctx.after is None:  # one frame lost on a best-effort topic: one retry
            return Judgement(False, "the before or after image was not received, so the subtask cannot be judged")
        result = self.engine.verify(ctx.before, ctx.after, ctx.subtask, ctx.next_subtask, ctx.retries)
        reason = "the model judged the subtask done" if result.advance else "the model judged the subtask not done"
        if result.margin is not None:
            reason += f" (margin {result.margin:+.2f} after {ctx.retries} retries)"
        return Judgement(bool(result.advance), reason, result.raw_text, dict(result.timings))


def read_operator_answer(data: str) -> tuple[str, str, int]:
    """(answer text, task id, cycle) of an /verifier/operator_answer message: free text (no id
    or cycle: it answers whatever question waits), or a JSON object {"task_id", "cycle",
    "verdict", "reason"} (a schema version "v" is allowed), whose id and cycle must then name the
    waiting question and whose reason is kept. ValueError for an object whose cycle is not a
    whole number."""
    obj: Any = None
    if data.lstrip().startswith("{"):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            obj = None  # not JSON after all: verdict_from_text says why
    if not isinstance(obj, dict) or "verdict" not in obj:
        return data, "", -1
    cycle = obj.get("cycle", -1)
    if isinstance(cycle, float) and cycle.is_integer() or isinstance(cycle, str) and cycle.strip().isdigit():
        cycle = int(cycle)  # (typed by hand: 3.0, "3")
    if isinstance(cycle, bool) or not isinstance(cycle, int):
        raise ValueError(f"the answer's cycle {cycle!r} is not a whole number")
    return data, str(obj.get("task_id", "")), cycle  # verdict_from_text reads its verdict and reason


class OperatorVerifier:
    """A person answers 'advance' or 'retry'; no answer within timeout_s is an error (CannotJudge)."""

    name = "operator"

    def __init__(self, ask: Callable[[VerifyContext], None], timeout_s: float) -> None:
        positive(timeout_s, "operator_timeout_s")
        self.ask, self.timeout_s = ask, timeout_s
        self._cond = threading.Condition()
        self._pending: tuple[str, int] | None = None
        self._answer: tuple[bool, str, str] | None = None
        self._closed = False

    def close(self) -> None:
        """Stop waiting: a question still open gets a retry now (the node is shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def withdraw(self, task_id: str) -> bool:
        """The task ended: a question about it waiting for an answer is dropped now, so the next
        task's question is not held behind it for the timeout. True if one was."""
        with self._cond:
            if self._pending is None or self._pending[0] != task_id or self._answer is not None:
                return False
            self._answer = (False, f"task {task_id} ended before an answer", "")
            self._cond.notify_all()
        return True

    def answer(self, text: str, task_id: str = "", cycle: int = -1) -> str:
        """Feed an answer; returns '' if taken, else why it was ignored."""
        advance, reason = verdict_from_text(text)
        with self._cond:
            if self._pending is None:
                return "no question is waiting for an answer"
            if task_id and (task_id, cycle) != self._pending:
                return f"the answer is for task {task_id} cycle {cycle}, the question for {self._pending}"
            if advance is None:
                return reason
            self._answer = (advance, reason, text)
            self._cond.notify_all()
        return ""

    def judge(self, ctx: VerifyContext) -> Judgement:
        with self._cond:
            if self._closed:
                return Judgement(False, "the verifier is shutting down; retrying")
            self._pending, self._answer = (ctx.task_id, ctx.cycle), None
        self.ask(ctx)
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._answer is None:
                if self._closed:
                    self._pending = None
                    return Judgement(False, "the verifier is shutting down; retrying")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._pending = None
                    raise CannotJudge(f"no operator answer within {self.timeout_s:g} s: nobody judged the chunk")
                self._cond.wait(remaining)
            advance, reason, text = self._answer
            self._pending = None
        return Judgement(advance, f"operator: {reason}", text)
