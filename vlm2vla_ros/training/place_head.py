"""A temporary regression head on the language model, trained beside the answer's tokens.

The miniature's pretraining uses it on relative questions (the asked block's place) and its
LoRA stage can use it on motion plans that state their total (`plan_totals`): in both, the
answer starts with "[dx, dy, dz]" in cm, and the head asks the state that writes the first
token to hold that vector as a dense target, where the digits are a saw-tooth function of it
(docs/miniature.md, findings 25 and 31). The head is dropped after training: the saved model
or adapter is a plain one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from vlm2vla_ros.action_language import read_plan_total
from vlm2vla_ros.data.builder import answer_text

from .collator import IGNORE_INDEX

Place = tuple[float, float, float]


class PlaceHead:
    """A linear head on the language model's last hidden state at the position that predicts an
    answer's first token, trained to give `target(example)` ([dx, dy, dz] in cm; None for
    examples without one) in units of 10 cm, with squared error times `weight`."""

    UNIT_CM = 10.0

    def __init__(self, hidden_size: int, weight: float, target: Callable[[dict[str, Any]], Place | None], seed: int) -> None:
        import torch

        if not weight > 0:
            raise ValueError(f"the place head's weight must be positive, got {weight}")
        generator = torch.Generator().manual_seed(seed)
        self.linear = torch.nn.utils.skip_init(torch.nn.Linear, hidden_size, 3)  # initialised below, from the seed
        with torch.no_grad():
            bound = 1.0 / math.sqrt(hidden_size)
            self.linear.weight.uniform_(-bound, bound, generator=generator)
            self.linear.bias.zero_()
        self.weight, self.target = weight, target

    def loss(self, hidden: Any, labels: Any, targets: Sequence[Place | None]) -> Any | None:
        """Mean squared error over the rows with a target (None when no row has one), in float32;
        the head must be on the hidden state's device."""
        import torch

        rows = [k for k, t in enumerate(targets) if t is not None]
        if not rows:
            return None
        index = torch.tensor(rows, device=hidden.device)
        answer = labels[index] != IGNORE_INDEX
        if not bool(answer.any(dim=1).all()):
            raise ValueError("a row with a place target has no answer tokens")
        before_answer = answer.float().argmax(dim=1) - 1  # the state that predicts the answer's first token
        predicted = self.linear(hidden[index, before_answer].float())
        wanted = torch.tensor([targets[k] for k in rows], dtype=predicted.dtype, device=hidden.device) / self.UNIT_CM
        return (predicted - wanted).pow(2).sum(dim=-1).mean()

    @classmethod
    def rms_cm(cls, loss: float) -> float:
        """A loss of this head as its root-mean-square error per axis, in cm."""
        return cls.UNIT_CM * math.sqrt(loss / 3)


def place_targets(place_head: PlaceHead | None, examples: Sequence[dict[str, Any]]) -> list[Place | None]:
    """Each example's place target for the head, None for all without one."""
    return [place_head.target(e) if place_head is not None else None for e in examples]


def plan_total_cm(example: dict[str, Any]) -> Place | None:
    """The total a motion plan example's answer states, "[dx, dy, dz] cm to go." (data
    BuildConfig.plan_totals), None for other stages and for plans without one."""
    if example.get("stage") != "plan":
        return None
    total = read_plan_total(answer_text(example))
    return total[0] if total is not None else None
