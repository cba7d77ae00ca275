"""A stand-in for hello-robot-stretch-body 0.7.x at the API boundary our backend uses.

The real package cannot be imported without a robot's fleet configuration, so tests put this
in sys.modules instead. Names and signatures follow stretch_body 0.7.31 (Robot, lift, arm,
base, end_of_arm, head, pimu, push_command, wait_command, wait_while_is_moving, get_status,
is_homed, startup, stop). Behaviour kept where the backend relies on it: steppers move only
on push_command, not before homing, and not while runstopped; moves are clipped to the soft
limits; the runstop, once triggered, stays until reset; Dynamixels (gripper, head) move at
once, not while runstopped. Every call is recorded in order.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Call = tuple[str, tuple, dict]
READS = ("get_status", "is_homed")  # calls that cannot move anything


@dataclass
class World:
    """The fake robot's state and the record of calls made to it."""

    lift: float = 0.5
    arm: float = 0.1
    base_x: float = 0.0
    gripper_pct: float = 0.0
    head_pan: float = 0.0
    head_tilt: float = 0.0
    homed: bool = True
    runstopped: bool = False
    startup_ok: bool = True
    moves_finish: bool = True  # False: wait_while_is_moving times out
    construct_error: BaseException | None = None  # raised by Robot(), e.g. KeyError without a fleet
    calls: list[Call] = field(default_factory=list)
    # name -> function run just before that call takes effect (may change the world or raise)
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)

    def record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        hook = self.hooks.get(name)
        if hook is not None:
            hook()

    def motion_calls(self) -> list[Call]:
        """The record without pure reads."""
        return [c for c in self.calls if c[0] not in READS]


class _Stepper:
    """lift or arm (stretch_body.prismatic_joint.PrismaticJoint)."""

    def __init__(self, world: World, name: str, hi: float) -> None:
        self._w, self.name, self._hi = world, name, hi
        self._pending = 0.0

    def move_by(
        self,
        x_m,
        v_m=None,
        a_m=None,
        stiffness=None,
        contact_thresh_pos_N=None,
        contact_thresh_neg_N=None,
        req_calibration=True,
        contact_thresh_pos=None,
        contact_thresh_neg=None,
    ):
        self._w.record(f"{self.name}.move_by", x_m, v_m=v_m)
        if self._w.homed:  # stretch_body ignores (with a warning) moves before homing
            pos = getattr(self._w, self.name)
            self._pending = min(max(pos + x_m, 0.0), self._hi) - pos  # soft-limit clipping

    def wait_while_is_moving(self, timeout=15.0, use_motion_generator=True):
        self._w.record(f"{self.name}.wait_while_is_moving", timeout=timeout)
        return self._w.moves_finish

    def _push(self) -> None:
        if not self._w.runstopped:
            setattr(self._w, self.name, getattr(self._w, self.name) + self._pending)
        self._pending = 0.0


class _Base:
    """stretch_body.base.Base (translation only)."""

    def __init__(self, world: World) -> None:
        self._w = world
        self._pending = 0.0

    def translate_by(
        self, x_m, v_m=None, a_m=None, stiffness=None, contact_thresh_N=None, contact_thresh=None
    ):
        self._w.record("base.translate_by", x_m, v_m=v_m)
        self._pending = x_m

    def wait_while_is_moving(self, timeout=15.0, use_motion_generator=True):
        self._w.record("base.wait_while_is_moving", timeout=timeout)
        return self._w.moves_finish

    def _push(self) -> None:
        if not self._w.runstopped:
            self._w.base_x += self._pending
        self._pending = 0.0


class _EndOfArm:
    def __init__(self, world: World) -> None:
        self._w = world

    def move_to(self, joint, x_r, v_r=None, a_r=None):
        self._w.record("end_of_arm.move_to", joint, x_r)
        if joint == "stretch_gripper" and not self._w.runstopped:  # Dynamixels move at once
            self._w.gripper_pct = x_r


class _Head:
    """stretch_body.head.Head (head_pan, head_tilt)."""

    def __init__(self, world: World) -> None:
        self._w = world

    def move_to(self, joint, x_r, v_r=None, a_r=None):
        self._w.record("head.move_to", joint, x_r)
        if joint in ("head_pan", "head_tilt") and not self._w.runstopped:
            setattr(self._w, joint, x_r)


class _Pimu:
    def __init__(self, world: World) -> None:
        self._w = world
        self._trigger = False

    def runstop_event_trigger(self):
        self._w.record("pimu.runstop_event_trigger")
        self._trigger = True

    def _push(self) -> None:
        if self._trigger:
            self._w.runstopped = True
        self._trigger = False


class Robot:
    """stretch_body.robot.Robot; `world` is the test's handle on the fake hardware."""

    world: World  # set by install()

    def __init__(self) -> None:
        w = self.world
        w.record("Robot")
        if w.construct_error is not None:
            raise w.construct_error
        self.lift = _Stepper(w, "lift", 1.10)
        self.arm = _Stepper(w, "arm", 0.52)
        self.base = _Base(w)
        self.end_of_arm = _EndOfArm(w)
        self.head = _Head(w)
        self.pimu = _Pimu(w)

    def startup(self, start_non_dxl_thread=True, start_dxl_thread=True, start_sys_mon_thread=True):
        self.world.record("startup")
        return self.world.startup_ok

    def stop(self):
        self.world.record("stop")

    def is_homed(self):
        self.world.record("is_homed")
        return self.world.homed

    def get_status(self):
        w = self.world
        w.record("get_status")
        return copy.deepcopy(
            {
                "lift": {"pos": w.lift},
                "arm": {"pos": w.arm, "motor": {"in_guarded_event": False}},
                "base": {"x": w.base_x, "y": 0.0, "theta": 0.0},
                "end_of_arm": {"stretch_gripper": {"pos_pct": w.gripper_pct}},
                "pimu": {"runstop_event": w.runstopped},
            }
        )

    def push_command(self):
        self.world.record("push_command")
        for device in (self.base, self.arm, self.lift, self.pimu):
            device._push()

    def wait_command(self, timeout=15.0, use_motion_generator=True):
        self.world.record("wait_command", timeout=timeout)
        return self.world.moves_finish


class _FailingImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import stretch_body.robot` raise, as it does without a fleet configuration."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def find_spec(self, name, path=None, target=None):
        if name == "stretch_body" or name.startswith("stretch_body."):
            return importlib.machinery.ModuleSpec(name, self, is_package=name == "stretch_body")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise self.exc


def install(monkeypatch: Any, world: World | None = None, import_error: BaseException | None = None) -> World:
    """Put the stand-in (or, with import_error, a failing import) where `import stretch_body.robot` finds it."""
    for name in ("stretch_body", "stretch_body.robot"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    if import_error is not None:
        monkeypatch.setattr(sys, "meta_path", [_FailingImport(import_error), *sys.meta_path])
        return world or World()
    world = world or World()
    package = types.ModuleType("stretch_body")
    package.__path__ = []  # a package, so `import stretch_body.robot` looks in sys.modules
    robot_module = types.ModuleType("stretch_body.robot")
    robot_cls = type("Robot", (Robot,), {"world": world})
    robot_module.Robot = robot_cls
    package.robot = robot_module
    monkeypatch.setitem(sys.modules, "stretch_body", package)
    monkeypatch.setitem(sys.modules, "stretch_body.robot", robot_module)
    return world
