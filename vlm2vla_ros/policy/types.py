"""What flows between the policy engine, its backends and its callers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlm2vla_ros.action_language import ActionChunk

from .config import StageSampling

Message = dict[str, Any]


class PolicyError(RuntimeError):
    """The policy could not produce an answer (load failure, server error, retries exhausted).

    failures counts the answers that were generated but could not be used.
    """

    def __init__(self, message: str, stage: str = "", failures: int = 0) -> None:
        super().__init__(message)
        self.stage = stage
        self.failures = failures


@dataclass
class GenerationRequest:
    """One model call: a conversation with its images, how to sample, and what it may write."""

    messages: list[Message]
    images: tuple[np.ndarray, ...]
    sampling: StageSampling
    max_new_tokens: int
    regex: str | None = None
    """Constrain the answer to this regular expression (None: free text)."""
    use_adapter: bool = True
    """False runs the base model (the verifier), with the LoRA adapter switched off."""
    seed: int | None = None
    prefix: Any = None
    """A backend's cached state from an earlier call whose conversation this one extends."""
    keep_prefix: bool = False
    """Return reusable state in Generation.prefix."""
    first_token_choices: tuple[str, ...] = ()
    """Answers whose first tokens' logits at the answer's first position come back in
    Generation.first_token_logits (the verifier's margin between "advance" and "retry")."""


@dataclass
class Generation:
    text: str
    new_tokens: int
    prompt_tokens: int
    reused_tokens: int
    seconds: float
    prefix: Any = None
    cut_off: bool = False
    """It stopped at max_new_tokens, not at an end token: the text may be incomplete."""
    first_token_logits: dict[str, float] | None = None
    """The raw logit of each of the request's first_token_choices' first token; None when the
    backend cannot tell (a server) or two choices begin with the same token."""


@dataclass(frozen=True)
class SubtaskResult:
    subtasks: list[str]
    raw_text: str
    timings: dict[str, float]
    tokens: dict[str, int]
    parse_failures: int = 0


@dataclass(frozen=True)
class CycleResult:
    """One cycle's motion plan and action chunk; timings in seconds, tokens generated per stage.

    tokens also holds "plan_prompt"/"chunk_prompt" (prompt length) and "chunk_reused"
    (prompt tokens taken from the plan stage's cache instead of being prefilled again).
    """

    plan: str
    chunk: ActionChunk
    raw_plan: str
    raw_chunk: str
    timings: dict[str, float]
    tokens: dict[str, int]
    parse_failures: int = 0


@dataclass(frozen=True)
class VerifyResult:
    advance: bool
    raw_text: str
    timings: dict[str, float]
    tokens: dict[str, int] = field(default_factory=dict)
    margin: float | None = None
    """The first-token logit of "advance" minus that of "retry" (greedy decoding advances when it
    is above 0); None when the backend cannot tell."""


def as_images(images: Sequence[Any], expected: int) -> tuple[np.ndarray, ...]:
    """Check camera images: HxWx3 uint8 RGB arrays, as many as the prompt expects."""
    if len(images) != expected:
        raise ValueError(f"expected {expected} image(s), got {len(images)}")
    checked = []
    for index, image in enumerate(images, start=1):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            dtype = getattr(image, "dtype", type(image).__name__)
            raise ValueError(f"image {index} must be an HxWx3 uint8 RGB array, got shape {shape} and dtype {dtype}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image {index} is empty (shape {image.shape})")
        checked.append(image)
    return tuple(checked)
