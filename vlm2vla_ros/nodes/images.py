"""numpy <-> sensor_msgs/Image, for the encodings a camera here produces.

This does what cv_bridge's cv2_to_imgmsg/imgmsg_to_cv2 do for 8-bit colour and grey images.
It is used instead of cv_bridge because the PyPI `cv-bridge` (the old ROS 1 pure-Python
CvBridge) fails on ROS 2 messages with numpy 2 (ndarray.tostring is gone, and image data is
an array.array, not bytes), while on the robot apt's ros-humble-cv-bridge is a C++ extension:
one small converter behaves the same everywhere.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from ..frames import image_array


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
    # an array.array is stored as it is; Humble's generated setter checks bytes element by
    # element in Python (about 0.1 s a 640x480 frame, a camera's whole budget at 5 Hz)
    msg.data = array.array("B", arr.tobytes())
    return msg


def from_msg(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB from an Image in rgb8, bgr8, mono8, rgba8 or bgra8 (rows may be padded)."""
    return image_array(msg.encoding, msg.height, msg.width, msg.step, msg.data)
