"""camera_node: publishes frames from a device, a video, a folder or the simulator.

Publishes /camera/image_raw (sensor_msgs/Image, rgb8, sensor-data QoS) at `rate_hz`, each
frame rotated (`rotate_deg` clockwise: the RE1 head camera is mounted sideways) and resized,
stamped with `frame_id` and the time the frame was asked of its source, before the read: never
later than the scene it shows, so a frame read before a move never passes for one taken after it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import Image

from .. import topics
from ..frames import FrameSource, FrameSourceError, looks_grey, open_source, transform
from .common import load_config, monotonic, qos_for, run_node_main
from .images import to_msg


@dataclass(frozen=True)
class CameraConfig:
    source: str = "device:0"  # sim | device:N | /dev/videoN | video file | folder of images
    rate_hz: float = 5.0
    rotate_deg: int = 0  # 90 for the RE1 head camera's raw stream
    width: int = 224  # 0 keeps the source's size
    height: int = 224
    frame_id: str = "camera_color_optical_frame"
    loop: bool = True  # replay video files and folders from the start when they end

    def __post_init__(self) -> None:
        if not 0.1 <= self.rate_hz <= 60.0:
            raise ValueError(f"camera rate_hz must be in [0.1, 60], got {self.rate_hz}")
        if self.rotate_deg not in (0, 90, 180, 270):
            raise ValueError(f"camera rotate_deg must be 0, 90, 180 or 270, got {self.rotate_deg}")
        if not (0 <= self.width <= 4096 and 0 <= self.height <= 4096):
            raise ValueError(f"camera width/height must be in [0, 4096], got {self.width}x{self.height}")
        if not self.frame_id:
            raise ValueError("camera frame_id must not be empty")


CLOSE_WAIT_S = 5.0
"""How long shutting down waits for a read under way before leaving the source open."""


class CameraNode(Node):
    def __init__(self, source: FrameSource | None = None, sim_backend: Any = None, **kwargs: Any) -> None:
        super().__init__("camera_node", **kwargs)
        self.config = load_config(self, CameraConfig)
        c = self.config
        try:
            self.source = source or open_source(c.source, c.loop, sim_backend, c.width, c.height)
        except FrameSourceError as exc:
            raise ValueError(f"camera_node: {exc}") from None
        self.pub = self.create_publisher(Image, topics.IMAGE.name, qos_for(topics.IMAGE))
        self.frames = 0
        self._no_frame_since: float | None = None  # monotonic time of the first missing frame
        self._paused = False
        self._closing = False  # destroy_node has begun: a read that ends now publishes nothing
        self._tick_lock = threading.Lock()  # stop_publishing waits for a tick under way
        self.timer = self.create_timer(1.0 / c.rate_hz, self._tick)
        self.get_logger().info(f"publishing {self.source.name} on {topics.IMAGE.name} at {c.rate_hz} Hz")

    def _tick(self) -> None:
        with self._tick_lock:
            if not self._paused:
                self._publish_frame()

    def _publish_frame(self) -> None:
        c = self.config
        # Stamped before the read: a frame read (or rendered) before a move and stamped after it
        # would pass for one taken after the move, and the verifier would judge a chunk by the
        # world it started from (the demo did, at random). No frame is stamped later than it shows.
        stamp = self.get_clock().now().to_msg()
        try:
            frame = self.source.read()
        except FrameSourceError as exc:
            frame = None
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
        if frame is not None:
            try:
                frame = transform(frame, c.rotate_deg, c.width, c.height)
            except Exception as exc:  # a malformed frame (shape, type, size) is a missing frame, not the camera's end
                frame = None
                self.get_logger().error(f"{self.source.name} gave a frame that cannot be used ({type(exc).__name__}: "
                                        f"{exc}); skipped", throttle_duration_sec=5.0)
        if frame is None:
            if self._no_frame_since is None:
                self._no_frame_since = monotonic()
            # said again every 10 s while it lasts: a stopped camera is the first thing to look for
            self.get_logger().warning(
                f"{self.source.name} gave no frame for {monotonic() - self._no_frame_since:.0f} s; nothing is "
                "published until it does", throttle_duration_sec=10.0)
            return
        if self._closing:  # the publisher is being destroyed under this read
            return
        if self._no_frame_since is not None:
            self.get_logger().info(f"{self.source.name} gives frames again")
        self._no_frame_since = None
        if self.frames == 0 and looks_grey(frame):
            self.get_logger().warning(
                f"{self.source.name}'s first frame is grey (its three channels are the same): is it an infrared or "
                "depth stream? The policy reads colours; give the colour stream's device (see `v4l2-ctl --list-devices`)")
        self.pub.publish(to_msg(frame, stamp, c.frame_id))
        self.frames += 1

    def stop_publishing(self) -> None:
        """Publish no frame after this returns (tests use it to starve the watchdogs).

        Cancelling the timer alone is not enough: a tick already taken by the executor (or
        waiting in its thread pool) would still publish one frame, late."""
        with self._tick_lock:
            self._paused = True
            self.timer.cancel()

    def resume_publishing(self) -> None:
        with self._tick_lock:
            self._paused = False
            self.timer.reset()

    def destroy_node(self) -> None:
        """Close the source only once no read is under way: OpenCV's capture is not thread-safe,
        and releasing it beneath a read that hangs on a stalled USB camera can crash the process.
        A read still hung after CLOSE_WAIT_S leaves the device to the process's exit."""
        self._closing = True
        try:
            if self._tick_lock.acquire(timeout=CLOSE_WAIT_S):
                try:
                    self._paused = True
                    self.timer.cancel()
                    self.source.close()
                finally:
                    self._tick_lock.release()
            else:
                self.get_logger().warning(
                    f"{self.source.name} is still reading after {CLOSE_WAIT_S} s; not closed under the read")
        finally:
            super().destroy_node()


def main(args: list | None = None) -> int:
    return run_node_main(lambda: [CameraNode()], args=args)


if __name__ == "__main__":
    raise SystemExit(main())
