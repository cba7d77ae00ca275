"""Strict readers for configuration dicts: every bad value is refused with a sentence naming it.

Configuration decides how far a motor may move, so a typo must fail loudly at start-up
instead of silently falling back to a default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def check_keys(data: Any, allowed: Iterable[str], where: str) -> Mapping[str, Any]:
    """Return `data` as a mapping after refusing anything that is not a dict of known keys."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    allowed = tuple(allowed)
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {list(allowed)}")
    return data


def real(value: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in [lo, hi] (bools and strings are refused, they are always typos here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or not lo <= out <= hi:
        raise ValueError(f"{where} must be a finite number in [{lo}, {hi}], got {value!r}")
    return out


def positive(value: Any, where: str, hi: float = math.inf) -> float:
    """A finite number in (0, hi]."""
    out = real(value, where, 0.0, hi)
    if out <= 0.0:
        raise ValueError(f"{where} must be greater than zero, got {value!r}")
    return out


def integer(value: Any, where: str, lo: int, hi: int) -> int:
    """An int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{where} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    return value
