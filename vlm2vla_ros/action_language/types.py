"""Value types of the action language, shared by parser, decoder, dataset builder and executor.

Units: centimetres in the task frame (+dx forward, +dy left, +dz up); gripper 1 open, 0 closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from ..checks import positive


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

    steps: tuple[ActionStep, ...]

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class ActionLimits:
    """What a chunk may contain; the grammar, the parser and the formatter all obey it."""

    max_abs_cm: float = 10.0
    max_steps: int = 16
    decimals: int = 1

    def __post_init__(self) -> None:
        # Checked once here so grammar, parser and formatter can trust every limits object.
        if not isinstance(self.decimals, int) or not 0 <= self.decimals <= 4:
            raise ValueError(f"ActionLimits.decimals must be an integer from 0 to 4, got {self.decimals!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"ActionLimits.max_steps must be a positive integer, got {self.max_steps!r}")
        positive(self.max_abs_cm, "ActionLimits.max_abs_cm")
        if self.max_units < 1:
            raise ValueError(
                f"ActionLimits.max_abs_cm={self.max_abs_cm!r} is below the resolution of {self.decimals} decimals"
            )

    @property
    def max_units(self) -> int:
        """Largest magnitude in units of 10**-decimals cm (10.0 cm at 1 decimal -> 100)."""
        scaled = Decimal(repr(float(self.max_abs_cm))).scaleb(self.decimals)
        return int(scaled.to_integral_value(rounding=ROUND_FLOOR))

    @property
    def largest_cm(self) -> float:
        """The largest magnitude a chunk can state: max_abs_cm cut to the decimals (10.04 -> 10.0)."""
        return self.max_units / 10**self.decimals


class ActionParseError(ValueError):
    """Text that is not unambiguously one valid chunk (or subtask list)."""

    def __init__(self, reason: str, text: str) -> None:
        self.reason = reason
        self.text = text
        shown = text if len(text) <= 200 else text[:200] + "..."
        super().__init__(f"{reason}: {shown!r}")


DEFAULT_LIMITS = ActionLimits()
"""The limits every function uses when none are given (10 cm, 16 steps, 1 decimal)."""


class ActionValueError(ValueError):
    """Values that cannot form valid actions (a chunk outside limits, a malformed trajectory)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
