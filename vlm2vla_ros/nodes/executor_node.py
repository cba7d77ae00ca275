"""executor_node: validates and executes action chunks on the Stretch (stretch_body) or the sim.

Subscribes /policy/action_chunk, /camera/image_raw (liveness + before/after stamps),
/policy/heartbeat, /policy/status (pre-emption) and /executor/estop; publishes
/executor/event and /executor/status. All checking and motion is done by
robot.executor.ChunkExecutor, and which chunks may start is robot.gate.ChunkGate's answer
(e-stop latch, ended tasks, stale frames); this node only decides *when* to abort:
- e-stop true on /executor/estop (acts at once, mid-chunk; chunks are refused until false);
- watchdog: no image received, or none captured, in the last `watchdog_timeout_s` (the capture
  stamp is read on the executor's clock, as on the robot), or no policy heartbeat for
  `heartbeat_timeout_s`;
- the chunk's task was pre-empted or ended; node shutdown, SIGINT or SIGTERM.
A chunk planned from a frame more than `max_chunk_image_age_s` older than the newest camera
frame is refused before it starts (a stalled policy, a chunk replayed from a bag).
With backend "sim" and `sim_camera: true` it also renders and publishes the simulated head
camera, so the robot half of the graph can run the sim in one process without camera_node.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Header, String

from .. import topics
from ..checks import positive, real
from ..robot.embodiment import EmbodimentConfig
from ..robot.gate import ChunkGate
from ..robot.safety import camera_frame_problem
from ..rollout import ChunkOrder, parse_chunk_payload
from ..sim.views import TABLE_VIEW, check_view, image_size_problem
from ..topics import PayloadError, decode
from .common import (
    EVENTS_QOS,
    config_path,
    load_config,
    monotonic,
    publish_json,
    qos_for,
    run_node_main,
    stamp_ns,
)

IDLE, EXECUTING, ESTOPPED, FAULT = "idle", "executing", "estopped", "fault"


@dataclass(frozen=True)
class ExecutorNodeConfig:
    backend: str = "sim"  # sim | stretch_body
    robot_config: str = ""  # embodiment + safety YAML; '' = the package's config/stretch_re1.yaml
    dry_run: bool = False  # plan and report every chunk, move nothing
    watchdog_timeout_s: float = 2.0  # no camera frame for this long while executing -> stop
    watchdog_checks_stamp: bool = True  # a frame's age is also counted from its capture stamp (same clock)
    heartbeat_timeout_s: float = 5.0  # no policy heartbeat for this long while executing -> stop (0: off)
    after_image_timeout_s: float = 3.0  # wait this long for a frame taken after the chunk
    max_chunk_image_age_s: float = 30.0  # refuse a chunk planned from a frame this much older than the newest (0: off)
    sim_camera: bool = False  # backend sim: also publish the rendered head camera
    sim_camera_rate_hz: float = 5.0
    image_width: int = 224
    image_height: int = 224
    frame_id: str = "camera_color_optical_frame"
    sim_seed: int = 0  # backend sim without a shared world: scene of this seed ...
    sim_task_kind: str = ""  # ... and task kind ('' = drawn from the seed)
    sim_time_scale: float = 0.0  # >0: sim moves take this fraction of their real duration
    sim_action_scale: float = 1.0  # backend sim: the robot config's action_scale in its place (see below)
    sim_view: str = ""  # the sim camera: table | gripper | '' = the policy model's own (else table)

    def __post_init__(self) -> None:
        if self.backend not in ("sim", "stretch_body"):
            raise ValueError(f"executor backend must be 'sim' or 'stretch_body', got {self.backend!r}")
        if self.sim_view:
            check_view(self.sim_view)
        for name in ("watchdog_timeout_s", "after_image_timeout_s", "sim_camera_rate_hz"):
            positive(getattr(self, name), f"executor {name}")
        real(self.heartbeat_timeout_s, "executor heartbeat_timeout_s", lo=0.0)
        real(self.max_chunk_image_age_s, "executor max_chunk_image_age_s", lo=0.0)
        positive(self.sim_action_scale, "executor sim_action_scale", hi=1.0)
        problem = image_size_problem(self.image_width, self.image_height)
        if problem:  # the simulated camera's size, the only use of these
            raise ValueError(f"executor image_width/image_height: {problem}")
        if self.sim_camera and self.backend != "sim":
            raise ValueError("executor sim_camera needs backend 'sim'")


def executed_embodiment(config: ExecutorNodeConfig, embodiment: EmbodimentConfig, backend: Any) -> EmbodimentConfig:
    """The embodiment chunks are executed with. The robot config's action_scale (0.3 as shipped)
    throttles a first run on hardware; the simulated Stretch, where the models are trained and
    evaluated moving by the whole chunk, takes sim_action_scale (1.0) instead, or a policy that
    reaches its block in the experiment's closed loop falls short of it in the demo. Only a
    backend that is the simulator, by configuration and by type, gets it: hardware never does."""
    from ..sim.backend import SimBackend

    if config.backend != "sim" or not isinstance(backend, SimBackend):
        return embodiment
    return replace(embodiment, action_scale=config.sim_action_scale)


STOP_GRACE_S = 2.0
"""Beyond after_image_timeout_s, how long a new task's chunk waits for the pre-empted task's
chunk to stop and report before it is refused as "still executing"."""
HEAD_AIM_DELAY_S = 1.0
"""The start-up head aim waits this long after the node starts spinning, so that a latched
e-stop (someone stopped the robot before this executor started) has arrived and keeps the head
still too."""


class ExecutorNode(Node):
    def __init__(self, backend: Any = None, **kwargs: Any) -> None:
        super().__init__("executor_node", **kwargs)
        self.config = c = load_config(self, ExecutorNodeConfig)
        from ..robot.config import RobotConfig
        from ..robot.executor import ChunkExecutor

        robot_cfg = RobotConfig.from_yaml(c.robot_config or config_path("stretch_re1.yaml"))
        self._owns_backend = backend is None
        self.backend = backend if backend is not None else self._make_backend(robot_cfg)
        self.chunks = ChunkExecutor(
            self.backend, executed_embodiment(c, robot_cfg.embodiment, self.backend), robot_cfg.safety, dry_run=c.dry_run,
            head=robot_cfg.head,
        )

        self._lock = threading.Lock()  # guards the gate and the running chunk
        self.gate = ChunkGate(c.max_chunk_image_age_s)
        self._current: ChunkOrder | None = None
        self._abort_reason = ""
        self._worker: threading.Thread | None = None
        self._motion = threading.Lock()  # one mover at a time: the start-up head aim, or a chunk
        self._shutting_down = False
        self._last_image: tuple[int, float] | None = None  # (stamp ns, receive time)
        self._image_cond = threading.Condition()
        self._last_heartbeat = 0.0
        self._last_event = ""
        self._status_text = ""

        fast = ReentrantCallbackGroup()
        self.event_pub = self.create_publisher(String, topics.EXECUTOR_EVENT.name, qos_for(topics.EXECUTOR_EVENT))
        self.status_pub = self.create_publisher(String, topics.EXECUTOR_STATUS.name, qos_for(topics.EXECUTOR_STATUS))
        self.create_subscription(
            String, topics.POLICY_CHUNK.name, self._on_chunk, qos_for(topics.POLICY_CHUNK),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        # DDS gives a latched (transient-local) subscription nothing from a volatile publisher, such
        # as a plain `ros2 topic pub` or a teleop button: a volatile subscription hears those, and may
        # only stop. A latched publisher's messages come on both, one callback at a time, the volatile
        # one first (made first), so a stop's second copy is taken before a release sent after it.
        estop_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Bool, topics.ESTOP.name, self._on_volatile_estop, EVENTS_QOS, callback_group=estop_group)
        self.create_subscription(Bool, topics.ESTOP.name, self._on_estop, qos_for(topics.ESTOP), callback_group=estop_group)
        self.create_subscription(Image, topics.IMAGE.name, self._on_image, qos_for(topics.IMAGE), callback_group=fast)
        self.create_subscription(
            Header, topics.POLICY_HEARTBEAT.name, self._on_heartbeat, qos_for(topics.POLICY_HEARTBEAT), callback_group=fast
        )
        self.create_subscription(
            String, topics.POLICY_STATUS.name, self._on_policy_status, qos_for(topics.POLICY_STATUS), callback_group=fast
        )
        self.create_timer(0.5, self._publish_status, callback_group=fast)
        if c.sim_camera:
            self.image_pub = self.create_publisher(Image, topics.IMAGE.name, qos_for(topics.IMAGE))
            self.create_timer(1.0 / c.sim_camera_rate_hz, self._publish_sim_frame, callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_status()
        mode = "DRY RUN, nothing moves" if c.dry_run else "live"
        self._head_aim_due: float | None = None  # set by the timer's first tick, when spinning has begun
        self._head_timer = self.create_timer(0.25, self._aim_head_at_start, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"executor ready: backend {self.backend.name} ({mode})")

    def _aim_head_at_start(self) -> None:
        """Head tracking: look at the gripper before the policy's first image; every chunk that
        runs to its end aims it again. Once, from a timer of its own, when the latched e-stop has
        had HEAD_AIM_DELAY_S of spinning to arrive (counted from the timer's first tick: a node
        built long before it spins, as the bringup's is while the model loads, would otherwise
        find its timer overdue at once). An e-stop during the aim is handled at once (it stops
        the head too); a chunk waits for the aim, and a chunk already running skips it (its end
        aims the head). A refusal is logged, not fatal: the first chunk then meets it too."""
        now = monotonic()
        if self._head_aim_due is None:
            self._head_aim_due = now + HEAD_AIM_DELAY_S
            return
        if now < self._head_aim_due:
            return
        self._head_timer.cancel()
        if not self._motion.acquire(blocking=False):
            return  # a chunk is running
        try:
            if self.gate.estopped:
                self.get_logger().info("head not aimed at start-up: the e-stop is engaged")
                return
            pose = self.chunks.aim_head()
        except Exception as exc:  # runstopped, not homed, a Dynamixel error
            self.get_logger().warning(f"could not aim the head at the gripper at start-up: {exc}")
            return
        finally:
            self._motion.release()
        if pose is not None:
            self.get_logger().info(f"head aimed at the gripper: pan {pose.pan_rad:.2f}, tilt {pose.tilt_rad:.2f} rad")

    def _make_backend(self, robot_cfg: Any) -> Any:
        from ..robot.factory import make_backend

        c = self.config
        if c.backend == "sim":
            from ..sim.scene import make_scene

            world, _task = make_scene(c.sim_seed, c.sim_task_kind or None)
            return make_backend("sim", robot_cfg, world=world, time_scale=c.sim_time_scale, view=c.sim_view or TABLE_VIEW)
        return make_backend("stretch_body", robot_cfg)

    # ---- inputs --------------------------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        with self._image_cond:
            self._last_image = (stamp_ns(msg.header.stamp), monotonic())
            self._image_cond.notify_all()

    def _on_heartbeat(self, _msg: Header) -> None:
        self._last_heartbeat = monotonic()

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            # under the chunk lock: a chunk being accepted now either sees the e-stop or starts
            # before it and is stopped by it; it never clears the latch set here
            with self._lock:
                again, self.gate.estopped = self.gate.estopped, True
                self.chunks.estop("e-stop received on /executor/estop")
            if not again:  # (a latched publisher's stop comes on both subscriptions)
                self.get_logger().warning("E-STOP: robot stopped; chunks are refused until e-stop is released")
        else:
            with self._lock:
                released, self.gate.estopped = self.gate.estopped, False
            if released:
                self.get_logger().info("e-stop released; the next task may move the robot again")
        self._publish_status()

    def _on_volatile_estop(self, msg: Bool) -> None:
        """A stop from any publisher counts; a release must come latched, on the subscription
        above, so that an executor started later still sees an e-stop that was never released."""
        if msg.data:
            self._on_estop(msg)

    def _on_policy_status(self, msg: String) -> None:
        try:
            d = decode(msg.data, ("task_id", "state"))
        except PayloadError:
            return
        with self._lock:
            running = self._current
            stop = self.gate.policy_status(str(d["task_id"]), str(d["state"]), running.task_id if running else None)
        if stop:
            self._abort(stop)

    def _on_chunk(self, msg: String) -> None:
        try:
            order = parse_chunk_payload(msg.data)
        except (PayloadError, ValueError) as exc:
            self._event(None, "rejected", reason=f"malformed chunk payload: {exc}")
            return
        # A chunk is itself a sign of the policy's life: without this, a fast first chunk that
        # overtakes the first heartbeat was refused as "no heartbeat"; the watchdog still stops
        # the chunk if no heartbeat follows within heartbeat_timeout_s.
        self._last_heartbeat = monotonic()
        with self._lock:
            refused = self._refusal(order)
            stopping, worker = self._current, self._worker
        if not refused and stopping is not None and stopping.task_id != order.task_id and worker is not None:
            # another task's chunk: the policy has moved on (its status saying so may come later, on
            # another topic). The old chunk stops and reports its end (after its "after" frame)
            # first, instead of this first chunk being refused and failing the new task.
            self._abort(f"task {stopping.task_id} was pre-empted by a chunk of task {order.task_id}")
            worker.join(timeout=self.config.after_image_timeout_s + STOP_GRACE_S)
        with self._lock:
            refused = self._refusal(order)
            if not refused and self._current is not None:
                refused = f"cycle {self._current.cycle} is still executing"
            if refused:
                self._event(order, "rejected", reason=refused)
                return
            if self.gate.admit(order.task_id):
                self.chunks.reset_for_new_task()
            self._current = order
            self._abort_reason = ""
            self._worker = threading.Thread(target=self._execute, args=(order,), name="chunk", daemon=True)
            self._worker.start()

    def _refusal(self, order: ChunkOrder) -> str:
        """Why this chunk must not run whatever else is running ('' if nothing), under the lock."""
        newest = self._last_image
        return self.gate.refusal(order.task_id, order.image_stamp_ns, newest[0] if newest else None)

    # ---- execution -----------------------------------------------------------------------

    def _should_abort(self) -> bool:
        reason = self._abort_reason or self._watchdog_problem()
        if reason:
            self._abort(reason)
            return True
        return False

    def _watchdog_problem(self) -> str:
        c = self.config
        now = monotonic()
        if self._shutting_down:
            return "the executor is shutting down"
        if self.gate.estopped:
            return "e-stop received on /executor/estop"
        last = self._last_image
        problem = camera_frame_problem(
            None if last is None else now - last[1], self._captured_age_s(last), c.watchdog_timeout_s, topics.IMAGE.name
        )
        if problem:
            return problem
        if c.heartbeat_timeout_s > 0 and now - self._last_heartbeat > c.heartbeat_timeout_s:
            return (
                f"watchdog: no policy heartbeat on {topics.POLICY_HEARTBEAT.name} for more than "
                f"{c.heartbeat_timeout_s} s (is the policy process gone?)"
            )
        return ""

    def _captured_age_s(self, last: tuple[int, float] | None) -> float | None:
        """Seconds since the frame was captured, on this node's clock (None: unstamped or not checked)."""
        if last is None or last[0] == 0 or not self.config.watchdog_checks_stamp:
            return None
        return (self.get_clock().now().nanoseconds - last[0]) / 1e9

    def _abort(self, reason: str) -> None:
        """Stop the running chunk now (from any thread); the report carries the reason."""
        if self._current is None or (self._worker is None or not self._worker.is_alive()):
            return
        if not self._abort_reason:
            self._abort_reason = reason
            self.get_logger().warning(f"stopping: {reason}")
        self.chunks.estop(reason)

    def _execute(self, order: ChunkOrder) -> None:
        """Run one chunk on the worker thread; whatever goes wrong, the robot is stopped and the
        chunk gets a final event, so the policy is never left waiting on it."""
        try:
            self._run_chunk(order)
        except Exception as exc:  # a bug or a backend failure outside the chunk executor's own checks
            reason = f"executor error: {type(exc).__name__}: {exc}"
            self.chunks.estop(reason)
            self.get_logger().error(reason)
            if self._current is order:
                self._finish(order, "failed", reason=reason, steps_executed=-1, findings=[])

    def _run_chunk(self, order: ChunkOrder) -> None:
        before = self._last_image
        self._event(order, "started", before_stamp_ns=before[0] if before else 0)
        problem = self._watchdog_problem()
        if problem:  # never start moving blind
            self.chunks.estop(problem)
            self._finish(order, "rejected", reason=f"not started: {problem}", steps_executed=0, findings=[],
                         before_stamp_ns=before[0] if before else 0, after_stamp_ns=0)
            return
        with self._motion:
            report = self.chunks.execute(order.chunk, self._should_abort)
        after = self._wait_for_image_after(monotonic(), self.get_clock().now().nanoseconds)
        reason = report.reason
        if report.status not in ("done", "dry_run") and self._abort_reason and self._abort_reason not in reason:
            reason = f"{reason} ({self._abort_reason})"
        self._finish(
            order,
            report.status,
            reason=reason,
            steps_executed=report.steps_executed,
            findings=list(report.findings),
            before_stamp_ns=before[0] if before else 0,
            after_stamp_ns=after,
            start_joints=_joints(report.start),
            end_joints=_joints(report.end),
        )

    def _finish(self, order: ChunkOrder, event: str, **fields: Any) -> None:
        """Free the executor, then report: whoever reacts to the event may send the next chunk."""
        with self._lock:
            self._current = None
        self._event(order, event, **fields)
        self._publish_status()

    def _wait_for_image_after(self, t: float, t_clock_ns: int) -> int:
        """Stamp of the first frame received after monotonic time t and, when stamps are checked,
        captured at or after t_clock_ns on this node's clock (0 if none in time): the verifier
        must judge the scene the chunk left, not one captured while it was still moving."""
        deadline = t + self.config.after_image_timeout_s
        by_stamp = self.config.watchdog_checks_stamp
        with self._image_cond:
            while True:
                last = self._last_image
                if last is not None and last[1] > t and (not by_stamp or last[0] == 0 or last[0] >= t_clock_ns):
                    return last[0]
                remaining = deadline - monotonic()
                if remaining <= 0 or self._shutting_down:
                    return 0
                self._image_cond.wait(min(remaining, 0.1))

    # ---- outputs -------------------------------------------------------------------------

    def _event(self, order: ChunkOrder | None, event: str, **fields: Any) -> None:
        self._last_event = event
        publish_json(
            self.event_pub,
            event=event,
            task_id=order.task_id if order else "",
            cycle=order.cycle if order else -1,
            subtask_index=order.subtask_index if order else -1,
            steps_total=len(order.chunk) if order else 0,
            chunk_image_stamp_ns=order.image_stamp_ns if order else 0,
            **{"reason": "", **fields},
        )
        if event not in ("started", "done", "dry_run"):
            self.get_logger().warning(f"chunk {event}: {fields.get('reason', '')}")

    def state(self) -> str:
        if self.gate.estopped:
            return ESTOPPED
        if self._current is not None:
            return EXECUTING
        return FAULT if self.chunks.fault else IDLE

    def _publish_status(self) -> None:
        hb_age = monotonic() - self._last_heartbeat if self._last_heartbeat else None
        # Publish only when something changed: the status topic is latched and recorded.
        fields = dict(
            state=self.state(),
            estop=self.gate.estopped,
            fault=self.chunks.fault,
            task_id=self.gate.task_id,
            cycle=self._current.cycle if self._current else -1,
            backend=self.backend.name,
            dry_run=self.config.dry_run,
            policy_alive=hb_age is not None
            and (self.config.heartbeat_timeout_s == 0 or hb_age <= self.config.heartbeat_timeout_s),
        )
        text = repr(sorted(fields.items()))
        if text != self._status_text:
            self._status_text = text
            publish_json(self.status_pub, **fields)

    def _publish_sim_frame(self) -> None:
        from .images import to_msg

        stamp = self.get_clock().now().to_msg()  # before the render, as the camera node stamps
        img = self.backend.render(self.config.image_width, self.config.image_height)
        self.image_pub.publish(to_msg(img, stamp, self.config.frame_id))

    # ---- shutdown ------------------------------------------------------------------------

    def stop_robot(self) -> None:
        """Stop all motion now; safe from a signal handler and from any thread."""
        self._shutting_down = True
        self.chunks.estop("executor shutdown")

    def finish_chunk(self, timeout_s: float = 5.0) -> None:
        """Stop the robot and wait for the running chunk's final event (published before this
        returns, so a recorder drained after it has the chunk's end)."""
        self.stop_robot()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=timeout_s)

    def destroy_node(self) -> None:
        self.finish_chunk()
        if self._owns_backend:
            self.backend.close()
        super().destroy_node()


def _joints(j: Any) -> list[float] | None:
    """JointState -> [lift_m, arm_m, base_m, gripper_pct] (None when unknown, or when a reading
    is not a finite number: JSON has no NaN, and the chunk's report must still go out)."""
    if j is None:
        return None
    values = [float(v) for v in (j.lift_m, j.arm_m, j.base_m, j.gripper_pct)]
    return [round(v, 5) for v in values] if all(math.isfinite(v) for v in values) else None


def main(args: list | None = None) -> int:
    return run_node_main(lambda: [ExecutorNode()], urgent=lambda nodes: [n.stop_robot for n in nodes], args=args)


if __name__ == "__main__":
    raise SystemExit(main())
