"""The shared spin loop's end: callbacks the executor already handed to its threads finish
before the executor is shut down, so none runs against a destroyed guard condition (rclpy
then prints "The following exception was never retrieved: cannot use Destroyable ..." at exit,
and a callback that was under way is cut off)."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import threading
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
rclpy = pytest.importorskip("rclpy")

from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402

from vlm2vla_ros.nodes.common import Shutdown, spin_until, stop_executor  # noqa: E402

pytestmark = [pytest.mark.ros]


def test_callbacks_handed_to_threads_finish_before_shutdown():
    rclpy.init()
    node = rclpy.create_node("spin_end_probe")
    group = ReentrantCallbackGroup()  # more ready callbacks than threads: some wait in the pool
    started, finished = [], []
    lock = threading.Lock()

    def slow(name):
        def cb():
            with lock:
                started.append(name)
            time.sleep(0.05)
            with lock:
                finished.append(name)
        return cb

    for name in "abcd":
        node.create_timer(0.001, slow(name), callback_group=group)
    gc.collect()  # garbage from earlier tests must not print into the stderr captured below
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            for _ in range(10):  # the race needs a callback queued at the moment the loop ends
                calls = iter(range(8))  # done after 8 turns of the loop: more handed off than threads
                executor = spin_until([node], Shutdown(), done=lambda calls=calls: next(calls, None) is None, threads=2)
                stop_executor(executor, timeout_sec=2.0)
                with lock:
                    assert sorted(started) == sorted(finished), "a callback was still running after stop_executor"
                del executor
                gc.collect()
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert "never retrieved" not in stderr.getvalue(), stderr.getvalue()
    assert len(started) >= 10


def test_a_second_signal_during_the_stop_does_not_stop_again():
    """Ctrl-C twice: the second signal runs its handler inside the first one's stop, on the same
    thread; stopping again there would wait for ever on the locks the first stop holds."""
    import signal

    shutdown = Shutdown()
    stops = []

    def stop_robot():
        stops.append(len(stops))
        shutdown._handle(signal.SIGINT, None)  # as the interpreter runs a handler between two bytecodes

    shutdown.urgent.append(stop_robot)
    shutdown._handle(signal.SIGTERM, None)
    assert stops == [0] and shutdown.signal == signal.SIGTERM and shutdown.event.is_set()
