"""The kinematic tabletop: a gripper, blocks, a bowl and a plate, and the rules that move them.

Frame (the action language's task frame, in metres): x forward, away from the robot along the
arm; y to the left; z up, with z = 0 the table surface. The gripper position is the point
between the fingertips. Everything is kinematic and deterministic: no forces, no contact
dynamics, only the few rules below, chosen so a scripted expert and a learned policy can
succeed or fail for legible reasons.

Rules:
- Grasp: closing an open gripper picks up the nearest block whose centre is within
  GRASP_TOLERANCE_XY_M horizontally, with the fingertips between the block's bottom and
  GRASP_MIN_DEPTH_M below its top, and with nothing resting on it. Bowls and plates are
  not graspable. A held block keeps its offset from the gripper while carried.
- Release: opening the gripper drops the held block straight down onto the highest support
  under its centre (table, plate top, bowl floor or rim, another block's top: stacking).
- Supports are discs: a block, plate or bowl supports whatever has its centre over its disc.
- Collisions are vertical only: the fingertips stay on or above the table and above plate
  and bowl floors; a closed empty gripper stays above block tops (an open one straddles
  them); a held block's bottom stays above whatever is under it. A move that would break one
  of these is raised to the lowest allowed height. Horizontal motion never collides.
- The gripper stays inside the workspace box; a move beyond it is clamped, and the move
  reports what was actually executed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

BLOCK = "block"
BOWL = "bowl"
PLATE = "plate"
OBJECT_KINDS = (BLOCK, BOWL, PLATE)
BLOCK_SHAPES = ("cube", "cylinder", "triangle")
TABLE = "table"

GRASP_TOLERANCE_XY_M = 0.015
GRASP_MIN_DEPTH_M = 0.005
BOWL_WALL_M = 0.01  # wall and floor thickness of a bowl


@dataclass(frozen=True)
class Workspace:
    """The box the fingertip point may occupy; the table covers at least its x-y extent."""

    x_min: float = 0.05
    x_max: float = 0.50
    y_min: float = -0.25
    y_max: float = 0.25
    z_min: float = 0.0
    z_max: float = 0.30

    def clamp(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        return (
            min(max(x, self.x_min), self.x_max),
            min(max(y, self.y_min), self.y_max),
            min(max(z, self.z_min), self.z_max),
        )


@dataclass
class SimObject:
    """One object on the table. (x, y) is the centre of its footprint, z its bottom."""

    name: str  # unique in a world, e.g. "red block", "bowl"
    kind: str  # BLOCK, BOWL or PLATE
    colour: str  # colour name, e.g. "red"
    rgb: tuple[int, int, int]
    shape: str  # a BLOCK_SHAPES entry for blocks; the kind for bowls and plates
    x: float
    y: float
    z: float
    size: float  # footprint width (diameter of its support disc), metres
    height: float
    held: bool = False
    resting_on: str | None = TABLE  # TABLE, another object's name, or None while held
    fell_m: float = 0.0  # how far it fell when last let go: a high release is a drop, not a placement

    def __post_init__(self) -> None:
        if self.kind not in OBJECT_KINDS:
            raise ValueError(f"object {self.name!r} has kind {self.kind!r}, expected one of {OBJECT_KINDS}.")
        if self.kind == BLOCK and self.shape not in BLOCK_SHAPES:
            raise ValueError(f"block {self.name!r} has shape {self.shape!r}, expected one of {BLOCK_SHAPES}.")
        if not (self.size > 0 and self.height > 0):
            raise ValueError(f"object {self.name!r} needs a positive size and height.")

    @property
    def position(self) -> tuple[float, float, float]:
        return (self.x, self.y, self.z)

    @property
    def top(self) -> float:
        return self.z + self.height

    @property
    def radius(self) -> float:
        return self.size / 2.0

    def covers(self, x: float, y: float) -> bool:
        """Whether the point (x, y) is over this object's support disc."""
        return math.hypot(x - self.x, y - self.y) <= self.radius

    def surface_at(self, x: float, y: float) -> float:
        """Height of the surface this object offers at (x, y) (call only where it covers)."""
        if self.kind == BOWL and math.hypot(x - self.x, y - self.y) <= self.radius - BOWL_WALL_M:
            return self.z + BOWL_WALL_M  # the bowl's floor
        return self.top


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of metres, got {value!r}.")
    return float(value)


@dataclass
class SimWorld:
    """The whole simulated state; copy() it before handing it to another thread."""

    objects: list[SimObject]
    gripper_x: float = 0.25
    gripper_y: float = 0.0
    gripper_z: float = 0.15
    gripper_open: bool = True
    workspace: Workspace = field(default_factory=Workspace)
    # Held block's position minus the gripper's, fixed at grasp time.
    held_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"object names must be unique, got {names}.")
        if sum(o.held for o in self.objects) > 1:
            raise ValueError("at most one object can be held.")
        self.gripper_x, self.gripper_y, self.gripper_z = self.workspace.clamp(
            self.gripper_x, self.gripper_y, self.gripper_z
        )

    # ---- queries -------------------------------------------------------------------------

    @property
    def gripper(self) -> tuple[float, float, float]:
        return (self.gripper_x, self.gripper_y, self.gripper_z)

    def object(self, name: str) -> SimObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(f"no object named {name!r}; the scene has {[o.name for o in self.objects]}.")

    @property
    def held(self) -> SimObject | None:
        for obj in self.objects:
            if obj.held:
                return obj
        return None

    def support_below(self, x: float, y: float, exclude: str | None = None) -> tuple[float, str]:
        """The highest surface under (x, y) and what offers it (TABLE or an object's name)."""
        best = (0.0, TABLE)
        for obj in self.objects:
            if obj.held or obj.name == exclude or not obj.covers(x, y):
                continue
            height = obj.surface_at(x, y)
            if height > best[0]:
                best = (height, obj.name)
        return best

    def is_graspable(self, obj: SimObject) -> bool:
        """Blocks are graspable unless something rests on them."""
        return obj.kind == BLOCK and not any(o.resting_on == obj.name for o in self.objects)

    def _floor_for_gripper(self, x: float, y: float) -> float:
        """Lowest fingertip height allowed at (x, y) with no object held."""
        floor = 0.0
        for obj in self.objects:
            if obj.held or not obj.covers(x, y):
                continue
            if obj.kind != BLOCK or not self.gripper_open:
                floor = max(floor, obj.surface_at(x, y))
        return floor

    # ---- actions -------------------------------------------------------------------------

    def move_gripper(self, dx: float, dy: float, dz: float) -> tuple[float, float, float]:
        """Move the gripper (and what it holds) by metres; returns the executed delta."""
        dx, dy, dz = _finite("dx", dx), _finite("dy", dy), _finite("dz", dz)
        ws = self.workspace
        x, y, z = ws.clamp(self.gripper_x + dx, self.gripper_y + dy, self.gripper_z + dz)
        held = self.held
        if held is None:
            floor = self._floor_for_gripper(x, y)
        else:
            ox, oy, oz = self.held_offset
            floor = self.support_below(x + ox, y + oy, exclude=held.name)[0] - oz
        z = min(max(z, floor), ws.z_max)
        executed = (x - self.gripper_x, y - self.gripper_y, z - self.gripper_z)
        self.gripper_x, self.gripper_y, self.gripper_z = x, y, z
        if held is not None:
            ox, oy, oz = self.held_offset
            held.x, held.y, held.z = x + ox, y + oy, z + oz
        return executed

    def set_gripper(self, open_: bool) -> str | None:
        """Open or close; returns the name of the block grasped or released, else None."""
        if not isinstance(open_, bool):
            raise TypeError(f"set_gripper takes True (open) or False (closed), got {open_!r}.")
        if open_ == self.gripper_open:
            return None
        self.gripper_open = open_
        return self._close() if not open_ else self._release()

    def _close(self) -> str | None:
        gx, gy, gz = self.gripper
        candidates = [
            (math.hypot(o.x - gx, o.y - gy), o.name, o)
            for o in self.objects
            if self.is_graspable(o)
            and math.hypot(o.x - gx, o.y - gy) <= GRASP_TOLERANCE_XY_M
            and o.z <= gz <= o.top - GRASP_MIN_DEPTH_M
        ]
        if not candidates:
            return None
        _, _, obj = min(candidates, key=lambda c: (c[0], c[1]))
        obj.held, obj.resting_on = True, None
        self.held_offset = (obj.x - gx, obj.y - gy, obj.z - gz)
        return obj.name

    def _release(self) -> str | None:
        obj = self.held
        if obj is None:
            return None
        height, support = self.support_below(obj.x, obj.y, exclude=obj.name)
        obj.fell_m = max(0.0, obj.z - height)
        obj.z, obj.held, obj.resting_on = height, False, support
        self.held_offset = (0.0, 0.0, 0.0)
        return obj.name

    # ---- snapshots -----------------------------------------------------------------------

    def copy(self) -> SimWorld:
        return copy.deepcopy(self)

    def keeping(self, objects: Sequence[SimObject]) -> SimWorld:
        """A world of its own with copies of only these objects, and the gripper and workspace as
        they are here: a scene cut down for training or evaluation."""
        return SimWorld(copy.deepcopy(list(objects)), gripper_x=self.gripper_x, gripper_y=self.gripper_y,
                        gripper_z=self.gripper_z, gripper_open=self.gripper_open, workspace=self.workspace,
                        held_offset=self.held_offset)

    def observation(self) -> dict:
        """The state as plain JSON-ready data (logs, VQA generation, tests)."""
        held = self.held
        return {
            "gripper": {
                "position_m": [round(v, 4) for v in self.gripper],
                "open": self.gripper_open,
                "holding": held.name if held else None,
            },
            "objects": [
                {
                    "name": o.name,
                    "kind": o.kind,
                    "colour": o.colour,
                    "shape": o.shape,
                    "position_m": [round(v, 4) for v in o.position],
                    "size_m": round(o.size, 4),
                    "height_m": round(o.height, 4),
                    "held": o.held,
                    "resting_on": o.resting_on,
                }
                for o in self.objects
            ],
        }
