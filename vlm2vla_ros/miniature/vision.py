"""Pretraining the vision tower on its own first, as Gemma-3's SigLIP encoder was.

A vision transformer trained from scratch only through a language model's answers learns very
slowly: on CPU budgets its features stay image-agnostic and the language model falls back on
answer priors (measured: VQA at chance after 1000 steps). Real VLMs start from a separately
pretrained encoder (SigLIP, contrastive image-text pretraining). The miniature's stand-in is
a dense "where is what" objective: a temporary linear head on every patch token predicts soft
heat maps of each block colour, the bowl and plate (with their colour), block shapes, the
gripper's fingertips and its shadow (whose gap shows its height), and whether the gripper is
open or holding something. The head is discarded; the tower and the VLM are then trained
together on questions. Targets come from the world state projected with the renderer's camera.

A second term keeps the tokens about the image. Trained on heat maps alone, 95% of every
output token's squared norm was the same for every image (its position embedding carried
through), so the language model saw nearly identical image tokens whatever the scene; on
one-block scenes it learned nothing from them in 500 steps. The centring term (the squared
batch mean of each token over its mean squared norm) brings that share to a few percent, and
the same language model then reads a block's colour within 300 steps (docs/miniature.md).

A third term writes a summary of the whole scene into every patch token: each block colour's
presence, position and height, the bowl's and plate's, and the gripper's position and state.
Heat maps say where things are only to a patch (8 pixels, about 8 cm); with them alone a linear
probe on the 16 image tokens placed a lone block to 7 cm, and the language model never learned
to say where anything is. The summary puts positions in every token in a form one attention
step can read: after this stage the error is about 2 cm (docs/miniature.md, finding 5).

The image projection keeps its random start. Aligning it to the word embeddings of each
channel (tried first) keeps only what the head reads, drops where things are, and did not
make the language model read the image any sooner (docs/miniature.md).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vlm2vla_ros.sim.render import Projection, render
from vlm2vla_ros.sim.scene import BLOCK_COLOURS, CONTAINER_COLOURS
from vlm2vla_ros.sim.views import GRIPPER_VIEW, TABLE_VIEW
from vlm2vla_ros.sim.world import BLOCK, BLOCK_SHAPES, BOWL, PLATE, SimWorld

_BLOCK_COLOURS = sorted(BLOCK_COLOURS)
_CONTAINER_COLOURS = sorted(CONTAINER_COLOURS)
CHANNELS = (
    [f"block:{c}" for c in _BLOCK_COLOURS]
    + ["bowl", "plate"]
    + [f"container:{c}" for c in _CONTAINER_COLOURS]
    + [f"shape:{s}" for s in BLOCK_SHAPES]
    + ["gripper", "shadow", "gripper_open", "holding"]
    + ["background"]
)
SIGMA_PATCHES = 0.6
# Scene summary: metres mapped to about [-1, 1] over the table (x 0.125-0.425 m, y +-0.15 m).
SUMMARY_X0, SUMMARY_Y0, SUMMARY_Z0, SUMMARY_SCALE = 0.275, 0.0, 0.1, 0.15
SUMMARY_OBJECTS = [f"block:{c}" for c in _BLOCK_COLOURS] + [BOWL, PLATE]
SUMMARY_FIELDS = ("present", "x", "y", "top")
GRIPPER_FIELDS = ("x", "y", "z", "open", "holding")
SUMMARY_SIZE = len(SUMMARY_OBJECTS) * len(SUMMARY_FIELDS) + len(GRIPPER_FIELDS)


def heat_maps(world: SimWorld, grid: int, image_size: int, view: str = TABLE_VIEW) -> np.ndarray:
    """(grid, grid, len(CHANNELS)) soft targets in [0, 1] for a world rendered at image_size."""
    camera = Projection.of(world, image_size, image_size, view)
    maps = np.zeros((grid, grid, len(CHANNELS)), dtype=np.float32)
    centres = (np.arange(grid) + 0.5) / grid

    def heat(x: float, y: float, z: float) -> np.ndarray:
        u, v = camera.pt(x, y, z)
        du = (centres[None, :] - u / image_size) * grid
        dv = (centres[:, None] - v / image_size) * grid
        return np.exp(-(du**2 + dv**2) / (2 * SIGMA_PATCHES**2))

    def add(channel: str, values: np.ndarray) -> None:
        k = CHANNELS.index(channel)
        maps[:, :, k] = np.maximum(maps[:, :, k], values)

    for obj in world.objects:
        h = heat(obj.x, obj.y, obj.top)
        if obj.kind == BLOCK:
            add(f"block:{obj.colour}", h)
            add(f"shape:{obj.shape}", h)
        else:
            add(BOWL if obj.kind == BOWL else PLATE, h)
            add(f"container:{obj.colour}", h)
    gx, gy, gz = world.gripper
    held = world.held
    floor, _ = world.support_below(gx, gy, exclude=held.name if held else None)
    tip = heat(gx, gy, gz)
    add("gripper", tip)
    add("shadow", heat(gx, gy, floor))
    if world.gripper_open:
        add("gripper_open", tip)
    if held is not None:
        add("holding", tip)
    maps[:, :, -1] = np.clip(1.0 - maps[:, :, :-1].max(axis=2), 0.0, 1.0)
    return maps


def scene_summary(world: SimWorld, view: str = TABLE_VIEW) -> np.ndarray:
    """(SUMMARY_SIZE,) the world state every patch token is trained to carry: per block colour,
    bowl and plate (present, x, y, top; zeros when absent), then the gripper (x, y, z, open,
    holding), positions scaled by SUMMARY_SCALE around the table's middle. In the gripper view
    the objects' positions are from the gripper's fingertips, as the image shows them."""
    summary = np.zeros(SUMMARY_SIZE, dtype=np.float32)
    width = len(SUMMARY_FIELDS)
    gx, gy, gz = world.gripper
    x0, y0, z0 = (gx, gy, gz) if view == GRIPPER_VIEW else (SUMMARY_X0, SUMMARY_Y0, SUMMARY_Z0)
    for obj in world.objects:
        key = f"block:{obj.colour}" if obj.kind == BLOCK else obj.kind
        k = SUMMARY_OBJECTS.index(key) * width
        summary[k : k + width] = (
            1.0,
            (obj.x - x0) / SUMMARY_SCALE,
            (obj.y - y0) / SUMMARY_SCALE,
            (obj.top - z0) / SUMMARY_SCALE,
        )
    summary[-len(GRIPPER_FIELDS) :] = (
        (gx - SUMMARY_X0) / SUMMARY_SCALE,
        (gy - SUMMARY_Y0) / SUMMARY_SCALE,
        (gz - SUMMARY_Z0) / SUMMARY_SCALE,
        float(world.gripper_open),
        float(world.held is not None),
    )
    return summary


def pixel_values(processor: Any, worlds: Sequence[SimWorld], image_size: int, view: str) -> Any:
    """The processor's pixel tensor of the worlds drawn at image_size in `view`."""
    from PIL import Image

    images = [Image.fromarray(render(w, image_size, image_size, view)) for w in worlds]
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


def block_from_gripper_cm(world: SimWorld) -> np.ndarray:
    """(3,) where the top of the world's one block is from the gripper's fingertips, in cm."""
    (block,) = world.objects
    gx, gy, gz = world.gripper
    return np.array([block.x - gx, block.y - gy, block.top - gz], dtype=np.float32) * 100


def blocks_by_colour_cm(world: SimWorld, colours: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(len(colours), 3) where the top of each colour's block is from the gripper's fingertips, in
    cm (zeros for a colour not in the world), and (len(colours), 1) 1 for the colours present."""
    places = np.zeros((len(colours), 3), dtype=np.float32)
    present = np.zeros((len(colours), 1), dtype=np.float32)
    gx, gy, gz = world.gripper
    for block in world.objects:
        k = colours.index(block.colour)
        places[k] = np.array([block.x - gx, block.y - gy, block.top - gz]) * 100
        present[k] = 1
    return places, present


def train_reading(
    model: Any,
    processor: Any,
    draw: Callable[[int], Sequence[SimWorld]],
    steps: int,
    learning_rate: float,
    seed: int,
    image_size: int,
    view: str,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
    colours: Sequence[str] = (),
) -> list[float]:
    """Train the tower and the image projection, with a temporary linear head on all the image
    tokens the language model gets, to give where a lone block is from the gripper
    (block_from_gripper_cm) on draw(step)'s new one-block scenes; returns the losses (mean
    squared error in units of 10 cm). With `colours`, the head gives every colour's place
    instead (blocks_by_colour_cm, the loss over the colours present), on scenes of any number of
    blocks: a reading that says which block is where, as binding needs (finding 20).

    The heat maps and the scene summary spread the tower over everything; after them the tokens
    placed a lone block to 2.9 cm (17% within a grasp's 1.5 cm, by a ridge probe), and a language
    model trained to read them answered about 5 cm off. 1,000 steps of this on 64 new scenes each
    brought the probe to 0.9 cm (71%), and 400 steps of relative questions then had the language
    model answer within 1.5 cm in most scenes (docs/miniature.md, finding 17)."""
    import torch

    inner = model.model
    torch.manual_seed(seed)
    head = torch.nn.Linear(model.config.mm_tokens_per_image * model.config.text_config.hidden_size, 3 * max(1, len(colours)))
    params = list(inner.vision_tower.parameters()) + list(inner.multi_modal_projector.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    losses: list[float] = []
    inner.vision_tower.train()
    start = time.perf_counter()
    for step in range(steps):
        worlds = draw(step)
        pixels = pixel_values(processor, worlds, image_size, view)
        tokens = inner.get_image_features(pixels).pooler_output.flatten(1)
        if colours:
            places, present = zip(*(blocks_by_colour_cm(w, colours) for w in worlds))
            target, mask = torch.from_numpy(np.stack(places)) / 10, torch.from_numpy(np.stack(present))
            loss = ((head(tokens).view_as(target) - target).pow(2) * mask).sum() / (mask.sum() * 3)
        else:
            target = torch.from_numpy(np.stack([block_from_gripper_cm(w) for w in worlds])) / 10
            loss = torch.nn.functional.mse_loss(head(tokens), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            log(f"reading step {step + 1}/{steps}: loss {sum(recent) / len(recent):.4f} ({time.perf_counter() - start:.0f} s)")
    inner.vision_tower.eval()
    return losses


def image_independent_share(features: Any) -> Any:
    """The part of (batch, tokens, hidden) features that is the same for every image: the
    squared batch mean of each token over the tokens' mean squared norm (0 to 1)."""
    return features.mean(0).pow(2).sum(-1).mean() / features.pow(2).sum(-1).mean()


def pretrain_vision(
    model: Any,
    processor: Any,
    worlds: Sequence[SimWorld],
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    image_size: int,
    centring_weight: float = 1.0,
    summary_weight: float = 1.0,
    view: str = TABLE_VIEW,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
) -> list[float]:
    """Train the model's vision tower with temporary per-patch heads; returns the losses (heat-map
    error, plus `summary_weight` times the scene-summary error of every token, plus
    `centring_weight` times the image-independent share of the tokens)."""
    import torch

    tower = model.model.vision_tower
    config = tower.config
    grid = config.image_size // config.patch_size
    pixels = pixel_values(processor, worlds, image_size, view)
    targets = torch.from_numpy(np.stack([heat_maps(w, grid, image_size, view) for w in worlds])).reshape(len(worlds), grid * grid, -1)
    summaries = torch.from_numpy(np.stack([scene_summary(w, view) for w in worlds]))
    torch.manual_seed(seed)
    head = torch.nn.Linear(config.hidden_size, len(CHANNELS), bias=False)
    summary_head = torch.nn.Linear(config.hidden_size, SUMMARY_SIZE)
    params = list(tower.parameters()) + list(head.parameters()) + list(summary_head.parameters())
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    rng = random.Random(seed)
    losses: list[float] = []
    tower.train()
    start = time.perf_counter()
    for step in range(steps):
        index = torch.tensor(rng.sample(range(len(worlds)), min(batch_size, len(worlds))))
        features = tower(pixel_values=pixels[index]).last_hidden_state
        loss = torch.nn.functional.mse_loss(head(features), targets[index]) * len(CHANNELS)
        summary_error = (summary_head(features) - summaries[index][:, None, :]).pow(2).mean((0, 1)).sum()
        loss = loss + summary_weight * summary_error + centring_weight * image_independent_share(features)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            log(f"vision step {step + 1}/{steps}: loss {sum(recent) / len(recent):.4f} ({time.perf_counter() - start:.0f} s)")
    tower.eval()
    return losses
