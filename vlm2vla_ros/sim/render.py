"""Draw a SimWorld as the head camera would see it: an RGB image a small VLM can read.

The view is an oblique (cabinet) projection from the robot's side: the table's x axis runs up
the image (forward = up), y runs to the left (left = left), and height lifts a point straight
up the image by OBLIQUE times its z. Circles stay circles and squares stay squares, so shapes
are easy to tell apart; an object's height shows as its darker front side. The gripper is a
dark two-finger marker on a grey arm entering from the bottom edge (the arm extends along +x);
its height shows as the gap to its shadow, open vs closed as the gap between the fingers.
Pure function of the world and the view: the same world gives the same pixels.

Two views, at the same scale (0.5 cm of table per pixel at 128 px, 1 cm at 64):
- "table": the whole table, fixed, as a head camera looking down at it sees it;
- "gripper": the head turned to keep the fingertips in the middle of the image (Stretch's
  "look at the gripper" pose, made to track it). Where a block is from the gripper is then
  where it is in the image, the one reading a grasp needs (docs/miniature.md, finding 12);
  objects more than about half the view's width from the gripper are out of it.
"""

from __future__ import annotations

import math
import unicodedata

import cv2
import numpy as np

from vlm2vla_ros.sim.views import GRIPPER_VIEW, TABLE_VIEW, check_view, image_size_problem
from vlm2vla_ros.sim.world import BOWL, BOWL_WALL_M, PLATE, TABLE, SimObject, SimWorld

OBLIQUE = 0.5  # image rise per metre of height, relative to a metre of depth
VIEW_Y = 0.28  # half width of the view at the table, metres
VIEW_X = (-0.01, 0.56)  # nearest and farthest table depth in view
VIEW_Z = 0.15  # height kept in view above the far table edge
TABLE_X = (0.0, 0.55)
TABLE_Y = 0.275
TABLE_RGB = (200, 170, 125)
TABLE_EDGE_RGB = (150, 120, 85)
FLOOR_RGB = (50, 55, 65)
ARM_RGB = (150, 152, 162)
GRIPPER_RGB = (35, 35, 40)
PAD_RGB = (240, 240, 240)
FINGER_LENGTH_M = 0.05
OPEN_WIDTH_M = 0.08
CLOSED_EMPTY_WIDTH_M = 0.012
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


class Projection:
    """Task-frame metres to image pixels; `centre` is the (x, y, z) point drawn in the middle
    of the image, None for the whole-table view."""

    def __init__(self, width: int, height: int, centre: tuple[float, float, float] | None = None) -> None:
        depth = VIEW_X[1] - VIEW_X[0] + OBLIQUE * VIEW_Z
        self.scale = min(width / (2 * VIEW_Y), height / depth)
        self.cu = width / 2.0
        self.cv = height / 2.0
        self.mid = (VIEW_X[0] + VIEW_X[1] + OBLIQUE * VIEW_Z) / 2.0
        if centre is not None:
            cx, cy, cz = centre
            self.cu += cy * self.scale
            self.mid = cx + OBLIQUE * cz
        self.line = max(1, round(min(width, height) / 300))

    @classmethod
    def of(cls, world: SimWorld, width: int, height: int, view: str = TABLE_VIEW) -> Projection:
        """The projection `render` uses for this world and view."""
        return cls(width, height, world.gripper if check_view(view) == GRIPPER_VIEW else None)

    def pt(self, x: float, y: float, z: float) -> tuple[float, float]:
        return self.cu - y * self.scale, self.cv + (self.mid - x - OBLIQUE * z) * self.scale

    def px(self, metres: float) -> float:
        return metres * self.scale


def _fix(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, points, rgb) -> None:
    cv2.fillPoly(img, [_fix(points)], _c(rgb), cv2.LINE_AA, _SHIFT)


def _outline(img: np.ndarray, points, rgb, thickness: int) -> None:
    cv2.polylines(img, [_fix(points)], True, _c(rgb), thickness, cv2.LINE_AA, _SHIFT)


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(v)))) for v in rgb)


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return _c(v * factor for v in rgb)


def _footprint(obj: SimObject, radius: float | None = None) -> list[tuple[float, float]]:
    """Outline of the object's footprint in table coordinates (x, y)."""
    r = obj.radius if radius is None else radius
    if obj.shape == "cube":
        return [(obj.x + a * r, obj.y + b * r) for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    if obj.shape == "triangle":  # pointing forward, away from the robot
        angles = [0.0, 2 * math.pi / 3, 4 * math.pi / 3]
    else:
        angles = [2 * math.pi * i / 32 for i in range(32)]
    return [(obj.x + r * math.cos(a), obj.y + r * math.sin(a)) for a in angles]


def _prism(img, view: Projection, foot_bottom, foot_top, z0: float, z1: float, rgb, line: int) -> None:
    """A solid standing on foot_bottom at z0 with top face foot_top at z1."""
    bottom = [view.pt(x, y, z0) for x, y in foot_bottom]
    top = [view.pt(x, y, z1) for x, y in foot_top]
    hull = cv2.convexHull(np.asarray(bottom + top, dtype=np.float32)).reshape(-1, 2)
    _fill(img, hull, _shade(rgb, 0.62))
    _fill(img, top, rgb)
    _outline(img, top, _shade(rgb, 0.45), line)


def _draw_object(img: np.ndarray, view: Projection, obj: SimObject) -> None:
    line = view.line
    foot = _footprint(obj)
    if obj.kind == BOWL:
        _prism(img, view, _footprint(obj, obj.radius * 0.75), foot, obj.z, obj.top, obj.rgb, line)
        inner = _footprint(obj, obj.radius - 1.5 * BOWL_WALL_M)
        _fill(img, [view.pt(x, y, obj.top) for x, y in inner], _shade(obj.rgb, 0.45))
    elif obj.kind == PLATE:
        _prism(img, view, foot, foot, obj.z, obj.top, obj.rgb, line)
        ring = _footprint(obj, obj.radius * 0.68)
        _outline(img, [view.pt(x, y, obj.top) for x, y in ring], _shade(obj.rgb, 0.7), line)
    else:
        _prism(img, view, foot, foot, obj.z, obj.top, obj.rgb, line)


def _root_x(world: SimWorld, obj: SimObject) -> float:
    """Depth of the table-level object a stack stands on: stacks draw back to front as one."""
    seen = set()
    while obj.resting_on not in (None, TABLE) and obj.name not in seen:
        seen.add(obj.name)
        obj = world.object(obj.resting_on)
    return obj.x


def _draw_gripper(img: np.ndarray, view: Projection, world: SimWorld) -> None:
    gx, gy, gz = world.gripper
    held = world.held
    floor, _ = world.support_below(gx, gy, exclude=held.name if held else None)
    # Shadow on whatever is under the gripper: its distance to the fingers shows the height.
    overlay = img.copy()
    su, sv = view.pt(gx, gy, floor)
    axes = (max(1.0, view.px(0.035)), max(1.0, view.px(0.02)))
    cv2.ellipse(
        overlay,
        (round(su * _ONE), round(sv * _ONE)),
        (round(axes[0] * _ONE), round(axes[1] * _ONE)),
        0,
        0,
        360,
        _c((0, 0, 0)),
        -1,
        cv2.LINE_AA,
        _SHIFT,
    )
    cv2.addWeighted(overlay, 0.35, img, 0.65, 0, dst=img)

    palm_z = gz + FINGER_LENGTH_M
    half_arm = 0.012
    arm = [
        view.pt(gx, gy + half_arm, palm_z),
        view.pt(gx, gy - half_arm, palm_z),
        view.pt(VIEW_X[0] - 1.0, gy - half_arm, palm_z),
        view.pt(VIEW_X[0] - 1.0, gy + half_arm, palm_z),
    ]
    _fill(img, arm, ARM_RGB)
    _outline(img, arm, _shade(ARM_RGB, 0.5), view.line)

    if held is not None:
        _draw_object(img, view, held)
        width = held.size + 0.008
    else:
        width = OPEN_WIDTH_M if world.gripper_open else CLOSED_EMPTY_WIDTH_M
    half_finger = 0.005
    for side in (-1.0, 1.0):
        fy = gy + side * width / 2.0
        finger = [
            view.pt(gx, fy + half_finger, gz),
            view.pt(gx, fy - half_finger, gz),
            view.pt(gx, fy - half_finger, palm_z),
            view.pt(gx, fy + half_finger, palm_z),
        ]
        _fill(img, finger, GRIPPER_RGB)
        pad = [
            view.pt(gx, fy + half_finger, gz),
            view.pt(gx, fy - half_finger, gz),
            view.pt(gx, fy - half_finger, gz + 0.01),
            view.pt(gx, fy + half_finger, gz + 0.01),
        ]
        _fill(img, pad, PAD_RGB)
    palm_half = width / 2.0 + half_finger
    palm = [
        view.pt(gx, gy + palm_half, palm_z),
        view.pt(gx, gy - palm_half, palm_z),
        view.pt(gx, gy - palm_half, palm_z + 0.012),
        view.pt(gx, gy + palm_half, palm_z + 0.012),
    ]
    _fill(img, palm, GRIPPER_RGB)


def render(world: SimWorld, width: int = 224, height: int = 224, view: str = TABLE_VIEW) -> np.ndarray:
    """The scene as an HxWx3 uint8 RGB image, in one of sim.views.VIEWS."""
    problem = image_size_problem(width, height)
    if problem:
        raise ValueError(f"{problem}.")
    camera = Projection.of(world, int(width), int(height), view)
    img = np.empty((int(height), int(width), 3), dtype=np.uint8)
    img[:] = FLOOR_RGB
    x0, x1 = TABLE_X
    edge = [
        camera.pt(x0, TABLE_Y, 0.0),
        camera.pt(x0, -TABLE_Y, 0.0),
        camera.pt(x0, -TABLE_Y, -0.04),
        camera.pt(x0, TABLE_Y, -0.04),
    ]
    _fill(img, edge, TABLE_EDGE_RGB)
    top = [
        camera.pt(x1, TABLE_Y, 0.0),
        camera.pt(x1, -TABLE_Y, 0.0),
        camera.pt(x0, -TABLE_Y, 0.0),
        camera.pt(x0, TABLE_Y, 0.0),
    ]
    _fill(img, top, TABLE_RGB)

    resting = [o for o in world.objects if not o.held]
    for obj in sorted(resting, key=lambda o: (-_root_x(world, o), o.z, o.name)):
        _draw_object(img, camera, obj)
    _draw_gripper(img, camera, world)
    return img


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts are ASCII only: drop accents rather than print '?'."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def annotate(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of `image` with text lines on a dark band at the top (demo videos, debugging)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"annotate needs an HxWx3 uint8 image, got shape {image.shape} and dtype {image.dtype}."
        )
    out = image.copy()
    if not lines:
        return out
    h, w = out.shape[:2]
    scale = max(0.3, w / 900.0)
    thickness = max(1, round(w / 500))
    (_, line_h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    step = line_h + base + 2
    band_h = min(h, step * len(lines) + 4)
    band = out[:band_h].astype(np.float32)
    out[:band_h] = (band * 0.35).astype(np.uint8)
    for i, text in enumerate(lines):
        y = 2 + line_h + i * step
        if y > h:
            break
        cv2.putText(
            out,
            _ascii(text),
            (4, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return out
