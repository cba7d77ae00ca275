"""The kinematic tabletop simulator: world, seeded scenes and tasks, renderer, expert, backend.

No ROS import anywhere in this package; OpenCV is needed only to render (render.py).
See docs/simulator.md.
"""

from vlm2vla_ros.sim.expert import Episode, EpisodeStep, ExpertConfig, ScriptedExpert, run_expert
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.tasks import LANGUAGES, TASK_KINDS, Placement, Subtask, Task
from vlm2vla_ros.sim.world import SimObject, SimWorld, Workspace

__all__ = [
    "LANGUAGES",
    "TASK_KINDS",
    "Episode",
    "EpisodeStep",
    "ExpertConfig",
    "Placement",
    "ScriptedExpert",
    "SimObject",
    "SimWorld",
    "Subtask",
    "Task",
    "Workspace",
    "make_scene",
    "run_expert",
]
