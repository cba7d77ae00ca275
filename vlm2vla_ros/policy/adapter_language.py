"""The action language an adapter was trained to write, and whether a policy config still speaks it.

A LoRA adapter learns the numbers' format (decimals), the chunk sizes and ranges (ActionLimits)
and the prompt wording of its training data. A policy config that differs decodes the adapter's
answers under another grammar or asks it in words it never saw. The trainer records the
dataset's limits and prompts beside the adapter (ADAPTER_LANGUAGE_FILE); load_policy checks
them: another number format is an error under constrained decoding (the grammar would force it
on the adapter), tighter limits or other prompts are warnings, since tightening the limits for a
robot is a legitimate choice.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm2vla_ros.action_language import ActionLimits

from .config import PolicyConfig
from .prompts import PromptTemplates
from .types import PolicyError

ADAPTER_LANGUAGE_FILE = "action_language.json"
"""Beside an adapter's weights: {"limits": {...}, "prompts": {...}} of the data it was trained on."""
ADAPTER_STAGES = ("subtasks", "plan", "chunk")
"""The stages whose prompts the adapter answers; the verify stage runs with it switched off
(PolicyEngine.verify), so its prompt is not compared."""


@dataclass(frozen=True)
class AdapterLanguage:
    limits: ActionLimits
    prompts: PromptTemplates

    def to_dict(self) -> dict[str, Any]:
        return {"limits": dataclasses.asdict(self.limits), "prompts": dataclasses.asdict(self.prompts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterLanguage:
        """ValueError (TypeError for a wrong shape) for anything ActionLimits or PromptTemplates reject."""
        return cls(ActionLimits(**data["limits"]), PromptTemplates.from_dict(dict(data["prompts"])))


def read_adapter_language(adapter_dir: str | Path) -> AdapterLanguage | None:
    """The recorded language of an adapter; None when it has no record (adapters trained before
    the record, or by other tools). PolicyError for a record that cannot be read."""
    path = Path(adapter_dir) / ADAPTER_LANGUAGE_FILE
    if not path.is_file():
        return None
    try:
        return AdapterLanguage.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as exc:
        raise PolicyError(f"{path} does not record the adapter's action language ({type(exc).__name__}: {exc}); "
                          "delete it to load the adapter unchecked", "load") from None


def language_differences(config: PolicyConfig, learnt: AdapterLanguage) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a policy config against the language its adapter learnt."""
    errors: list[str] = []
    warnings: list[str] = []
    mine = config.limits
    if mine.decimals != learnt.limits.decimals:
        said = f"the adapter writes numbers with {learnt.limits.decimals} decimal(s) and the policy's limits read {mine.decimals}"
        if config.constrained:  # the chunk grammar allows exactly limits.decimals digits
            errors.append(f"{said}: set limits.decimals to {learnt.limits.decimals}")
        else:
            warnings.append(f"{said}; the parser rounds its numbers to that")
    if mine.max_steps < learnt.limits.max_steps:
        warnings.append(f"chunks are cut to {mine.max_steps} step(s); the adapter learnt up to {learnt.limits.max_steps}")
    if mine.max_abs_cm < learnt.limits.max_abs_cm:
        warnings.append(f"moves are held to {mine.max_abs_cm} cm; the adapter learnt up to {learnt.limits.max_abs_cm} cm")
    changed = [stage for stage in ADAPTER_STAGES if getattr(config.prompts, stage) != getattr(learnt.prompts, stage)]
    if changed:
        warnings.append(f"the prompt template(s) {', '.join(changed)} differ from the ones the adapter was trained on")
    return errors, warnings
