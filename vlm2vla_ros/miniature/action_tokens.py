"""The baseline the paper compares with: actions as reserved tokens, every weight fine-tuned.

Each chunk step becomes four new vocabulary entries, one per binned coordinate and one for
the gripper, e.g. `<ax_25><ay_20><az_14><ag_1>` for [2.5, 0.0, -3.0, 1]. Coordinates are
binned in BIN_CM steps over the action language's ±max_abs_cm (41 bins per axis at 0.5 cm),
like OpenVLA's 256 bins over each dimension's range. Subtask lists and plans stay text, so
the baseline differs from VLM2VLA only in how actions are written and in what is trained.

At run time ActionTokenBackend decodes the chunk stage without the text grammar (the answer
is reserved tokens) and hands the engine the chunk in canonical text, so the same engine,
executor and closed-loop evaluation run both models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from vlm2vla_ros.action_language import (
    DEFAULT_LIMITS,
    ActionChunk,
    ActionLimits,
    ActionParseError,
    ActionStep,
    chunk_regex,
    format_action_chunk,
)
from vlm2vla_ros.policy.transformers_backend import TransformersBackend
from vlm2vla_ros.policy.types import Generation, GenerationRequest

BIN_CM = 0.5
AXES = ("ax", "ay", "az")
_STEP = re.compile(r"<ax_(\d{2})>\s*<ay_(\d{2})>\s*<az_(\d{2})>\s*<ag_([01])>")


def bins(limits: ActionLimits = DEFAULT_LIMITS) -> int:
    """Bins per axis: -max_abs_cm .. +max_abs_cm in BIN_CM steps."""
    return 2 * int(round(limits.max_abs_cm / BIN_CM)) + 1


def action_vocabulary(limits: ActionLimits = DEFAULT_LIMITS) -> list[str]:
    """The reserved tokens, in a fixed order."""
    n = bins(limits)
    return [f"<{axis}_{k:02d}>" for axis in AXES for k in range(n)] + ["<ag_0>", "<ag_1>"]


def _bin(value: float, limits: ActionLimits) -> int:
    half = (bins(limits) - 1) // 2
    return min(max(int(round(value / BIN_CM)) + half, 0), 2 * half)


def encode_chunk(steps: Sequence[Sequence[float]], limits: ActionLimits = DEFAULT_LIMITS) -> str:
    """[[dx, dy, dz, gripper], ...] (cm) -> reserved-token text."""
    if not steps:
        raise ValueError("an action chunk needs at least one step")
    out = []
    for step in steps:
        dx, dy, dz, gripper = step
        if int(gripper) not in (0, 1):
            raise ValueError(f"gripper must be 0 or 1, got {gripper!r}")
        out.append("".join(f"<{axis}_{_bin(v, limits):02d}>" for axis, v in zip(AXES, (dx, dy, dz))) + f"<ag_{int(gripper)}>")
    return "".join(out)


def decode_chunk(text: str, limits: ActionLimits = DEFAULT_LIMITS) -> ActionChunk:
    """Reserved-token text -> ActionChunk; at most limits.max_steps complete steps are read.

    Raises ActionParseError when the text holds no complete step."""
    half = (bins(limits) - 1) // 2
    steps = []
    for match in _STEP.finditer(text):
        values = [(int(k) - half) * BIN_CM for k in match.groups()[:3]]
        if any(not 0 <= int(k) <= 2 * half for k in match.groups()[:3]):
            raise ActionParseError("an action token is out of range", text)
        steps.append(ActionStep(*values, int(match.group(4))))
    if not steps:
        raise ActionParseError("no complete action-token step", text)
    return ActionChunk(tuple(steps[: limits.max_steps]))


def add_action_tokens(model: Any, processor: Any, limits: ActionLimits = DEFAULT_LIMITS) -> int:
    """Add the reserved tokens to the tokenizer (as ordinary added tokens, so decoding keeps
    them) and grow the embeddings (tied with the output layer); returns how many were added."""
    added = processor.tokenizer.add_tokens(action_vocabulary(limits), special_tokens=False)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=True)
    return added


def to_action_token_examples(examples: Sequence[dict[str, Any]], limits: ActionLimits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """The same examples with every chunk answer rewritten as reserved tokens."""
    out = []
    for example in examples:
        if example["stage"] == "chunk":
            example = dict(example)
            messages = [dict(m) for m in example["messages"]]
            messages[-1] = {"role": "assistant", "content": [{"type": "text", "text": encode_chunk(example["meta"]["chunk"], limits)}]}
            example["messages"] = messages
        out.append(example)
    return out


class ActionTokenBackend(TransformersBackend):
    """The in-process backend for a model that writes chunks as reserved tokens.

    Requests constrained by the chunk grammar are decoded freely and their reserved tokens
    turned into canonical chunk text; text that holds no complete step is passed through, so
    the engine counts a parse failure and retries, as with any unusable answer."""

    def __init__(self, model: Any, processor: Any, limits: ActionLimits = DEFAULT_LIMITS) -> None:
        super().__init__(model, processor, has_adapter=False)
        self.limits = limits
        self.chunk_regex = chunk_regex(limits)

    def generate(self, request: GenerationRequest) -> Generation:
        if request.regex != self.chunk_regex:
            return super().generate(request)
        generation = super().generate(dataclasses.replace(request, regex=None))
        with contextlib.suppress(ActionParseError):  # no complete step: the engine counts a failure
            generation.text = format_action_chunk(decode_chunk(generation.text, self.limits), self.limits)
        return generation
