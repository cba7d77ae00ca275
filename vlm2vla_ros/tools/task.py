"""vlm2vla-task: send one task to the running graph and follow it to the end.

    vlm2vla-task "put the red block in the bowl" --timeout 300

Publishes the instruction on /task (as JSON with its own task id, once the policy's
subscription is matched), then prints the subtasks, each cycle's plan and chunk, the
executor's reports and the verifier's verdicts as they arrive. Works against the robot or
the simulator, whichever graph is running on this ROS_DOMAIN_ID.

Exit code: 0 the policy reports the task succeeded; 1 it failed, was rejected or pre-empted,
or the timeout passed; 2 bad arguments, or an --id an earlier task on this graph used (its
latched status would be read as this task's result).
Ctrl-C once the task is sent stops the robot: it sends the e-stop (/executor/estop true, which
latches until a latched false releases it) and waits up to 3 s for the executor to report it
stopped; a second Ctrl-C leaves without waiting, and with --no-estop Ctrl-C only ends the
following. Only Ctrl-C (SIGINT) sends it: SIGTERM and the timeout end the following, not the
task.
Note: "succeeded" is the policy's state after the verifier advanced through every subtask;
on the simulator, vlm2vla-demo reports the simulator's own success check instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from .. import topics

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ESTOP_CONFIRM_S = 3.0
RELEASE = ("ros2 topic pub --once -w 2 --qos-durability transient_local /executor/estop "
           "std_msgs/msg/Bool '{data: false}'")


def parse_args(argv: list | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vlm2vla-task", description="Send a task to the vlm2vla graph and follow it.")
    ap.add_argument("task", help="the instruction, e.g. \"put the red block in the bowl\"")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up (default %(default)s)")
    ap.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to wait for the policy to listen")
    ap.add_argument("--id", default=None, help="task id to use (default: generated)")
    ap.add_argument("--quiet", action="store_true", help="print only the final line")
    ap.add_argument("--no-estop", action="store_true",
                    help="Ctrl-C only stops following the task (default: Ctrl-C sends the e-stop)")
    return ap.parse_args(argv)


class Follower:
    """Prints what happens to one task id; `result` is set when it ends."""

    def __init__(self, node: Any, task_id: str, quiet: bool) -> None:
        from std_msgs.msg import Bool, String

        from ..nodes.common import qos_for

        self.node, self.task_id, self.quiet = node, task_id, quiet
        self.done = threading.Event()
        self.result: dict | None = None
        self.sent = False
        self.used_before = False  # a status under this id came before the task was sent (a reused --id)
        self._subtasks_shown = False
        self.executor_state = ""
        self.statuses_heard = 0
        self.task_pub = node.create_publisher(String, topics.TASK.name, qos_for(topics.TASK))
        self.estop_pub = node.create_publisher(Bool, topics.ESTOP.name, qos_for(topics.ESTOP))
        node.create_subscription(String, topics.EXECUTOR_STATUS.name, self._executor_status, qos_for(topics.EXECUTOR_STATUS))
        for topic, fn in (
            (topics.POLICY_STATUS, self._status),
            (topics.POLICY_CHUNK, self._chunk),
            (topics.EXECUTOR_EVENT, self._event),
            (topics.VERDICT, self._verdict),
        ):
            node.create_subscription(String, topic.name, self._mine(fn), qos_for(topic))

    def _mine(self, fn: Any) -> Any:
        def callback(msg: Any) -> None:
            try:
                d = topics.decode(msg.data, ("task_id",))
            except topics.PayloadError:
                return
            if d["task_id"] == self.task_id:
                fn(d)

        return callback

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _status(self, d: dict) -> None:
        if not self.sent:  # (/policy/status is latched: an earlier task's under this id, not ours)
            self.used_before = True
            return
        if d.get("subtasks") and not self._subtasks_shown:
            self._subtasks_shown = True
            self.say("subtasks:")
            for i, s in enumerate(d["subtasks"], 1):
                self.say(f"  {i}. {s}")
        if d.get("state") in topics.TERMINAL_STATES:
            self.result = d
            self.done.set()

    def _chunk(self, d: dict) -> None:
        index = d.get("subtask_index")
        number = index + 1 if isinstance(index, int) and not isinstance(index, bool) else "?"
        self.say(f"cycle {d.get('cycle')} [subtask {number}: {d.get('subtask', '')}]")
        self.say(f"  plan:  {d.get('plan', '')}")
        self.say(f"  chunk: {d.get('text', '')}")

    def _event(self, d: dict) -> None:
        if d.get("event") == "started":
            return
        reason = f": {d['reason']}" if d.get("reason") else ""
        self.say(f"  executor: {d.get('event')} ({d.get('steps_executed', 0)}/{d.get('steps_total', 0)} steps){reason}")

    def _executor_status(self, msg: Any) -> None:
        try:
            self.executor_state = str(topics.decode(msg.data).get("state", ""))
        except topics.PayloadError:
            return
        self.statuses_heard += 1

    def _verdict(self, d: dict) -> None:
        self.say(f"  verifier: {d.get('verdict')} ({d.get('reason', '')})")

    def send(self, instruction: str) -> None:
        from std_msgs.msg import String

        self.sent = True
        self.task_pub.publish(String(data=topics.encode_task(instruction, self.task_id)))

    def estop(self, executor: Any) -> bool:
        """Send the e-stop; True once the executor reports it stopped in a status that came after
        it (the latched one may be an earlier e-stop's, or a dead executor's last word)."""
        from std_msgs.msg import Bool

        heard = self.statuses_heard

        def confirmed() -> bool:
            return self.statuses_heard > heard and self.executor_state == "estopped"

        self.estop_pub.publish(Bool(data=True))
        deadline = time.monotonic() + ESTOP_CONFIRM_S
        while not confirmed() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return confirmed()


def main(argv: list | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.task.strip():
        print("error: the task is empty", file=sys.stderr)
        return EXIT_USAGE
    if not args.timeout > 0 or not args.connect_timeout > 0:
        print("error: --timeout and --connect-timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    from ..rollout import TASK_ID_RE

    task_id = args.id or f"cli-{os.getpid()}-{int(time.time())}"
    if not TASK_ID_RE.fullmatch(task_id):
        print("error: --id must be 1-64 letters, digits or _ . : -", file=sys.stderr)
        return EXIT_USAGE

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    interrupted = threading.Event()

    def on_sigint(_sig: int, _frame: Any) -> None:
        """The first Ctrl-C is noted (the loops below send the e-stop); a second one leaves at once.
        (rclpy's own handler would shut the context down before the e-stop could go out.)"""
        interrupted.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    node = rclpy.create_node(f"vlm2vla_task_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        follower = Follower(node, task_id, args.quiet)
        deadline = time.monotonic() + args.connect_timeout
        follower.say(f"waiting for the policy to listen on {topics.TASK.name} ...")
        while follower.task_pub.get_subscription_count() == 0 and not interrupted.is_set():
            if time.monotonic() > deadline:
                print(f"error: nothing subscribes to {topics.TASK.name} (is the policy running on this "
                      f"ROS_DOMAIN_ID?)", file=sys.stderr)
                return EXIT_FAILED
            executor.spin_once(timeout_sec=0.1)
        if args.id and not interrupted.is_set():  # an earlier task's latched statuses under this id come now
            settle = time.monotonic() + 0.5
            while time.monotonic() < settle and not interrupted.is_set():
                executor.spin_once(timeout_sec=0.1)
            if follower.used_before:
                print(f"error: task id {task_id} was used before on this graph; give a new --id "
                      "(its result would be mixed with the earlier task's)", file=sys.stderr)
                return EXIT_USAGE
        if interrupted.is_set():
            print("interrupted before the task was sent", file=sys.stderr)
            return EXIT_FAILED
        follower.send(args.task)
        follower.say(f"task {task_id}: {args.task.strip()}")
        deadline = time.monotonic() + args.timeout
        while not follower.done.is_set() and time.monotonic() < deadline and not interrupted.is_set():
            executor.spin_once(timeout_sec=0.1)
        if interrupted.is_set() and not follower.done.is_set():
            if args.no_estop:
                print(f"interrupted: no longer following task {task_id}; the robot goes on", file=sys.stderr)
            elif follower.estop(executor):
                print("interrupted: e-stop sent and the executor reports it stopped. On the Stretch, a person "
                      f"releases the runstop on the robot; then release the e-stop with: {RELEASE}", file=sys.stderr)
            else:
                print(f"interrupted: e-stop published to {follower.estop_pub.get_subscription_count()} subscriber(s), "
                      f"but no executor confirmed it within {ESTOP_CONFIRM_S:g} s (last state heard: "
                      f"{follower.executor_state or 'none'}); check the robot", file=sys.stderr)
            return EXIT_FAILED
        result = follower.result
        if result is None:
            print(f"FAILED: no result within {args.timeout:g} s", flush=True)
            return EXIT_FAILED
        ok = result.get("state") == topics.SUCCEEDED
        print(f"{'SUCCEEDED' if ok else result.get('state', '?').upper()}: {result.get('message', '')}", flush=True)
        return EXIT_OK if ok else EXIT_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C
        print("interrupted again: left without waiting", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
