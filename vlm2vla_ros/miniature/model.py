"""The miniature base VLM (Gemma-3 architecture, built by the tiny-model factory) and the
full-weight training loop used to pretrain it and to fine-tune the action-token baseline.

The loop uses the training module's AnswerOnlyCollator (the engine's chat template, loss on
the answer only) and plain AdamW with linear warm-up and decay; every weight is trained, or
every weight but the vision tower's. train_full revisits a fixed set of examples, tokenised
once up front; train_stream takes new examples for every step.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlm2vla_ros.policy.tiny_model import build_tiny_model
from vlm2vla_ros.training.collator import AnswerOnlyCollator
from vlm2vla_ros.training.place_head import Place, PlaceHead, place_targets


@dataclass(frozen=True)
class BaseSpec:
    """Sizes of the base model (Gemma3ForConditionalGeneration with a SigLIP tower)."""

    vocab_size: int = 1536
    hidden_size: int = 128
    layers: int = 4
    intermediate_size: int = 384
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32
    image_size: int = 64
    patch_size: int = 8
    mm_tokens_per_image: int = 16
    vision_hidden_size: int = 96
    vision_intermediate_size: int = 384
    vision_layers: int = 3
    vision_heads: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_base(out_dir: Path, spec: BaseSpec, seed: int, corpus: Iterable[str], split_digits: bool = False) -> Path:
    """A randomly initialised base folder with a tokenizer trained on the project's text + corpus
    (every digit a token of its own with split_digits, tiny_model.train_tokenizer)."""
    import torch
    from transformers import AutoModelForImageTextToText

    build_tiny_model(
        out_dir,
        seed=seed,
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.layers,
        image_size=spec.image_size,
        mm_tokens_per_image=spec.mm_tokens_per_image,
        extra_texts=list(corpus),
        intermediate_size=spec.intermediate_size,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        vision_hidden_size=spec.vision_hidden_size,
        vision_intermediate_size=spec.vision_intermediate_size,
        vision_layers=spec.vision_layers,
        vision_heads=spec.vision_heads,
        patch_size=spec.patch_size,
        split_digits=split_digits,
    )
    # The factory gives the image projection a large random scale so an untrained model
    # reacts to images; a model trained from scratch starts better from the usual 1/sqrt(fan-in).
    model = AutoModelForImageTextToText.from_pretrained(out_dir, local_files_only=True, dtype=torch.float32)
    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        weight.normal_(0.0, 1.0 / math.sqrt(weight.shape[0]), generator=torch.Generator().manual_seed(seed))
    model.save_pretrained(out_dir)
    return out_dir


@dataclass
class FullTrainResult:
    steps: int
    seconds: float
    losses: list[float]
    """The language-modelling loss of every step (without the place head's term)."""
    examples: int
    place_losses: list[float] = field(default_factory=list)
    """The place head's squared error of every step that had a target ((10 cm)^2, summed over
    dx, dy, dz); empty without a head."""


LENGTH_WINDOW = 16
"""Batches per window that batch_stream sorts by length."""


def batch_stream(
    count: int, batch_size: int, rng: random.Random, lengths: Sequence[int] | None = None
) -> Iterator[list[int]]:
    """Batches of example indices over shuffled epochs, without end.

    Plain (lengths None): consecutive runs of one shuffled order per epoch, an epoch's remainder
    opening the next epoch's first batch. With lengths: each epoch's order is cut into windows
    of LENGTH_WINDOW batches, each window sorted by length and cut into batches, and the epoch's
    whole batches shuffled (a remainder is dropped; the next epoch draws every example again).
    A batch is padded to its longest example, so near-equal lengths save the padding's compute.
    """
    order: list[int] = []
    while True:
        fresh = list(range(count))
        rng.shuffle(fresh)
        if lengths is None:
            order.extend(fresh)
            while True:
                yield order[:batch_size]
                order = order[batch_size:]
                if len(order) < batch_size:
                    break
            continue
        span = batch_size * LENGTH_WINDOW
        batches = []
        for start in range(0, count, span):
            window = sorted(fresh[start : start + span], key=lambda i: lengths[i])
            batches += [window[k : k + batch_size] for k in range(0, len(window), batch_size)]
        whole = [b for b in batches if len(b) == batch_size] or batches
        rng.shuffle(whole)
        yield from whole


def train_full(
    model: Any,
    processor: Any,
    examples: Sequence[dict[str, Any]],
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    warmup_steps: int = 0,
    max_length: int = 512,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
    vision_lr_scale: float = 1.0,
    train_vision_tower: bool = True,
    group_by_length: bool = False,
    fresh: tuple[int, Callable[[int], Sequence[dict[str, Any]]]] | None = None,
    place_head: PlaceHead | None = None,
) -> FullTrainResult:
    """Train the weights of `model` for `steps` optimiser steps over shuffled epochs of examples:
    every weight, or all but the vision tower's when train_vision_tower is False (the image
    projection and the language model still train, at vision_lr_scale for the projection).
    group_by_length batches examples of near-equal length (batch_stream).

    fresh = (count, draw): each batch holds count examples made new for the step by draw(step)
    and batch_size - count from examples. Position reading learned on new scenes fades under
    fixed examples alone, and stays when a quarter of every batch is new (finding 10).

    place_head, when given, trains beside the weights on every example it has a target for."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    count, draw = fresh if fresh is not None else (0, None)
    if not 0 <= count < batch_size:
        raise ValueError(f"fresh examples per batch must be in [0, {batch_size}), got {count}")
    torch.manual_seed(seed)
    collator = AnswerOnlyCollator(processor, max_length=max_length)
    prepared = collator.pretokenize(examples)
    lengths = [len(row.ids) for row in prepared.rows] if group_by_length else None
    stream = batch_stream(len(examples), batch_size - count, random.Random(seed), lengths)
    new = _Drawn(collator, draw, place_head) if draw is not None and count else None
    places = place_targets(place_head, examples)

    def batch(step: int) -> tuple[dict[str, Any], list[Place | None]]:
        indices = next(stream)
        drawn, drawn_places = new(step) if new is not None else (None, [])
        return prepared.batch(indices, drawn), [places[i] for i in indices] + drawn_places

    steps_done, seconds, losses, place_losses = _optimise(
        model, batch, steps, learning_rate, warmup_steps, log, log_every, vision_lr_scale, train_vision_tower, place_head
    )
    return FullTrainResult(steps_done, seconds, losses, len(examples) + (new.examples if new is not None else 0), place_losses)


class _Drawn:
    """Examples made for each step by draw(step), tokenised as a fixed set's are (which is faster
    than the collator's processor call and gives the same tensors) and counted, each with its
    place head target (None without a head); an empty draw is an error."""

    def __init__(self, collator: AnswerOnlyCollator, draw: Callable[[int], Sequence[dict[str, Any]]],
                 place_head: PlaceHead | None = None) -> None:
        self.collator, self.draw, self.place_head, self.examples = collator, draw, place_head, 0

    def __call__(self, step: int) -> tuple[Any, list[Place | None]]:
        examples = self.draw(step)
        if not examples:
            raise ValueError(f"draw({step}) gave no training examples")
        self.examples += len(examples)
        return self.collator.pretokenize(examples), place_targets(self.place_head, examples)


def train_stream(
    model: Any,
    processor: Any,
    draw: Callable[[int], Sequence[dict[str, Any]]],
    steps: int,
    learning_rate: float,
    seed: int,
    warmup_steps: int = 0,
    max_length: int = 512,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
    train_vision_tower: bool = True,
    place_head: PlaceHead | None = None,
) -> FullTrainResult:
    """train_full's optimisation on examples made fresh for every step: draw(step) gives that
    step's batch (_Drawn). Nothing is seen twice, so the training loss is a held-out
    loss (a fixed set of scenes is memorised instead: docs/miniature.md, finding 8)."""
    import torch

    torch.manual_seed(seed)
    new = _Drawn(AnswerOnlyCollator(processor, max_length=max_length), draw, place_head)

    def batch(step: int) -> tuple[dict[str, Any], list[Place | None]]:
        examples, places = new(step)
        return examples.batch(range(len(examples))), places

    steps_done, seconds, losses, place_losses = _optimise(
        model, batch, steps, learning_rate, warmup_steps, log, log_every, 1.0, train_vision_tower, place_head
    )
    return FullTrainResult(steps_done, seconds, losses, new.examples, place_losses)


def _optimise(
    model: Any,
    batch: Callable[[int], tuple[dict[str, Any], list[Place | None]]],
    steps: int,
    learning_rate: float,
    warmup_steps: int,
    log: Callable[[str], None] | None,
    log_every: int,
    vision_lr_scale: float,
    train_vision_tower: bool,
    place_head: PlaceHead | None = None,
) -> tuple[int, float, list[float], list[float]]:
    """AdamW with linear warm-up and decay, gradients clipped to norm 1, on batch(step) (the
    model's inputs and each row's place target) for each step, the place head's term added to
    the loss when there is a head; returns (steps, seconds, losses, place losses). Leaves every
    weight trainable and the model in eval mode."""
    import torch

    model.train()
    model.config.use_cache = False
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(train_vision_tower or "vision_tower" not in name)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    vision = [p for n, p in trained if "vision_tower" in n or "multi_modal_projector" in n]
    ids = {id(p) for p in vision}
    head = list(place_head.linear.parameters()) if place_head is not None else []
    rest = [p for _, p in trained if id(p) not in ids] + head
    clipped = [p for _, p in trained] + head
    groups = [{"params": rest, "lr": learning_rate}, {"params": vision, "lr": learning_rate * vision_lr_scale}]
    optimiser = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    losses: list[float] = []
    place_losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        inputs, places = batch(step)
        if place_head is None:
            loss = lm_loss = model(**inputs).loss
        else:
            out = model(**inputs, output_hidden_states=True)
            lm_loss = out.loss
            place_loss = place_head.loss(out.hidden_states[-1], inputs["labels"], places)
            loss = lm_loss
            if place_loss is not None:
                loss = lm_loss + place_head.weight * place_loss
                place_losses.append(float(place_loss.detach()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clipped, 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(lm_loss.detach()))
        if log is not None and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            place = ""
            if place_losses:
                error = sum(place_losses[-log_every:]) / len(place_losses[-log_every:])
                place = f", place head {PlaceHead.rms_cm(error):.1f} cm rms a side"
            log(f"step {step + 1}/{steps}: loss {sum(recent) / len(recent):.3f}{place} ({time.perf_counter() - start:.0f} s)")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.eval()
    return steps, time.perf_counter() - start, losses, place_losses


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(model, processor) from a local folder, float32 on the CPU."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    return model, processor


def save_model(model: Any, processor: Any, out_dir: Path, dtype: str = "float32") -> Path:
    """save_pretrained of weights (optionally stored as bfloat16/float16) and processor."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    if dtype != "float32":
        import copy

        model = copy.deepcopy(model).to(getattr(torch, dtype))
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
