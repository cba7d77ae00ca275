"""One file configures the robot side: config/stretch_re1.yaml, read here into checked dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checks import check_keys
from .embodiment import EmbodimentConfig
from .head import HeadTrackingConfig
from .safety import SafetyConfig
from .stretch_body_backend import StretchBodySettings


@dataclass(frozen=True)
class RobotConfig:
    embodiment: EmbodimentConfig = field(default_factory=EmbodimentConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    stretch_body: StretchBodySettings = field(default_factory=StretchBodySettings)
    head: HeadTrackingConfig = field(default_factory=HeadTrackingConfig)

    @classmethod
    def from_dict(cls, data: Any) -> RobotConfig:
        """Sections left out keep their defaults; unknown sections or keys are errors."""
        d = check_keys(data, ("embodiment", "safety", "stretch_body", "head"), "robot config")
        return cls(
            embodiment=EmbodimentConfig.from_dict(d.get("embodiment", {})),
            safety=SafetyConfig.from_dict(d.get("safety", {})),
            stretch_body=StretchBodySettings.from_dict(d.get("stretch_body", {})),
            head=HeadTrackingConfig.from_dict(d.get("head", {})),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> RobotConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read robot config {path}: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"robot config {path} is not valid YAML: {exc}") from exc
        try:
            return cls.from_dict({} if data is None else data)
        except ValueError as exc:
            raise ValueError(f"robot config {path}: {exc}") from exc
