"""Camera sources and transform (pure), and camera_node publishing a folder over real DDS."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from vlm2vla_ros.frames import FrameSourceError, open_source, transform

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))


def test_transform_rotates_clockwise_and_resizes():
    img = np.zeros((20, 40, 3), np.uint8)
    img[0, 0] = (255, 0, 0)  # top-left red
    out = transform(img, 90)
    assert out.shape == (40, 20, 3) and tuple(out[0, -1]) == (255, 0, 0)  # clockwise: top-left -> top-right
    assert transform(img, 0, 10, 0).shape == (5, 10, 3)
    assert transform(img[:, :, 0], 0).shape == (20, 40, 3)  # grey -> RGB
    with pytest.raises(ValueError, match="rotate_deg"):
        transform(img, 45)
    with pytest.raises(ValueError, match="uint8"):
        transform(img.astype(np.float32), 0)


def test_sources_report_clear_errors(tmp_path):
    with pytest.raises(FrameSourceError, match="another process"):
        open_source("sim")
    with pytest.raises(FrameSourceError, match="does not exist"):
        open_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(FrameSourceError, match="holds no"):
        open_source(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FrameSourceError, match="not a video"):
        open_source(str(tmp_path / "notes.txt"))
    with pytest.raises(FrameSourceError, match="followed by a number"):
        open_source("device:abc")


@pytest.mark.parametrize("width, height", [(16, 224), (224, 31), (224, 5000)])
def test_a_sim_source_of_a_size_the_renderer_cannot_draw_is_refused_when_opened(width, height):
    """Before, the renderer's ValueError escaped the camera's first tick and ended the node."""
    with pytest.raises(FrameSourceError, match="source 'sim': image .* must be an integer from 32 to 4096 pixels, got"):
        open_source("sim", sim_backend=object(), width=width, height=height)
    assert open_source("sim", sim_backend=object(), width=0, height=0).width == 224  # 0: the default size


def test_a_grey_frame_is_told_from_a_colour_one():
    """An infrared stream widened to three channels has them equal everywhere; the camera node
    warns on such a first frame (the policy reads colours)."""
    from vlm2vla_ros.frames import looks_grey

    grey = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 3, axis=2)
    assert looks_grey(grey)
    colour = grey.copy()
    colour[3, 4, 2] += 1  # one pixel of sensor noise in one channel
    assert not looks_grey(colour) and not looks_grey(grey[..., 0])


def test_folder_source_plays_in_order_and_loops(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((8, 8, 3), i * 50, np.uint8))
    src = open_source(str(tmp_path), loop=False)
    assert [int(src.read()[0, 0, 0]) for _ in range(3)] == [0, 50, 100] and src.read() is None
    src = open_source(str(tmp_path), loop=True)
    assert [int(src.read()[0, 0, 0]) for _ in range(4)] == [0, 50, 100, 0]


def test_a_device_that_stops_is_opened_again_and_a_file_is_not(monkeypatch):
    """A USB camera unplugged and plugged back in: after REOPEN_AFTER_FAILURES failed reads the
    device is opened again and its frames come back, without restarting the node."""
    import cv2

    from vlm2vla_ros.frames import REOPEN_AFTER_FAILURES

    opened = []

    class Capture:  # cv2.VideoCapture: the first one dies after a frame, the next ones work
        def __init__(self, target):
            self.target, self.reads, self.settings = target, 0, {}
            opened.append(self)

        def set(self, prop, value):
            self.settings[prop] = value

        def isOpened(self):
            return True

        def read(self):
            self.reads += 1
            alive = len(opened) > 1 or self.reads == 1
            return (True, np.full((4, 4, 3), len(opened), np.uint8)) if alive else (False, None)

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    device = open_source("device:0", loop=False)
    assert int(device.read()[0, 0, 0]) == 1  # the first capture's frame
    assert [device.read() for _ in range(REOPEN_AFTER_FAILURES)] == [None] * REOPEN_AFTER_FAILURES
    assert [c.target for c in opened] == [0, 0] and device.reopened == 1
    assert int(device.read()[0, 0, 0]) == 2  # frames again, from the device opened anew
    # a device queues one frame, opened anew too: a frame read is at most one frame old
    assert [c.settings for c in opened] == [{cv2.CAP_PROP_BUFFERSIZE: 1}] * 2
    opened.clear()
    video = open_source("/dev/video3", loop=False)
    video.read()
    assert [video.read() for _ in range(REOPEN_AFTER_FAILURES)] == [None] * REOPEN_AFTER_FAILURES
    assert len(opened) == 2 and video.reopened == 1


@pytest.mark.ros
def first_images(cam, timeout_s=10.0):
    """The images a probe node hears on the image topic while the camera node is spun, up to
    the first one (empty if none within timeout_s)."""
    import rclpy
    from sensor_msgs.msg import Image

    from vlm2vla_ros import topics
    from vlm2vla_ros.nodes.common import qos_for

    probe = rclpy.create_node("camera_probe")
    got = []
    probe.create_subscription(Image, topics.IMAGE.name, got.append, qos_for(topics.IMAGE))
    try:
        deadline = time.monotonic() + timeout_s
        while not got and time.monotonic() < deadline:
            rclpy.spin_once(cam, timeout_sec=0.05)
            rclpy.spin_once(probe, timeout_sec=0.05)
    finally:
        probe.destroy_node()
    return got


def test_a_malformed_frame_is_skipped_and_the_camera_goes_on():
    """A frame of the wrong shape or type is logged and skipped like a missing one; the node
    keeps publishing the good frames that follow."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from vlm2vla_ros.frames import FrameSource
    from vlm2vla_ros.nodes.camera_node import CameraNode

    class Frames(FrameSource):
        name = "malformed then good"

        def __init__(self):
            self.sequence = [np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 3), np.float32)]

        def read(self):
            return self.sequence.pop(0) if self.sequence else np.full((8, 8, 3), 7, np.uint8)

    owns = not rclpy.ok()
    if owns:
        rclpy.init()
    try:
        source = Frames()
        cam = CameraNode(source=source, parameter_overrides=[Parameter("width", value=0), Parameter("height", value=0),
                                                             Parameter("rate_hz", value=20)])
        got = first_images(cam)
        assert got and not source.sequence and cam.frames >= 1  # both bad frames read, skipped, and the good ones sent
        assert (got[0].height, got[0].width, bytes(got[0].data[:3])) == (8, 8, bytes([7, 7, 7]))
        cam.destroy_node()
    finally:
        if owns:
            rclpy.shutdown()


def test_a_video_file_that_ends_is_not_opened_again(tmp_path):
    import cv2

    from vlm2vla_ros.frames import REOPEN_AFTER_FAILURES

    path = str(tmp_path / "two.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (8, 8))
    for i in range(2):
        writer.write(np.full((8, 8, 3), i * 100, np.uint8))
    writer.release()
    src = open_source(path, loop=False)
    assert src.read() is not None and src.read() is not None
    assert [src.read() for _ in range(REOPEN_AFTER_FAILURES + 1)] == [None] * (REOPEN_AFTER_FAILURES + 1)
    assert src.reopened == 0  # the end of a file is its end


@pytest.mark.ros
def test_camera_node_publishes_rotated_stamped_frames(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    import cv2
    from rclpy.parameter import Parameter

    from vlm2vla_ros.nodes.camera_node import CameraNode
    from vlm2vla_ros.nodes.images import from_msg

    img = np.zeros((30, 60, 3), np.uint8)
    img[:, :30] = (0, 0, 255)  # left half red in BGR
    cv2.imwrite(str(tmp_path / "a.png"), img)
    owns = not rclpy.ok()
    if owns:
        rclpy.init()
    try:
        cam = CameraNode(parameter_overrides=[
            Parameter("source", value=str(tmp_path)), Parameter("rotate_deg", value=90),
            Parameter("width", value=0), Parameter("height", value=0), Parameter("rate_hz", value=20),
            Parameter("frame_id", value="head_cam"),
        ])
        got = first_images(cam)
        assert got, "no frame received"
        msg = got[0]
        assert msg.header.frame_id == "head_cam" and msg.encoding == "rgb8" and msg.header.stamp.sec > 0
        rgb = from_msg(msg)
        assert rgb.shape == (60, 30, 3)  # rotated 90 degrees
        assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[-1, 0]) == (0, 0, 0)  # red on top after rotation
        with pytest.raises(ValueError, match="rotate_deg"):
            CameraNode(parameter_overrides=[Parameter("source", value=str(tmp_path)), Parameter("rotate_deg", value=45)])
        cam.destroy_node()
    finally:
        if owns:
            rclpy.shutdown()


@pytest.mark.ros
def test_a_frame_is_stamped_before_it_is_read_never_after():
    """A frame read (or rendered) before a move and stamped after it would pass the executor's
    "taken after the chunk" check showing the world before the chunk; the demo's verifier judged
    such a pair at random. The stamp is the time the read began, not when the frame was sent."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from vlm2vla_ros.frames import FrameSource
    from vlm2vla_ros.nodes.camera_node import CameraNode

    class SlowSource(FrameSource):
        name = "slow"

        def __init__(self, clock):
            self.clock, self.began_ns = clock, []

        def read(self):
            self.began_ns.append(self.clock.now().nanoseconds)
            time.sleep(0.2)  # the world may move while a frame is read or rendered
            return np.full((8, 8, 3), len(self.began_ns) - 1, np.uint8)  # each frame names its read

    owns = not rclpy.ok()
    if owns:
        rclpy.init()
    try:
        cam = CameraNode(source=SlowSource(None), parameter_overrides=[Parameter("rate_hz", value=20)])
        cam.source.clock = cam.get_clock()
        got = first_images(cam)
        assert got
        stamp_ns = got[0].header.stamp.sec * 10**9 + got[0].header.stamp.nanosec
        read = got[0].data[0]  # the read that made the frame: its stamp is at, never after, that read's start
        assert 0 <= cam.source.began_ns[read] - stamp_ns < 50_000_000, (read, stamp_ns, cam.source.began_ns)
        cam.destroy_node()
    finally:
        if owns:
            rclpy.shutdown()


def test_stop_publishing_waits_for_a_tick_under_way():
    """A tick that was reading a frame when stop_publishing was called publishes it before
    stop_publishing returns, and nothing is published after (the watchdog tests rely on it)."""
    rclpy = pytest.importorskip("rclpy")
    import threading

    from vlm2vla_ros.frames import FrameSource
    from vlm2vla_ros.nodes.camera_node import CameraNode

    class SlowSource(FrameSource):
        name = "slow"

        def __init__(self):
            self.reading, self.release = threading.Event(), threading.Event()

        def read(self):
            self.reading.set()
            self.release.wait(5)
            return np.zeros((8, 8, 3), np.uint8)

    owns = not rclpy.ok()
    if owns:
        rclpy.init()
    try:
        source = SlowSource()
        cam = CameraNode(source=source)
        tick = threading.Thread(target=cam._tick)  # as the executor's thread would run it
        tick.start()
        assert source.reading.wait(5)
        stopper = threading.Thread(target=cam.stop_publishing)
        stopper.start()
        stopper.join(0.3)
        assert stopper.is_alive(), "stop_publishing returned while a frame was still being read"
        source.release.set()
        stopper.join(5)
        tick.join(5)
        assert cam.frames == 1 and cam.timer.is_canceled()
        cam._tick()  # a tick the executor had already queued
        assert cam.frames == 1
        cam.resume_publishing()
        cam._tick()
        assert cam.frames == 2 and not cam.timer.is_canceled()
        cam.destroy_node()
    finally:
        if owns:
            rclpy.shutdown()


def test_image_array_reads_every_encoding_with_padded_rows_and_names_what_does_not_fit():
    from vlm2vla_ros.frames import image_array

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    pad = np.zeros((2, 2), np.uint8)  # two bytes of padding at the end of every row

    def rows(pixels):
        return np.concatenate([pixels.reshape(2, -1), pad], axis=1).tobytes()

    alpha = np.full((2, 3, 1), 255, np.uint8)
    grey = rgb[:, :, :1]
    cases = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
             "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], 2), "mono8": grey}
    for encoding, pixels in cases.items():
        got = image_array(encoding, 2, 3, 3 * pixels.shape[2] + 2, rows(pixels))
        assert np.array_equal(got, np.repeat(grey, 3, 2) if encoding == "mono8" else rgb), encoding
    for args, message in [(("yuv422", 2, 3, 6, b""), "encoding 'yuv422' is not supported"),
                          (("rgb8", 2, 3, 8, bytes(16)), "step 8 is smaller than width x channels = 9"),
                          (("rgb8", 2, 3, 9, bytes(17)), "holds 17 bytes, fewer than height x step = 18"),
                          (("rgb8", 0, 3, 9, b""), "has none")]:
        with pytest.raises(ValueError, match=message):
            image_array(*args)


def test_a_device_frame_that_cannot_be_converted_is_a_frame_source_error(monkeypatch):
    """The camera node skips a FrameSourceError and goes on; a bare cv2.error would end it."""
    import cv2

    from vlm2vla_ros.frames import FrameSourceError

    class Capture:
        def __init__(self, target):
            pass

        def isOpened(self):
            return True

        def set(self, prop, value):
            pass

        def read(self):
            return True, np.zeros((4, 4, 2), np.uint8)  # two channels: BGR2RGB cannot take it

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    with pytest.raises(FrameSourceError, match="opencv:0 gave a frame that cannot be converted"):
        open_source("device:0", loop=False).read()


def test_shutting_down_never_closes_the_source_under_a_read(monkeypatch):
    """OpenCV's capture is not thread-safe: released beneath a read hung on a stalled USB camera,
    it can crash the process. destroy_node closes the source after the read under way ends, and
    leaves it to the process's exit when the read is still hung after CLOSE_WAIT_S."""
    rclpy = pytest.importorskip("rclpy")
    import threading

    from vlm2vla_ros.frames import FrameSource
    from vlm2vla_ros.nodes import camera_node
    from vlm2vla_ros.nodes.camera_node import CameraNode

    class HungSource(FrameSource):
        name = "hung"

        def __init__(self, hang_s):
            self.hang_s, self.reading, self.read_done = hang_s, threading.Event(), threading.Event()
            self.closed_while_reading = None

        def read(self):
            self.reading.set()
            time.sleep(self.hang_s)
            self.read_done.set()
            return np.zeros((8, 8, 3), np.uint8)

        def close(self):
            self.closed_while_reading = not self.read_done.is_set()

    monkeypatch.setattr(camera_node, "CLOSE_WAIT_S", 0.5)
    owns = not rclpy.ok()
    if owns:
        rclpy.init()
    try:
        for hang_s, closed in ((0.3, False), (2.0, None)):  # a read that ends in time; one still hung
            source = HungSource(hang_s)
            cam = CameraNode(source=source)
            tick = threading.Thread(target=cam._tick)
            tick.start()
            assert source.reading.wait(5)
            cam.destroy_node()
            assert source.closed_while_reading is closed, (hang_s, source.closed_while_reading)
            tick.join(5)
    finally:
        if owns:
            rclpy.shutdown()
