"""Value types of the action language, shared by parser, decoder, dataset builder and executor.

Units: centimetres in the task frame (+dx forward, +dy left, +dz up); gripper 1 open, 0 closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class ActionStep:
    """One move of the end effector, in centimetres, then a gripper command (1 open, 0 closed)."""

    dx: float
    dy: float
    dz: float
    gripper: int


@dataclass(frozen=True)
class ActionChunk:
    """An ordered, non-empty list of steps, executed one after another."""

    steps: Tuple[ActionStep, ...]

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class ActionLimits:
    """What a chunk may contain; the grammar, the parser and the formatter all obey it."""

    max_abs_cm: float = 10.0
    max_steps: int = 16
    decimals: int = 1


class ActionParseError(ValueError):
    """Text that is not unambiguously one valid chunk (or subtask list)."""

    def __init__(self, reason: str, text: str) -> None:
        self.reason = reason
        self.text = text
        shown = text if len(text) <= 200 else text[:200] + "..."
        super().__init__(f"{reason}: {shown!r}")
