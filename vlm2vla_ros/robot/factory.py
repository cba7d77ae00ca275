"""Build a backend by name; each backend's heavy imports happen only when it is chosen."""

from __future__ import annotations

from typing import Any

from .config import RobotConfig
from .interface import RobotBackend

BACKENDS = ("stretch_body", "sim")


def make_backend(name: str, config: RobotConfig | None = None, **sim_kwargs: Any) -> RobotBackend:
    """ "stretch_body" (real hardware) or "sim" (the kinematic simulator; sim_kwargs go to it)."""
    config = config or RobotConfig()
    if name == "stretch_body":
        if sim_kwargs:
            raise ValueError(f"the stretch_body backend takes no extra arguments, got {sorted(sim_kwargs)}")
        from .stretch_body_backend import StretchBodyBackend

        return StretchBodyBackend(config.safety.max_speed_mps, config.stretch_body)
    if name == "sim":
        from ..sim.backend import SimBackend

        return SimBackend(**sim_kwargs)
    raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}")
