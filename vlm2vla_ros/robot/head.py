"""Head tracking: the pan and tilt that point Stretch RE1's head camera at the gripper.

The miniature VLM2VLA and any policy trained on the simulator's gripper view (sim/views.py) see
the scene centred on the gripper, as the head camera does when it looks at the gripper. On the
robot the executor keeps it there: after every chunk, and when a task starts, it aims the head
at the grasp centre computed from the measured lift and arm. Base motion carries the head and
the gripper together, so they alone decide the aim.

Geometry: the RE1's nominal URDF (hello-robot/stretch_ros, stretch_description/batch/guthrie:
stretch_main.xacro, stretch_gripper.xacro, stretch_d435i.xacro, with realsense2_description's
D435), in base_link metres with the wrist yaw at 0. A robot's calibrated URDF differs by
millimetres, which moves the aim by well under a degree at the arm's distances. The camera
is perspective: unlike the simulator's view, the gripper's size in the image changes with its
distance from the head (docs/safety.md, "Head tracking").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..checks import check_keys, real
from .interface import JointState

GRASP_CENTRE_AT_ZERO_M = (-0.02392, -0.35044, 0.02497)
"""link_grasp_center at lift 0 and arm 0; the arm extends along -y and the lift raises +z."""
PAN_AXIS_XY_M = (0.0030942, -0.0000032)
"""Where the vertical pan axis meets the floor plane (pan 0 looks along +x, -pi/2 along the arm)."""
PAN_RAY_OFFSET_M = -0.003193
"""Sideways offset of the camera's optical axis from the pan axis."""
TILT_AXIS_Z_M = 1.30209
TILT_AXIS_BEHIND_PAN_M = 0.0013
"""The tilt axis sits this far behind the pan axis, along the direction the head looks."""
TILT_RAY_OFFSET_M = 0.0203
"""The optical axis runs this far above the tilt axis (at tilt 0); tilt < 0 looks down."""
PAN_LIMITS_RAD = (-3.9, 1.5)
TILT_LIMITS_RAD = (-1.53, 0.79)
"""The URDF's joint limits. stretch_body's RE1 defaults allow tilt only up to about 0.42 rad."""


def grasp_centre_m(joints: JointState) -> tuple[float, float, float]:
    """The grasp centre in base_link (metres), from the lift and arm positions."""
    x, y, z = GRASP_CENTRE_AT_ZERO_M
    return x, y - joints.arm_m, z + joints.lift_m


def aim_at(point: tuple[float, float, float]) -> tuple[float, float]:
    """(pan, tilt) in radians that put `point` (base_link metres) on the camera's optical axis.

    Exact for the URDF's offsets: pan first (the ray passes PAN_RAY_OFFSET_M beside the pan
    axis), then tilt in the vertical plane the head now faces.
    """
    px, py, pz = point
    dx, dy = px - PAN_AXIS_XY_M[0], py - PAN_AXIS_XY_M[1]
    reach = math.hypot(dx, dy)
    if reach <= abs(PAN_RAY_OFFSET_M) + 1e-6:
        raise ValueError(f"point {point} is on the pan axis: no pan looks at it")
    pan = math.atan2(dy, dx) - math.asin(PAN_RAY_OFFSET_M / reach)
    ahead = dx * math.cos(pan) + dy * math.sin(pan) + TILT_AXIS_BEHIND_PAN_M
    up = pz - TILT_AXIS_Z_M
    tilt = math.atan2(up, ahead) - math.asin(TILT_RAY_OFFSET_M / math.hypot(ahead, up))
    return _wrap(pan), tilt


def _wrap(angle: float) -> float:
    """The same direction on the side of the pan joint's range, which runs past -pi. The range
    spans less than a turn: directions between its ends stay outside it, for the caller to clip."""
    return angle - 2 * math.pi if angle > PAN_LIMITS_RAD[1] else angle


@dataclass(frozen=True)
class HeadPose:
    pan_rad: float
    tilt_rad: float
    clipped: bool = False
    """True when the aim lay outside the allowed range and was brought inside it."""


@dataclass(frozen=True)
class HeadTrackingConfig:
    """Section `head` of config/stretch_re1.yaml: whether and how the head follows the gripper."""

    track_gripper: bool = False
    """Aim the head camera at the grasp centre when a task starts and after every chunk. On for
    a policy trained on the gripper view (the miniature VLM2VLA); off for one trained on a fixed
    camera pose. The head only moves when the arm may (homed, not runstopped, not dry-run)."""
    pan_range_rad: tuple[float, float] = PAN_LIMITS_RAD
    tilt_range_rad: tuple[float, float] = TILT_LIMITS_RAD
    """Allowed pan and tilt; may only be narrowed from the URDF's limits. An aim outside them is
    clipped to them (the gripper is then off centre, and the report says so)."""

    def __post_init__(self) -> None:
        if not isinstance(self.track_gripper, bool):
            raise ValueError(f"head.track_gripper must be true or false, got {self.track_gripper!r}")
        for name, allowed in (("pan_range_rad", PAN_LIMITS_RAD), ("tilt_range_rad", TILT_LIMITS_RAD)):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError(f"head.{name} must be [low, high], got {value!r}")
            lo = real(value[0], f"head.{name} low", *allowed)
            hi = real(value[1], f"head.{name} high", *allowed)
            if lo >= hi:
                raise ValueError(f"head.{name} must have low < high, got {value!r}")
            object.__setattr__(self, name, (float(lo), float(hi)))

    @classmethod
    def from_dict(cls, data: Any) -> HeadTrackingConfig:
        d = check_keys(data, ("track_gripper", "pan_range_rad", "tilt_range_rad"), "head")
        return cls(**d)  # __post_init__ turns YAML's lists into checked tuples

    def pose_for(self, joints: JointState) -> HeadPose:
        """The aim at the grasp centre for these joint positions, within the allowed ranges."""
        pan, tilt = aim_at(grasp_centre_m(joints))
        pan_in = min(max(pan, self.pan_range_rad[0]), self.pan_range_rad[1])
        tilt_in = min(max(tilt, self.tilt_range_rad[0]), self.tilt_range_rad[1])
        return HeadPose(pan_in, tilt_in, clipped=(pan_in, tilt_in) != (pan, tilt))
