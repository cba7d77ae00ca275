"""Training settings: the paper's recipe as defaults, strictly checked (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vlm2vla_ros.checks import positive, real
from vlm2vla_ros.data.builder import STAGES

DTYPES = ("auto", "bfloat16", "float16", "float32")
_KINDS = {"int": (numbers.Integral, "a whole number"), "float": (numbers.Real, "a number"),
          "str": (str, "a string"), "bool": (bool, "true or false")}
"""The scalar fields' annotations -> what their values must be (a YAML "16" is text, not 16)."""


@dataclass(frozen=True)
class TrainConfig:
    """LoRA fine-tuning of an image-text model on a vlm2vla-dataset folder.

    Defaults are the paper's: LoRA r=16, alpha=32 on every linear layer of the language
    model, AdamW (0.9, 0.999, 1e-8), lr 5e-5 with linear decay, global batch 8, max length
    1024, one epoch, bf16 on GPU.
    """

    model_path: str = ""
    dataset_dir: str = ""
    output_dir: str = ""
    stages: tuple[str, ...] = STAGES
    stage_repeats: Mapping[str, int] = field(default_factory=dict)
    """Copies of each training example of a stage (default 1), e.g. {"subtasks": 6}."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1
    """Positive: stop after this many optimiser steps (overrides epochs)."""
    batch_size: int = 1
    """Per device."""
    grad_accum: int = 8
    """batch_size x grad_accum x devices = global batch (paper: 8)."""
    max_length: int = 1024
    dtype: str = "auto"
    """auto: bfloat16 on CUDA, float32 on CPU."""
    load_in_4bit: bool = False
    """QLoRA: a 4-bit NF4 base (CUDA + bitsandbytes)."""
    gradient_checkpointing: bool = True
    logging_steps: int = 1
    save_steps: int = 200
    save_total_limit: int = 2
    """Checkpoints kept in checkpoints/ (the newest ones); 0 keeps every one (transformers' convention)."""
    eval_steps: int = 0
    """Positive: validation loss every this many steps (on val.jsonl, which must then hold examples)."""
    seed: int = 0
    device: str = "auto"
    """auto, cpu or cuda (multi-GPU: launch with accelerate, leave auto)."""
    dataloader_workers: int = 0
    report_to: str = "none"
    plan_total_head: float = 0.0
    """Weight of a temporary regression head (place_head.PlaceHead) trained beside the adapter
    on every plan that states its total ("[dx, dy, dz] cm to go.", the dataset's plan_totals),
    to give that total from the state that writes the plan's first token; not saved with the
    adapter. 0 = off (the paper's recipe)."""
    vision_learning_rate: float = 0.0
    """Positive: LoRA on the vision tower's linears too, trained at this rate (its own optimiser
    group, on the same schedule) while the language model's adapter trains at learning_rate.
    0 = off (the paper's layout: the language model alone)."""

    def __post_init__(self) -> None:
        for name in ("model_path", "dataset_dir", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        self._check_types()
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown or not self.stages:
            raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {list(self.stages)}")
        for stage, copies in self.stage_repeats.items():
            if stage not in STAGES or isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
                raise ValueError(f"stage_repeats maps stages of {STAGES} to whole numbers >= 1, got {stage!r}: {copies!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps != -1 and self.max_steps < 1:  # (transformers reads any other value below 1 as "by epochs")
            raise ValueError(f"max_steps must be at least 1, or -1 to train by epochs, got {self.max_steps}")
        if self.save_total_limit < 0:
            raise ValueError(f"save_total_limit must be 0 (keep every checkpoint) or more, got {self.save_total_limit}")
        if self.eval_steps < 0:
            raise ValueError(f"eval_steps must be 0 (off) or more, got {self.eval_steps}")
        for name in ("vision_learning_rate", "plan_total_head", "weight_decay"):  # (0: off)
            real(getattr(self, name), name, lo=0.0)
        for name in ("learning_rate", "epochs"):
            positive(getattr(self, name), name)
        # transformers reads a warmup of 1 or more as a count of steps, not a fraction of them
        for name in ("warmup_ratio", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} is a fraction: at least 0 and below 1, got {getattr(self, name)}")

    def _check_types(self) -> None:
        """Refuse values of the wrong type by name, before a comparison fails on them obscurely."""
        for f in fields(self):
            kind = _KINDS.get(str(f.type))
            value = getattr(self, f.name)
            if kind is None or (isinstance(value, kind[0]) and (f.type == "bool" or not isinstance(value, bool))):
                continue
            hint = " (YAML reads a number like 5e-5 as text; write 5.0e-5)" if f.type == "float" and _numeric_text(value) else ""
            raise ValueError(f"{f.name} must be {kind[1]}, got {value!r}{hint}")
        if isinstance(self.stages, str) or not isinstance(self.stages, (list, tuple)) \
                or not all(isinstance(stage, str) for stage in self.stages):
            raise ValueError(f"stages must be a list of stage names of {STAGES}, got {self.stages!r}")
        if not isinstance(self.stage_repeats, Mapping):
            raise ValueError(f"stage_repeats must be a mapping of stage to copies, got {self.stage_repeats!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stages"] = list(self.stages)
        data["stage_repeats"] = dict(self.stage_repeats)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        if isinstance(values.get("stages"), list):
            values["stages"] = tuple(values["stages"])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> TrainConfig:
        import yaml

        file = Path(path)
        if not file.is_file():
            raise ValueError(f"training config file {file} does not exist")
        try:
            data: Any | None = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:  # one line for the CLI: the parser's own text spans several
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ValueError(f"training config file {file} is not valid YAML: {problem}{where}") from None
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"training config file {file} must hold a mapping")
        return cls.from_dict({**(data or {}), **overrides})


def _numeric_text(value: Any) -> bool:
    """Text that reads as a number, as PyYAML leaves 5e-5 (YAML 1.1 wants a dot in a float)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
