"""recorder: writes every rollout topic to a rosbag2 folder with `rosbags` (no ros2 bag needed).

Subscribes raw (serialized CDR) to each topic of topics.ROLLOUT_TOPICS with a QoS that
matches every publisher (recording_qos), stores messages with their receive time, and commits to
disk every `flush_period_s`. close() finishes the bag; the bringup calls it on SIGINT/SIGTERM.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile

from .. import topics
from ..recording import BagWriter
from .common import qos_for


def recording_qos(topic: topics.Topic) -> QoSProfile:
    """The topic's QoS, volatile where it is latched: a latched subscription hears nothing from a
    volatile publisher (an e-stop from a plain `ros2 topic pub` or a teleop button, which the
    executor does act on), and the bag must hold every stop. The bringup makes the recorder
    before the other nodes, so it misses no latched message sent before it joined."""
    qos = qos_for(topic)
    if qos.durability != DurabilityPolicy.TRANSIENT_LOCAL:
        return qos
    return QoSProfile(history=qos.history, depth=qos.depth, reliability=qos.reliability,
                      durability=DurabilityPolicy.VOLATILE)


def _msg_class(msgtype: str) -> Any:
    """'std_msgs/msg/String' -> the rclpy message class."""
    import importlib

    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class RecorderNode(Node):
    def __init__(
        self,
        bag_dir: str | Path,
        rollout_topics: Iterable[topics.Topic] = topics.ROLLOUT_TOPICS,
        flush_period_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__("recorder", **kwargs)
        self.topics = tuple(rollout_topics)
        self.writer = BagWriter(bag_dir, self.topics)
        group = MutuallyExclusiveCallbackGroup()  # one writer: callbacks in order, never at once
        for topic in self.topics:
            self.create_subscription(
                _msg_class(topic.msgtype), topic.name, self._writer_for(topic.name), recording_qos(topic),
                callback_group=group, raw=True,
            )
        self.failure: str | None = None  # said once, loudly: a recording that silently stopped loses a run
        self.create_timer(flush_period_s, self._flush, callback_group=group)
        self.get_logger().info(f"recording {len(self.topics)} topics to {bag_dir}")

    def _flush(self) -> None:
        self.writer.flush()
        if self.writer.error is not None and self.failure is None:
            self.failure = f"{type(self.writer.error).__name__}: {self.writer.error}"
            self.get_logger().error(f"RECORDING FAILED ({self.failure}): the bag {self.writer.path} is not being written "
                                    "(a full disk?); stop the run, or its messages from now on are lost")

    def _writer_for(self, name: str) -> Any:
        def write(data: bytes) -> None:
            self.writer.write(name, data, self.get_clock().now().nanoseconds)

        return write

    def close(self) -> Path | None:
        return self.writer.close()

    def destroy_node(self) -> None:
        try:
            self.close()
        finally:  # a bag that failed still leaves the node destroyed (its error is raised)
            super().destroy_node()
