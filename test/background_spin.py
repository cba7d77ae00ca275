"""Spin nodes in a background thread for a test, and stop them the way the node suite does."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from vlm2vla_ros.nodes.common import stop_executor


@contextmanager
def background_spin(nodes: Sequence[Node], threads: int = 4) -> Iterator[MultiThreadedExecutor]:
    """Yields the executor spinning `nodes`; on exit the loop ends and `stop_executor` lets the
    callbacks already handed to threads finish, so none outlives the test against a destroyed
    executor (rclpy would print "exception was never retrieved" during a later test)."""
    executor = MultiThreadedExecutor(num_threads=threads)
    for node in nodes:
        executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        yield executor
    finally:
        stop.set()
        spinner.join(5)
        stop_executor(executor, timeout_sec=2.0)
