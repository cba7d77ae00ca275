"""Which chunks may move the robot: the executor node's gating, free of ROS so it is tested alone.

The node feeds a ChunkGate what it hears (e-stops, task states on /policy/status, chunks) under
its own lock, and acts on the answers: refuse a chunk, stop the running one, or reset the chunk
executor's latch for a new task. Topics keep no order between them, so a chunk can arrive after
the policy has ended or replaced its task; the gate remembers the latest states to refuse it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .. import topics
from .safety import chunk_image_problem

POLICY_STATES_KEPT = 64
"""How many tasks' latest /policy/status states a gate remembers (to refuse their stale chunks)."""


@dataclass
class ChunkGate:
    max_chunk_image_age_s: float  # refuse a chunk planned from a frame this much older than the newest (0: off)
    kept: int = POLICY_STATES_KEPT
    estopped: bool = False  # latched by a stop on /executor/estop; only a latched release clears it
    task_id: str = ""  # the task whose chunk ran last: the chunk executor's latch belongs to it
    _states: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def state_of(self, task_id: str) -> str:
        """The task's latest state on /policy/status ('' if none heard, or forgotten)."""
        return self._states.get(task_id, "")

    def policy_status(self, task_id: str, state: str, running_task_id: str | None) -> str:
        """Record a task's state; returns why the running chunk (of `running_task_id`, None if
        none runs) must stop now, or ''. A task id sent again after its task ended is a new task:
        its first chunk resets the latch as any new task's does."""
        if state == topics.PLANNING and task_id == self.task_id and self.state_of(task_id) in topics.TERMINAL_STATES:
            self.task_id = ""
        self._states.pop(task_id, None)
        self._states[task_id] = state
        while len(self._states) > self.kept:
            self._states.popitem(last=False)
        if running_task_id is None:
            return ""
        if task_id != running_task_id and state in (topics.PLANNING, topics.RUNNING):
            return f"task {running_task_id} was pre-empted by task {task_id}"
        if task_id == running_task_id and state in topics.TERMINAL_STATES:
            return f"task {running_task_id} ended ({state})"
        return ""

    def refusal(self, task_id: str, image_stamp_ns: int, newest_image_stamp_ns: int | None) -> str:
        """Why a chunk of this task, planned from the frame stamped image_stamp_ns, must not run
        whatever else is running ('' if nothing)."""
        if self.estopped:
            return "e-stop is engaged: release it (false on /executor/estop) first"
        ended = self.state_of(task_id)
        if ended in topics.TERMINAL_STATES:
            return f"task {task_id} has ended ({ended}) on {topics.POLICY_STATUS.name}"
        return chunk_image_problem(image_stamp_ns, newest_image_stamp_ns, self.max_chunk_image_age_s)

    def admit(self, task_id: str) -> bool:
        """A chunk of this task starts; True when it starts a new task (reset the latch first)."""
        if task_id == self.task_id:
            return False
        self.task_id = task_id
        return True
