"""A scripted expert that solves every task kind, recording what a teleoperated demo would.

It follows the task's canonical subtasks in order, moving the gripper in small steps (at most
1 cm, like a 10 Hz teleoperation) with seeded jitter in speed, direction and grasp and place
points, so demonstrations of the same task differ. Each recorded step is the raw material
for training data: the image the step was taken from, the delta the world actually executed
(centimetres, task frame), the gripper state after it, and the current subtask.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.tasks import GRASP, LIFT, LIFT_GRIPPER, MOVE_ABOVE, PLACE, Subtask, Task
from vlm2vla_ros.sim.views import TABLE_VIEW
from vlm2vla_ros.sim.world import BOWL, BOWL_WALL_M, SimObject, SimWorld

MAX_GRASP_HEIGHT = 0.8
"""ExpertConfig.grasp_height's ceiling: on the lowest block (3.5 cm) 0.8 closes 0.7 cm below its
top, deeper than the world's GRASP_MIN_DEPTH_M (0.5 cm) asks."""


@dataclass(frozen=True)
class ExpertConfig:
    step_cm: float = 0.8  # nominal distance per step
    max_step_cm: float = 1.0  # never more than this per step
    speed_jitter: float = 0.3  # a step is step_cm times uniform(1 - jitter, 1 + jitter), capped
    lateral_noise_cm: float = 0.08  # sideways wobble per step; the next step corrects it
    clearance_m: float = 0.03  # travel this far above the tallest object
    min_carry_bottom_m: float = 0.08  # a lifted block's bottom rises at least this high
    grasp_jitter_m: float = 0.004  # within the world's grasp tolerance
    place_jitter_frac: float = 0.3  # of the radius where a drop still lands on the target
    release_gap_m: float = 0.005  # open this far above the target surface
    retreat_z_m: float = 0.15  # "lift the gripper" goes at least this high
    max_steps: int = 2000
    grasp_recentres: bool = False
    """A grasp goes to the block's centre line, at grasp_height (opening first if closed beside
    it), instead of straight down: demonstrations of grasping from where an imperfect "move
    above" left the gripper (finding 22)."""
    grasp_height: float = 0.5
    """Where the fingertips close, as a share of the block's height above its bottom (0.5: its
    middle). Lower, the grasp descends further from the travel height, so a policy that copies
    the descent still reaches a block from a "move above" that stopped high: an open gripper
    straddles a block down to what it stands on (finding 43)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.grasp_height <= MAX_GRASP_HEIGHT:
            raise ValueError(f"grasp_height is a share of the block's height, 0 to {MAX_GRASP_HEIGHT} (the fingertips "
                             f"must close at least GRASP_MIN_DEPTH_M below its top), got {self.grasp_height}")


@dataclass
class EpisodeStep:
    image: np.ndarray | None  # HxWx3 RGB observation the step was taken from (None: not rendered)
    delta_cm: tuple[float, float, float]  # executed (dx, dy, dz), centimetres, task frame
    gripper: int  # 1 open, 0 closed, after the step
    subtask: str
    subtask_index: int


@dataclass
class Episode:
    task: Task
    seed: int
    steps: list[EpisodeStep] = field(default_factory=list)
    success: bool = False
    final_image: np.ndarray | None = None

    @property
    def instruction(self) -> str:
        return self.task.instruction()

    @property
    def subtasks(self) -> list[str]:
        return self.task.subtasks()

    def subtask_starts(self) -> list[int]:
        """Index of the first step of each subtask that was reached."""
        starts: list[int] = []
        for i, step in enumerate(self.steps):
            if not starts or step.subtask_index != self.steps[starts[-1]].subtask_index:
                starts.append(i)
        return starts

    def deltas_cm(self) -> np.ndarray:
        """(N, 3) executed deltas, the input of the action language's merge_trajectory."""
        return np.array([s.delta_cm for s in self.steps], dtype=np.float64).reshape(-1, 3)

    def gripper_states(self) -> np.ndarray:
        return np.array([s.gripper for s in self.steps], dtype=np.int64)


class _Stuck(Exception):
    """The world refused to move the gripper any closer to a waypoint."""


class ScriptedExpert:
    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.config = config or ExpertConfig()

    def run(
        self, world: SimWorld, task: Task, seed: int, image_size: int | None = None, view: str = TABLE_VIEW,
        first_subtask: int = 0,
    ) -> Episode:
        """Solve `task` in `world` (mutated in place); render images in `view` when image_size is given.
        first_subtask > 0: the subtasks before it count as done where the world stands, one still
        step each, so the episode still carries the task's whole subtask list."""
        if image_size is not None:
            from vlm2vla_ros.sim.render import render  # cv2 is only needed when rendering

            def look() -> np.ndarray | None:
                return render(world, image_size, image_size, view)
        else:

            def look() -> np.ndarray | None:
                return None

        episode = Episode(task=task, seed=seed)
        run = _Run(self.config, world, task, random.Random(f"vlm2vla-sim-expert:{seed}"), episode, look)
        try:
            for index, subtask in enumerate(task.plan):
                if index < first_subtask:
                    run.still(index, subtask)
                else:
                    run.do(index, subtask)
        except _Stuck:
            pass
        episode.success = task.check_success(world)
        episode.final_image = look()
        return episode


@dataclass
class _Run:
    """One episode in progress: the motion primitives and the step recorder."""

    cfg: ExpertConfig
    world: SimWorld
    task: Task
    rng: random.Random
    episode: Episode
    look: Callable[[], np.ndarray | None]
    index: int = 0
    text: str = ""

    def do(self, index: int, subtask: Subtask) -> None:
        self.index, self.text = index, self.task.subtask_text(subtask)
        world = self.world
        if subtask.action == MOVE_ABOVE:
            tx, ty = self._aim_point(world.object(subtask.obj))
            ox, oy, _ = world.held_offset
            z = self._travel_z()
            if world.gripper_z < z:
                self._goto(world.gripper_x, world.gripper_y, z)
            self._goto(tx - ox, ty - oy, z)
        elif subtask.action == GRASP:
            obj = world.object(subtask.obj)
            close_z = obj.z + self.cfg.grasp_height * obj.height
            if self.cfg.grasp_recentres:
                if not world.gripper_open and world.held is None:
                    self._gripper(True)
                self._goto(*self._aim_point(obj), close_z)
            else:
                self._goto(world.gripper_x, world.gripper_y, close_z)
            self._gripper(False)
        elif subtask.action == LIFT:
            self._goto(world.gripper_x, world.gripper_y, self._travel_z())
        elif subtask.action == PLACE:
            held = world.held
            if held is None:
                raise _Stuck
            surface, _ = world.support_below(held.x, held.y, exclude=held.name)
            self._goto(
                world.gripper_x, world.gripper_y, surface + self.cfg.release_gap_m - world.held_offset[2]
            )
            self._gripper(True)
        elif subtask.action == LIFT_GRIPPER:
            self._goto(world.gripper_x, world.gripper_y, max(self._travel_z(), self.cfg.retreat_z_m))
        else:
            raise ValueError(f"the expert has no motion for subtask action {subtask.action!r}.")

    def still(self, index: int, subtask: Subtask) -> None:
        """A subtask done before the episode began: one step that moves nothing."""
        self.index, self.text = index, self.task.subtask_text(subtask)
        self._gripper(self.world.gripper_open)

    def _aim_point(self, obj: SimObject) -> tuple[float, float]:
        """Where to bring the gripper (or the held block's centre) over `obj`, with jitter."""
        if self.world.held is None:
            reach = self.cfg.grasp_jitter_m
        else:
            landing = obj.radius - BOWL_WALL_M if obj.kind == BOWL else obj.radius
            reach = self.cfg.place_jitter_frac * landing
        angle = self.rng.uniform(0.0, 2.0 * math.pi)
        r = reach * math.sqrt(self.rng.random())
        return obj.x + r * math.cos(angle), obj.y + r * math.sin(angle)

    def _travel_z(self) -> float:
        """Fingertip height that keeps fingertips, or the held block, above every object."""
        held = self.world.held
        tops = [o.top for o in self.world.objects if not o.held]
        clear = max(tops, default=0.0) + self.cfg.clearance_m
        if held is None:
            return min(clear, self.world.workspace.z_max)
        bottom = max(clear, self.cfg.min_carry_bottom_m)
        return min(bottom - self.world.held_offset[2], self.world.workspace.z_max)

    def _goto(self, x: float, y: float, z: float) -> None:
        cfg, world = self.cfg, self.world
        while True:
            d = (x - world.gripper_x, y - world.gripper_y, z - world.gripper_z)
            dist = math.sqrt(sum(v * v for v in d))
            if dist < 1e-9:
                return
            length = cfg.step_cm / 100.0 * self.rng.uniform(1 - cfg.speed_jitter, 1 + cfg.speed_jitter)
            length = min(length, cfg.max_step_cm / 100.0)
            if dist <= length:
                step = d
            else:
                wobble = [self.rng.gauss(0.0, cfg.lateral_noise_cm / 100.0) for _ in range(3)]
                step = tuple(v / dist * length + w for v, w in zip(d, wobble))
                norm = math.sqrt(sum(v * v for v in step))
                cap = cfg.max_step_cm / 100.0
                if norm > cap:
                    step = tuple(v * cap / norm for v in step)
            if max(abs(v) for v in self._record(step, world.gripper_open)) < 1e-12:
                raise _Stuck

    def _gripper(self, open_: bool) -> None:
        self._record((0.0, 0.0, 0.0), open_)

    def _record(self, step: tuple[float, float, float], open_: bool) -> tuple[float, float, float]:
        if len(self.episode.steps) >= self.cfg.max_steps:
            raise _Stuck
        image = self.look()
        executed = self.world.move_gripper(*step)
        self.world.set_gripper(open_)
        self.episode.steps.append(
            EpisodeStep(
                image=image,
                delta_cm=tuple(v * 100.0 for v in executed),
                gripper=int(self.world.gripper_open),
                subtask=self.text,
                subtask_index=self.index,
            )
        )
        return executed


def run_expert(
    task_kind: str | None, seed: int, image_size: int = 224, render_images: bool = True
) -> Episode:
    """Make the seeded scene for `task_kind` and let the scripted expert solve it."""
    world, task = make_scene(seed, task_kind)
    return ScriptedExpert().run(world, task, seed, image_size if render_images else None)
