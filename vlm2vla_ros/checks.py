"""Strict readers for configuration values: every bad value is refused with a sentence naming it.

Configuration decides how far a motor may move and how long a watchdog waits, so a typo must
fail loudly at start-up instead of silently falling back to a default (an infinite or NaN
timeout would switch a watchdog off without a word).
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


def _number(value: Any, where: str) -> float:
    """value as a float; bools and strings are refused (they are always typos here), and an int
    past a float's range reads as infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def real(value: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in [lo, hi]."""
    out = _number(value, where)
    if not math.isfinite(out) or not lo <= out <= hi:
        bounds = f">= {lo:g}" if hi == math.inf and lo > -math.inf else f"in [{lo:g}, {hi:g}]"
        raise ValueError(f"{where} must be a finite number {bounds}, got {value!r}")
    return out


def positive(value: Any, where: str, hi: float = math.inf) -> float:
    """A finite number in (0, hi]."""
    out = _number(value, where)
    if not math.isfinite(out) or not 0.0 < out <= hi:
        bounds = "> 0" if hi == math.inf else f"in (0, {hi:g}]"
        raise ValueError(f"{where} must be a finite number {bounds}, got {value!r}")
    return out


def integer(value: Any, where: str, lo: int, hi: int | None = None) -> int:
    """An int in [lo, hi] (hi None: at least lo)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or hi is not None and value > hi:
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{where} must be an integer {bounds}, got {value!r}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    return value
