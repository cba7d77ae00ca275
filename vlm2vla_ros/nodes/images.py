"""numpy <-> sensor_msgs/Image, for the encodings a camera here produces.

This does what cv_bridge's cv2_to_imgmsg/imgmsg_to_cv2 do for 8-bit colour and grey images.
It is used instead of cv_bridge because the PyPI `cv-bridge` (the old ROS 1 pure-Python
CvBridge) fails on ROS 2 messages with numpy 2 (ndarray.tostring is gone, and image data is
an array.array, not bytes), while on the robot apt's ros-humble-cv-bridge is a C++ extension:
one small converter behaves the same everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sensor_msgs.msg import Image

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def to_msg(rgb: np.ndarray, stamp: Any, frame_id: str) -> Image:
    """An rgb8 Image from an HxWx3 uint8 RGB array."""
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = arr.tobytes()
    return msg


def from_msg(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB from an Image in rgb8, bgr8, mono8, rgba8 or bgra8 (rows may be padded)."""
    enc = msg.encoding
    if enc not in CHANNELS:
        raise ValueError(f"image encoding {enc!r} is not supported (use one of {sorted(CHANNELS)})")
    ch = CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if h < 1 or w < 1 or step < w * ch or buf.size < h * step:
        raise ValueError(f"image {w}x{h} {enc} step {step} does not fit its {buf.size} data bytes")
    img = buf[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc in ("bgr8", "bgra8"):
        img = img[:, :, 2::-1]
    elif enc == "rgba8":
        img = img[:, :, :3]
    elif enc == "mono8":
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)
