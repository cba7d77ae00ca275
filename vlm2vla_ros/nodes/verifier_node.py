"""verifier_node: after each executed chunk, says advance or retry on /verifier/verdict.

It keeps the recent camera frames, remembers each chunk's subtask and next subtask from
/policy/action_chunk, and on a "done"/"dry_run" event from /executor/event judges the
frames the executor named as before and after. The policy applies the verdict (next
subtask, retry, the per-subtask retry limit, task completion: rollout.TaskRun). Backends are
in verification.py: vlm (the base model, adapter off: in one process the policy's engine unless
the verifier is given a model of its own), openai,
operator (/verifier/operator_request -> a person -> /verifier/operator_answer), count.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from .. import topics
from ..checks import positive
from ..rollout import EXECUTED_OK
from ..topics import PayloadError, decode
from ..verification import (
    BACKENDS,
    CannotJudge,
    CountVerifier,
    EngineVerifier,
    OperatorVerifier,
    VerifyContext,
    read_operator_answer,
)
from .common import load_config, monotonic, publish_json, qos_for, run_node_main, stamp_ns

FRAME_WAIT_S = 1.0
"""How long a judgement waits for a frame named by the executor's report that has not arrived
yet (the camera's frame and the report reach this node by different paths)."""
FRAME_TOLERANCE_NS = 500_000_000
"""A frame missing from the buffer may be stood in for by a kept one this close to it, on the
same side of the chunk (before it for "before", after it for "after"); never one further off,
which could show the arm mid-motion."""
PINNED_FRAMES = 8
"""The "before" frames of the latest chunks, kept apart from the buffer from the executor's
"started" event on: a chunk that outlasts image_buffer frames (a long chunk, a fast camera)
would otherwise lose its before-frame, and the cycle could not be judged."""


@dataclass(frozen=True)
class VerifierConfig:
    backend: str = "vlm"  # vlm | openai | operator | count
    advance_after_chunks: int = 1  # backend count
    operator_timeout_s: float = 300.0  # backend operator: no answer -> an error verdict (the task fails)
    policy_config: str = ""  # backend vlm/openai with a model of its own: the policy YAML to load
    model_path: str = ""  # ... with this model ('' = the policy's checkpoint as a verifier; 'tiny' = tiny test model)
    image_buffer: int = 50  # frames kept to find the before/after images by stamp

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"verifier backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.advance_after_chunks < 1:
            raise ValueError(f"verifier advance_after_chunks must be >= 1, got {self.advance_after_chunks}")
        positive(self.operator_timeout_s, "verifier operator_timeout_s")
        if self.image_buffer < 2:
            raise ValueError(f"verifier image_buffer must be >= 2, got {self.image_buffer}")


class VerifierNode(Node):
    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__("verifier_node", **kwargs)
        self.config = c = load_config(self, VerifierConfig)
        self._owns_engine = False
        group = ReentrantCallbackGroup()
        self.verdict_pub = self.create_publisher(String, topics.VERDICT.name, qos_for(topics.VERDICT))
        self.request_pub = self.create_publisher(String, topics.OPERATOR_REQUEST.name, qos_for(topics.OPERATOR_REQUEST))
        self.verifier = self._make_verifier(engine)
        self._frames: collections.OrderedDict[int, Image] = collections.OrderedDict()
        self._pinned: dict[int, Image | None] = {}  # before-frames of started chunks (None: not arrived yet)
        self._frames_cond = threading.Condition()
        self._chunks: dict[tuple[str, int], dict[str, Any]] = {}
        self._early_reports: dict[tuple[str, int], dict[str, Any]] = {}  # executor reports heard before their chunk
        self._order_lock = threading.Lock()
        self._ended: dict[str, str] = {}  # task id -> its end state on /policy/status (the latest tasks)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier")
        self.create_subscription(Image, topics.IMAGE.name, self._on_image, qos_for(topics.IMAGE), callback_group=group)
        self.create_subscription(String, topics.POLICY_CHUNK.name, self._on_chunk, qos_for(topics.POLICY_CHUNK), callback_group=group)
        self.create_subscription(
            String, topics.EXECUTOR_EVENT.name, self._on_event, qos_for(topics.EXECUTOR_EVENT), callback_group=group
        )
        self.create_subscription(
            String, topics.OPERATOR_ANSWER.name, self._on_answer, qos_for(topics.OPERATOR_ANSWER), callback_group=group
        )
        self.create_subscription(
            String, topics.POLICY_STATUS.name, self._on_status, qos_for(topics.POLICY_STATUS), callback_group=group
        )
        self.get_logger().info(f"verifier ready: backend {c.backend}")

    def _make_verifier(self, engine: Any) -> Any:
        c = self.config
        if c.backend == "count":
            return CountVerifier(c.advance_after_chunks)
        if c.backend == "operator":
            return OperatorVerifier(self._ask_operator, c.operator_timeout_s)
        if engine is None:
            from ..policy import load_policy
            from ..shipped import resolve_verifier_model
            from .policy_node import build_policy_config

            cfg = build_policy_config(c.policy_config, resolve_verifier_model(c.model_path), "")
            if c.backend == "openai":
                cfg = cfg.replace(backend="openai")
            elif not cfg.model_path:  # '' means the policy's model, which only a shared engine has
                raise ValueError("verifier_node: backend vlm in a process of its own needs model_path (or a "
                                 "policy_config that names a model); the launch file gives it the policy's")
            engine = load_policy(cfg)
            self._owns_engine = True
        self.engine = engine
        return EngineVerifier(engine, c.backend)

    # ---- inputs --------------------------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        with self._frames_cond:
            stamp = stamp_ns(msg.header.stamp)
            self._frames[stamp] = msg
            if stamp in self._pinned:
                self._pinned[stamp] = msg
            while len(self._frames) > self.config.image_buffer:
                self._frames.popitem(last=False)
            self._frames_cond.notify_all()

    def _on_chunk(self, msg: String) -> None:
        try:
            d = decode(msg.data, ("task_id", "cycle", "subtask_index"))
        except PayloadError:
            return
        key = _cycle_key(d)
        if key is None:
            return
        with self._order_lock:
            self._chunks[key] = d
            _keep_last(self._chunks, 100)
            report = self._early_reports.pop(key, None)
        if report is not None:
            self._judge_later(report, d)

    def _on_event(self, msg: String) -> None:
        """Judge an executed cycle. Its chunk (from the policy) and this report (from the
        executor) come from different processes in no guaranteed order: a report heard first
        waits for its chunk instead of being dropped, which would leave the task waiting."""
        try:
            d = decode(msg.data, ("event", "task_id", "cycle"))
        except PayloadError:
            return
        if d["event"] == "started":
            self._pin(d.get("before_stamp_ns"))
            return
        if d["event"] not in EXECUTED_OK:
            return
        key = _cycle_key(d)
        if key is None:
            return
        with self._order_lock:
            chunk = self._chunks.get(key)
            if chunk is None:
                self._early_reports[key] = d
                _keep_last(self._early_reports, 100)
        if chunk is None:
            self.get_logger().info(f"executed cycle {d['cycle']} of task {d['task_id']}: judged when its chunk arrives")
            return
        self._judge_later(d, chunk)

    def _pin(self, stamp: Any) -> None:
        """Keep the frame a chunk starts from until its judgement, however long the chunk runs."""
        if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp <= 0:
            return
        with self._frames_cond:
            self._pinned[stamp] = self._frames.get(stamp)
            _keep_last(self._pinned, PINNED_FRAMES)

    def _on_status(self, msg: String) -> None:
        """A task that ended (pre-empted, failed) needs no more judging: its queued judgements are
        dropped and a question to the operator about it is withdrawn, so the running task's
        judgement is not held behind them. The id sent again (planning) is a new task."""
        try:
            d = decode(msg.data, ("task_id", "state"))
        except PayloadError:
            return
        task_id, state = str(d["task_id"]), d["state"]
        with self._order_lock:
            if state in topics.TERMINAL_STATES:
                self._ended[task_id] = state
                _keep_last(self._ended, 64)
            elif state == topics.PLANNING:  # (a new task, or the id sent again as one)
                self._ended.pop(task_id, None)
                if isinstance(self.verifier, CountVerifier):
                    self.verifier.forget(task_id)
        if state in topics.TERMINAL_STATES and isinstance(self.verifier, OperatorVerifier) and self.verifier.withdraw(task_id):
            self.get_logger().info(f"operator question about task {task_id} withdrawn: the task ended ({state})")

    def _judge_later(self, d: dict[str, Any], chunk: dict[str, Any]) -> None:
        """Queue the judgement; the frames are found and decoded on the worker, where a bad one
        costs this verdict (a retry) and never the node."""
        self._pool.submit(self._judge, d, chunk)

    def _on_answer(self, msg: String) -> None:
        if not isinstance(self.verifier, OperatorVerifier):
            return
        try:
            text, task_id, cycle = read_operator_answer(msg.data)
        except ValueError as exc:
            self.get_logger().warning(f"operator answer ignored: {exc}")
            return
        problem = self.verifier.answer(text, task_id, cycle)
        if problem:
            self.get_logger().warning(f"operator answer ignored: {problem}")

    # ---- judging -------------------------------------------------------------------------

    def _frame(self, stamp: Any, after: bool) -> Any:
        """The RGB frame with this stamp: waited for up to FRAME_WAIT_S, else the nearest kept
        one within FRAME_TOLERANCE_NS on the chunk's side of it (after it for the "after" frame);
        None when there is none or it cannot be decoded."""
        from .images import from_msg as image_from_msg

        if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp <= 0:
            return None
        with self._frames_cond:
            self._frames_cond.wait_for(lambda: stamp in self._frames or self._pinned.get(stamp), timeout=FRAME_WAIT_S)
            msg = self._frames.get(stamp) or self._pinned.get(stamp)
            if msg is None:
                near = [s for s in self._frames if 0 < (s - stamp if after else stamp - s) <= FRAME_TOLERANCE_NS]
                msg = self._frames[min(near, key=lambda s: abs(s - stamp))] if near else None
        if msg is None:
            return None
        try:
            return image_from_msg(msg)
        except ValueError as exc:  # an encoding or size the node cannot read
            self.get_logger().warning(f"frame {stamp} cannot be read: {exc}")
            return None

    def _judge(self, event: dict[str, Any], chunk: dict[str, Any]) -> None:
        with self._order_lock:
            ended = self._ended.get(str(event["task_id"]))
        if ended:  # queued before its task ended: nobody waits for this verdict
            self.get_logger().info(f"cycle {event['cycle']} of task {event['task_id']} not judged: the task ended ({ended})")
            return
        t0 = monotonic()
        index, retries = chunk["subtask_index"], chunk.get("subtask_retries", 0)
        ctx = VerifyContext(
            task_id=event["task_id"],
            cycle=event["cycle"],
            subtask_index=index if isinstance(index, int) and not isinstance(index, bool) else -1,
            subtask=str(chunk.get("subtask", "")),
            next_subtask=str(chunk.get("next_subtask", "")),
            before=self._frame(event.get("before_stamp_ns"), after=False),
            after=self._frame(event.get("after_stamp_ns"), after=True),
            retries=retries if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0 else 0,
        )
        error = False
        try:
            j = self.verifier.judge(ctx)
            advance, reason, raw, timings = j.advance, j.reason, j.raw_text, dict(j.timings)
        except CannotJudge as exc:  # no operator answer: the policy ends the task
            advance, reason, raw, timings, error = False, str(exc), "", {}, True
            self.get_logger().error(f"cycle {ctx.cycle} of task {ctx.task_id} not judged: {exc}")
        except Exception as exc:  # a failed verifier never advances, and says so: the policy ends the task
            advance, reason, raw, timings = False, f"verifier error: {type(exc).__name__}: {exc}", "", {}
            error = True
            self.get_logger().error(reason)
        timings.setdefault("verify_total_s", round(monotonic() - t0, 4))
        with self._order_lock:
            if ctx.task_id in self._ended:  # it ended while being judged (a question withdrawn): no verdict
                return
        publish_json(
            self.verdict_pub,
            task_id=ctx.task_id,
            cycle=ctx.cycle,
            subtask_index=ctx.subtask_index,
            subtask=ctx.subtask,
            next_subtask=ctx.next_subtask,
            verdict="advance" if advance else "retry",
            reason=reason,
            error=error,
            backend=self.config.backend,
            raw_text=raw,
            before_stamp_ns=event.get("before_stamp_ns", 0),
            after_stamp_ns=event.get("after_stamp_ns", 0),
            timings=timings,
        )

    def _ask_operator(self, ctx: VerifyContext) -> None:
        question = f"Is the subtask '{ctx.subtask}' done? Answer advance or retry."
        publish_json(
            self.request_pub,
            task_id=ctx.task_id,
            cycle=ctx.cycle,
            subtask_index=ctx.subtask_index,
            subtask=ctx.subtask,
            next_subtask=ctx.next_subtask,
            question=question,
            timeout_s=self.config.operator_timeout_s,
        )
        self.get_logger().info(f"operator: {question} (publish on {topics.OPERATOR_ANSWER.name})")

    def destroy_node(self) -> None:
        # queued judgements are dropped, and one waiting for a person is woken: nothing is judged
        # after the node is gone, and the process does not wait minutes for an answer at exit
        self._pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.verifier, OperatorVerifier):
            self.verifier.close()
        if self._owns_engine and hasattr(self.engine, "close"):
            self.engine.close()
        super().destroy_node()


def _cycle_key(d: dict[str, Any]) -> tuple[str, int] | None:
    """(task id, cycle) of a chunk or an executor report; None when the cycle is not a number."""
    try:
        return str(d["task_id"]), int(d["cycle"])
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite cycle (JSON 1e400)
        return None


def _keep_last(items: dict[Any, Any], limit: int) -> None:
    """Drop the oldest entries beyond limit (dicts keep insertion order)."""
    while len(items) > limit:
        items.pop(next(iter(items)))


def main(args: list | None = None) -> int:
    return run_node_main(lambda: [VerifierNode()], args=args)


if __name__ == "__main__":
    raise SystemExit(main())
