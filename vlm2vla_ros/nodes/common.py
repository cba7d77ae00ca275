"""What every node shares: QoS profiles, config dataclasses from ROS parameters, JSON topics,
stamps, and a spin loop that stops the robot first on SIGINT/SIGTERM.

Only rclpy APIs that exist in ROS 2 Humble are used here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor, TimeoutException
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from std_msgs.msg import String

from ..shipped import package_path
from ..topics import EVENTS, LATCHED, SENSOR, Topic, encode

T = TypeVar("T")

EVENTS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# Latched topics keep their last 20 messages: late joiners get the recent history (the last
# message is the current state), and a burst (pre-empted + new task) is never squashed.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=20, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def qos_for(topic: Topic) -> QoSProfile:
    return {SENSOR: qos_profile_sensor_data, EVENTS: EVENTS_QOS, LATCHED: LATCHED_QOS}[topic.qos]


def config_path(name: str) -> str:
    """A file in the package's config/ folder."""
    return str(package_path("config", name))


def load_config(node: Node, cls: type[T]) -> T:
    """Declare one ROS parameter per dataclass field (its default as default) and build cls.

    Parameters are dynamically typed so `rate_hz: 5` in YAML works for a float field; values
    are coerced to the field's default's type, and cls's own checks (if any) then run. A value
    that cannot be coerced raises ValueError naming the parameter, and so does a value given for a
    name that is not a field (a typo in the YAML). They are read once, here, so
    they are declared read-only: `ros2 param set /executor_node dry_run true` on a running node
    is refused instead of reporting success while the robot keeps moving.
    """
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        node.declare_parameter(f.name, default, ParameterDescriptor(dynamic_typing=True, read_only=True))
        value = node.get_parameter(f.name).value
        values[f.name] = _coerce(value, default, f.name, node.get_name())
    # rclpy drops a value given for a name the node never declares: a misspelt `dry_run` would
    # leave the robot moving. (_parameter_overrides: the YAML's and the constructor's values, in
    # Humble's rclpy as in later ones; qos_overrides.* belong to rclpy.)
    unknown = sorted(name for name in getattr(node, "_parameter_overrides", {})
                     if not node.has_parameter(name) and not name.startswith("qos_overrides."))
    if unknown:
        raise ValueError(f"{node.get_name()} has no parameter {', '.join(unknown)} (a typo?); its parameters: "
                         + ", ".join(values))
    return cls(**values)  # type: ignore[call-arg]


def _coerce(value: Any, default: Any, name: str, node_name: str) -> Any:
    if value is None:
        return default
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError(f"{value!r} is not true or false")
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"{value!r} is not an integer")
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not a number")
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter {node_name}.{name}: {exc}") from None
    return value


def publish_json(pub: Any, **fields: Any) -> str:
    text = encode(**fields)
    pub.publish(String(data=text))
    return text


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class Shutdown:
    """SIGINT/SIGTERM: run the urgent callbacks (stop the robot) at once, then end the spin."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.urgent: list[Callable[[], None]] = []
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        # A second signal (Ctrl-C twice, or the launcher passing one on) lands in the middle of
        # the first one's stop, on the same thread: stopping again there would wait for ever on
        # the locks that stop holds, before the runstop went out. The first stop carries on.
        if self.signal is not None:
            return
        self.signal = signum
        for fn in self.urgent:
            with contextlib.suppress(Exception):  # stopping goes on with the next callback
                fn()
        self.event.set()


def spin_until(
    nodes: Sequence[Node],
    shutdown: Shutdown,
    done: Callable[[], bool] | None = None,
    threads: int = 4,
) -> MultiThreadedExecutor:
    """Spin all nodes in one MultiThreadedExecutor until a signal (or done() is true)."""
    executor = MultiThreadedExecutor(num_threads=threads)
    for node in nodes:
        executor.add_node(node)
    while not shutdown.event.is_set() and rclpy.ok() and not (done is not None and done()):
        executor.spin_once(timeout_sec=0.1)
    return executor


def stop_executor(executor: MultiThreadedExecutor, timeout_sec: float = 1.0) -> None:
    """Let the callbacks the executor already handed to its threads finish (up to timeout_sec),
    then shut it down; a callback's exception is raised, as spin_once would have raised it.

    rclpy's shutdown destroys the executor's guard condition without waiting for callbacks
    still queued in its thread pool (rclpy 9 does not wait even for running ones): such a
    callback then fails on the destroyed guard, and rclpy prints "The following exception was
    never retrieved" at exit. The queued callbacks are only reachable through the executor's
    list of handed-off tasks (`_futures`, in Humble as in later releases).
    """
    pending = list(getattr(executor, "_futures", ()))
    deadline = time.monotonic() + timeout_sec
    while any(not task.done() for task in pending) and time.monotonic() < deadline:
        time.sleep(0.01)
    executor.shutdown(timeout_sec=max(0.0, deadline - time.monotonic()))
    for task in pending:
        if task.done() and task.exception() is not None:
            raise task.exception()


def drain(node: Node, limit_s: float = 2.0) -> int:
    """Run the callbacks `node` has waiting now (messages DDS already delivered), then return.

    A signal ends the spin at once, so a recorder can be a few messages behind; draining it
    alone before the bag closes keeps them, and no other node (the executor) runs again. The
    time limit bounds it when publishers elsewhere keep sending. Returns the callbacks run.
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    ran = 0
    idle = False  # a zero-timeout wait also ends after the work it found: stop on two in a row
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            try:
                handler, _entity, _node = executor.wait_for_ready_callbacks(timeout_sec=0)
            except TimeoutException:
                if idle:
                    break
                idle = True
                continue
            idle = False
            handler()
            if handler.exception() is not None:
                raise handler.exception()
            ran += 1
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0)
    return ran


def run_node_main(
    make_nodes: Callable[[], Iterable[Node]],
    urgent: Callable[[list[Node]], Iterable[Callable[[], None]]] = lambda nodes: (),
    args: list[str] | None = None,
) -> int:
    """The main() of a node executable: init, build, spin, stop safely, clean up."""
    rclpy.init(args=args)
    shutdown = Shutdown()
    nodes: list[Node] = []
    code = 0
    try:
        nodes = list(make_nodes())
        shutdown.urgent.extend(urgent(nodes))
        shutdown.install()
        stop_executor(spin_until(nodes, shutdown))
    except (ValueError, RuntimeError, OSError) as exc:
        # Configuration and start-up errors: one clear line, non-zero exit.
        print(f"error: {exc}", flush=True)
        code = 1
    finally:
        for fn in shutdown.urgent:
            with contextlib.suppress(Exception):
                fn()
        for node in reversed(nodes):
            with contextlib.suppress(Exception):
                node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


def monotonic() -> float:
    return time.monotonic()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
