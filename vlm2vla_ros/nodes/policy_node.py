"""policy_node: runs the hierarchical VLM2VLA policy for the task on /task.

On a task: subtasks once from the latest frame, then per cycle a motion plan and an action
chunk for the current subtask, from a frame taken after the previous chunk finished. The
model runs in one worker thread; callbacks never wait for it. A new task pre-empts the old
one: its status turns "preempted" and any result still coming for it is dropped. The task
state machine is rollout.TaskRun; the model is policy.PolicyEngine.

Publishes /policy/status (latched JSON), /policy/plan, /policy/raw_text, /policy/action_chunk
and /policy/heartbeat; listens to /executor/event and /verifier/verdict to move on.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from .. import topics
from ..checks import positive, real
from ..rollout import MOVE_AGAIN_AFTER, TaskRejected, TaskRun, parse_task_message
from ..shipped import resolve_shipped
from ..topics import PayloadError, decode
from .common import load_config, monotonic, publish_json, qos_for, run_node_main, stamp_ns

FINAL_EVENTS = ("done", "dry_run", "aborted", "rejected", "failed")
TINY_MODEL = "tiny"


@dataclass(frozen=True)
class PolicyNodeConfig:
    policy_config: str = ""  # YAML of policy.PolicyConfig fields ('' = its defaults)
    model_path: str = ""  # overrides policy_config's; 'tiny' = the tiny random test model,
    # 'mini' = the miniature VLM2VLA shipped in models/vlm2vla-mini (base + its adapter)
    adapter_path: str = ""  # overrides policy_config's LoRA adapter folder
    max_task_chars: int = 500
    max_retries_per_subtask: int = 3
    max_cycles: int = 20
    move_again_after: int = MOVE_AGAIN_AFTER  # a retried subtask after a move goes back to it (0: never)
    image_timeout_s: float = 10.0  # wait this long for a (fresh) frame before failing the task
    heartbeat_hz: float = 2.0
    report_timeout_s: float = 120.0  # a chunk with no executor report for this long fails the task (0: off)
    verdict_timeout_s: float = 600.0  # a report with no verdict for this long fails the task (0: off)
    generate_timeout_s: float = 300.0  # a subtask list or chunk not written in this long fails the task (0: off)

    def __post_init__(self) -> None:
        if not 1 <= self.max_task_chars <= 100_000:
            raise ValueError(f"policy max_task_chars must be in [1, 100000], got {self.max_task_chars}")
        if self.max_retries_per_subtask < 0 or self.max_cycles < 1 or self.move_again_after < 0:
            raise ValueError("policy max_retries_per_subtask and move_again_after must be >= 0 and max_cycles >= 1")
        for name in ("image_timeout_s", "heartbeat_hz"):
            positive(getattr(self, name), f"policy {name}")
        for name in ("report_timeout_s", "verdict_timeout_s", "generate_timeout_s"):
            real(getattr(self, name), f"policy {name}", lo=0.0)


def build_policy_config(policy_config: str, model_path: str, adapter_path: str) -> Any:
    """The PolicyConfig a node runs: the YAML file, with model and adapter paths overridden."""
    from ..policy.config import PolicyConfig

    base = PolicyConfig.from_yaml(policy_config) if policy_config else None
    model_path, adapter_path = resolve_shipped(model_path, adapter_path)
    changes: dict = {}
    if model_path == TINY_MODEL:
        from ..policy.tiny_model import ensure_tiny_model

        changes["model_path"] = str(ensure_tiny_model())
    elif model_path:
        changes["model_path"] = os.path.expanduser(model_path)
    if adapter_path:
        changes["adapter_path"] = os.path.expanduser(adapter_path)
    if base is None:
        return PolicyConfig(**changes)
    return base.replace(**changes)


def load_engine(policy_config: str, model_path: str, adapter_path: str) -> Any:
    from ..policy import load_policy

    return load_policy(build_policy_config(policy_config, model_path, adapter_path))


class PolicyNode(Node):
    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__("policy_node", **kwargs)
        self.config = c = load_config(self, PolicyNodeConfig)
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else load_engine(c.policy_config, c.model_path, c.adapter_path)
        self._lock = threading.RLock()
        self._run: TaskRun | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{int(monotonic() * 1000) % 0xFFFF:04x}"
        self._image_cond = threading.Condition()
        self._image: tuple[int, Image] | None = None  # (stamp ns, message)
        self._min_stamp_ns = 0  # the next model call needs a frame newer than this (the task's arrival, the last "after" frame)
        # (the run, its (cycle, phase), since when): the run object, not its id, so that an id sent
        # again as a new task never inherits the old run's clock in the same cycle and phase
        self._phase_since: tuple[TaskRun | None, tuple[int, str], float] = (None, (-1, ""), 0.0)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self._closing = False

        group = ReentrantCallbackGroup()
        self.status_pub = self.create_publisher(String, topics.POLICY_STATUS.name, qos_for(topics.POLICY_STATUS))
        self.plan_pub = self.create_publisher(String, topics.POLICY_PLAN.name, qos_for(topics.POLICY_PLAN))
        self.raw_pub = self.create_publisher(String, topics.POLICY_RAW.name, qos_for(topics.POLICY_RAW))
        self.chunk_pub = self.create_publisher(String, topics.POLICY_CHUNK.name, qos_for(topics.POLICY_CHUNK))
        self.heartbeat_pub = self.create_publisher(Header, topics.POLICY_HEARTBEAT.name, qos_for(topics.POLICY_HEARTBEAT))
        self.create_subscription(String, topics.TASK.name, self._on_task, qos_for(topics.TASK), callback_group=group)
        self.create_subscription(Image, topics.IMAGE.name, self._on_image, qos_for(topics.IMAGE), callback_group=group)
        self.create_subscription(
            String, topics.EXECUTOR_EVENT.name, self._on_event, qos_for(topics.EXECUTOR_EVENT), callback_group=group
        )
        self.create_subscription(String, topics.VERDICT.name, self._on_verdict, qos_for(topics.VERDICT), callback_group=group)
        self.create_timer(1.0 / c.heartbeat_hz, self._heartbeat, callback_group=group)
        self._heartbeat()  # at once, not a timer period after start-up
        self._publish_status(TaskRun("", "", state=topics.IDLE))
        self.get_logger().info("policy ready; waiting for a task on /task")

    @property
    def run(self) -> TaskRun | None:
        return self._run

    # ---- inputs --------------------------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        with self._image_cond:
            self._image = (stamp_ns(msg.header.stamp), msg)
            self._image_cond.notify_all()

    def _on_task(self, msg: String) -> None:
        try:
            request = parse_task_message(msg.data, self.config.max_task_chars)
            with self._lock:
                live = self._run if self._run is not None and not self._run.done else None
            if request.task_id and live is not None and request.task_id == live.task_id:
                raise TaskRejected(f"task id {request.task_id} is the running task's: send another id, or wait for it to end",
                                   request.task_id)
        except TaskRejected as exc:
            self._reject(exc, msg.data[:200] if isinstance(msg.data, str) else "")
            return
        c = self.config
        with self._lock:
            task_id = request.task_id or self._new_id()
            old = self._run
            if old is not None and old.preempt(task_id):
                self._publish_status(old)
            run = TaskRun(task_id, request.instruction, c.max_retries_per_subtask, c.max_cycles, c.move_again_after)
            run.message = "generating subtasks"
            self._run = run
            # plan from a frame taken after the task came, not one from before it (a pre-empted
            # chunk still moving, or the last frame of a camera that has since stopped)
            with self._image_cond:
                self._min_stamp_ns = self._image[0] if self._image is not None else 0
            self._publish_status(run)
        self.get_logger().info(f"task {task_id}: {request.instruction!r}")
        self._submit(self._generate_subtasks, run)

    def _reject(self, exc: TaskRejected, text: str) -> None:
        """Publish a refused task's status. Under the running task's own id the status would read
        as that task ending (the executor would stop its chunks), so it then gets a fresh id."""
        with self._lock:
            live = self._run if self._run is not None and not self._run.done else None
            task_id = exc.task_id if exc.task_id and (live is None or exc.task_id != live.task_id) else self._new_id()
        rejected = TaskRun(task_id, text, state=topics.REJECTED)
        rejected.message = f"task rejected: {exc}"
        self.get_logger().warning(rejected.message)
        self._publish_status(rejected)

    def _on_event(self, msg: String) -> None:
        try:
            d = decode(msg.data, ("event", "task_id", "cycle"))
        except PayloadError:
            return
        if d["event"] not in FINAL_EVENTS:
            return
        with self._lock:
            run = self._run
            if run is None or d["task_id"] != run.task_id:
                return
            if run.executed(d["cycle"], d["event"], str(d.get("reason", ""))):
                after = d.get("after_stamp_ns") or 0
                self._min_stamp_ns = max(self._min_stamp_ns, after if isinstance(after, int) else 0)
                self._publish_status(run)
                if run.needs_chunk:  # a verdict heard before this report was applied
                    self._submit(self._generate_cycle, run)

    def _on_verdict(self, msg: String) -> None:
        try:
            d = decode(msg.data, ("task_id", "cycle", "verdict"))
        except PayloadError:
            return
        with self._lock:
            run = self._run
            if run is None or d["task_id"] != run.task_id:
                return
            if d.get("error") is True:  # the verifier itself failed: more chunks would move the robot unjudged
                changed = run.verifier_failed(d["cycle"], str(d.get("reason", "")))
            elif d["verdict"] not in ("advance", "retry"):  # "yes", "ADVANCE", null: a verifier broken
                changed = run.verifier_failed(d["cycle"], f"a verdict that is neither advance nor retry: {d['verdict']!r}")
            else:
                changed = run.verdict(d["cycle"], d["verdict"] == "advance", str(d.get("reason", "")))
            if not changed:
                return
            self._publish_status(run)
            if run.needs_chunk:
                self._submit(self._generate_cycle, run)

    # ---- model work (worker thread) ------------------------------------------------------

    def _submit(self, fn: Any, run: TaskRun) -> None:
        if not self._closing:
            self._pool.submit(self._guarded, fn, run)

    def _current(self, run: TaskRun) -> bool:
        return run is self._run and not run.done and not self._closing

    def _guarded(self, fn: Any, run: TaskRun) -> None:
        from ..policy.types import PolicyError

        if not self._current(run):
            return  # pre-empted while queued
        try:
            fn(run)
        except PolicyError as exc:
            self._fail(run, f"model failure in stage {exc.stage or '?'}: {exc}")
        except TimeoutError as exc:
            self._fail(run, str(exc))
        except Exception as exc:  # a bug or a broken model: the task fails, the node lives on
            self.get_logger().error(f"policy worker error: {type(exc).__name__}: {exc}")
            self._fail(run, f"policy error: {type(exc).__name__}: {exc}")

    def _fail(self, run: TaskRun, reason: str) -> None:
        with self._lock:
            # closing: the node's own shutdown ended a wait (for a frame, say); that is no failure of the task
            if run is self._run and not self._closing and run.fail(reason):
                self.get_logger().error(f"task {run.task_id} failed: {reason}")
                self._publish_status(run)

    def _wait_image(self, newer_than_ns: int) -> tuple[int, Any]:
        """The latest frame newer than newer_than_ns, as (stamp ns, RGB array); waits for one."""
        from .images import from_msg as image_from_msg

        deadline = monotonic() + self.config.image_timeout_s
        with self._image_cond:
            while self._image is None or self._image[0] <= newer_than_ns:
                remaining = deadline - monotonic()
                if remaining <= 0 or self._closing:
                    unstamped = self._image is not None and self._image[0] == 0
                    raise TimeoutError(
                        f"no {'new ' if newer_than_ns else ''}camera frame on {topics.IMAGE.name} within "
                        f"{self.config.image_timeout_s:g} s"
                        + (" (frames arrive, but with no capture stamp: the camera must stamp them)" if unstamped else "")
                    )
                self._image_cond.wait(min(remaining, 0.2))
            stamp, msg = self._image
        return stamp, image_from_msg(msg)

    def _generate_subtasks(self, run: TaskRun) -> None:
        with self._lock:
            min_stamp = self._min_stamp_ns
        _stamp, image = self._wait_image(min_stamp)
        from ..policy.engine import restart_sampling

        restart_sampling(run.task_id, self.engine)
        result = self.engine.subtasks(image, run.instruction)
        with self._lock:
            if not self._current(run):
                return
            publish_json(self.raw_pub, task_id=run.task_id, cycle=0, stage="subtasks", text=result.raw_text)
            run.parse_failures += int(getattr(result, "parse_failures", 0))
            run.set_subtasks(list(result.subtasks))
            self._publish_status(run, timings=dict(result.timings), tokens=dict(result.tokens))
            ok = run.state == topics.RUNNING
        if ok:
            self._generate_cycle(run)

    def _generate_cycle(self, run: TaskRun) -> None:
        from ..action_language import format_action_chunk

        with self._lock:
            if not self._current(run):
                return
            min_stamp, subtask, index, cycle = self._min_stamp_ns, run.subtask, run.index, run.cycle + 1
            next_subtask, retries = run.next_subtask, run.retries[index]
        stamp, image = self._wait_image(min_stamp)
        result = self.engine.cycle(image, run.instruction, subtask)
        limits = getattr(getattr(self.engine, "config", None), "limits", None)
        text = format_action_chunk(result.chunk, limits) if limits is not None else format_action_chunk(result.chunk)
        with self._lock:
            if not self._current(run):
                return  # pre-empted while the model ran: drop the result
            common = dict(task_id=run.task_id, cycle=cycle, subtask_index=index)
            publish_json(self.raw_pub, **common, stage="plan", text=result.raw_plan)
            publish_json(self.raw_pub, **common, stage="chunk", text=result.raw_chunk)
            publish_json(self.plan_pub, **common, subtask=subtask, plan=result.plan)
            run.chunk_sent(cycle, result.parse_failures)
            publish_json(
                self.chunk_pub,
                **common,
                subtask=subtask,
                next_subtask=next_subtask,
                subtask_retries=retries,
                image_stamp_ns=stamp,
                steps=[[s.dx, s.dy, s.dz, s.gripper] for s in result.chunk.steps],
                text=text,
                plan=result.plan,
                parse_failures=result.parse_failures,
                timings=dict(result.timings),
                tokens=dict(result.tokens),
            )
            self._publish_status(run)

    # ---- outputs -------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"task-{self._id_prefix}-{next(self._ids)}"

    def _publish_status(self, run: TaskRun, **extra: Any) -> None:
        publish_json(self.status_pub, **run.snapshot(), **extra)

    def _heartbeat(self) -> None:
        self._check_overdue()
        msg = Header()
        msg.stamp = self.get_clock().now().to_msg()
        run = self._run
        msg.frame_id = run.task_id if run is not None and not run.done else ""
        self.heartbeat_pub.publish(msg)

    def _check_overdue(self) -> None:
        """Fail the task that has waited too long for the model, the executor or the verifier (on
        the heartbeat's timer: half a second's precision is plenty for limits of minutes). A hung
        model call still holds the worker, so the tasks after it fail the same way, each with
        this reason, instead of waiting for ever."""
        now = monotonic()
        with self._lock:
            run = self._run
            if run is None or run.done:
                return
            phase = (run.cycle, run.phase)
            if self._phase_since[0] is not run or self._phase_since[1] != phase:
                self._phase_since = (run, phase, now)
            c = self.config
            reason = run.overdue(now - self._phase_since[2], c.report_timeout_s, c.verdict_timeout_s, c.generate_timeout_s)
            if reason and run.fail(reason):
                self.get_logger().error(f"task {run.task_id} failed: {reason}")
                self._publish_status(run)

    def destroy_node(self) -> None:
        self._closing = True
        with self._image_cond:
            self._image_cond.notify_all()
        self._pool.shutdown(wait=True)
        if self._owns_engine and hasattr(self.engine, "close"):
            self.engine.close()
        super().destroy_node()


def main(args: list | None = None) -> int:
    return run_node_main(lambda: [PolicyNode()], args=args)


if __name__ == "__main__":
    raise SystemExit(main())
