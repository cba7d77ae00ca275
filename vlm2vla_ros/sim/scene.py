"""Seeded random scenes: 3-5 objects on the table, and a task of the requested kind.

Blocks all have different colours, and there is at most one bowl and one plate, so every
instruction names exactly one object. The same seed (and kind) always gives the same scene.
"""

from __future__ import annotations

import math
import random

from vlm2vla_ros.sim.tasks import (
    MULTI_STEP,
    PICK_PLACE_LIFT,
    PICK_UP,
    PUT_IN,
    PUT_ON,
    STACK,
    TASK_KINDS,
    Placement,
    Referent,
    Task,
    noun_phrase,
)
from vlm2vla_ros.sim.world import BLOCK, BLOCK_SHAPES, BOWL, PLATE, SimObject, SimWorld, Workspace

# Saturated, mutually distinct colours for blocks; containers take muted ones.
BLOCK_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 80, 230),
    "yellow": (245, 215, 20),
    "orange": (250, 130, 20),
    "purple": (140, 50, 190),
    "pink": (250, 110, 190),
    "cyan": (20, 205, 225),
}
CONTAINER_COLOURS = {"white": (245, 245, 245), "grey": (125, 125, 130), "brown": (125, 75, 35)}

BLOCK_SIZE_M = (0.040, 0.050)
BLOCK_HEIGHT_M = (0.035, 0.050)
BOWL_SIZE_M = (0.13, 0.15)
BOWL_HEIGHT_M = 0.05
PLATE_SIZE_M = (0.15, 0.17)
PLATE_HEIGHT_M = 0.015
GAP_M = 0.02  # free space kept between footprints
MAX_LAYOUT_TRIES = 5000


def _feasible(kind: str, n_blocks: int, containers: list[str]) -> bool:
    if kind == PICK_UP:
        return n_blocks >= 1
    if kind == PUT_IN:
        return n_blocks >= 1 and BOWL in containers
    if kind == PUT_ON:
        return n_blocks >= 1 and PLATE in containers
    if kind == PICK_PLACE_LIFT:
        return n_blocks >= 1 and bool(containers)
    if kind == STACK:
        return n_blocks >= 2
    # MULTI_STEP: two blocks move, each to a different target (a container or a third block).
    return n_blocks >= 2 and len(containers) + n_blocks - 2 >= 2


def _composition(rng: random.Random, kind: str) -> tuple[int, list[str]]:
    while True:
        n_objects = rng.randint(3, 5)
        containers = [c for c in (BOWL, PLATE) if rng.random() < 0.6]
        n_blocks = n_objects - len(containers)
        if _feasible(kind, n_blocks, containers):
            return n_blocks, containers


def _layout(rng: random.Random, radii: list[float], ws: Workspace) -> list[tuple[float, float]]:
    """Non-overlapping centres for discs of the given radii, inside the workspace."""
    for _ in range(MAX_LAYOUT_TRIES):
        centres: list[tuple[float, float]] = []
        for r in radii:
            x = rng.uniform(ws.x_min + r + GAP_M, ws.x_max - r - GAP_M)
            y = rng.uniform(ws.y_min + r + GAP_M, ws.y_max - r - GAP_M)
            clear = all(math.hypot(x - cx, y - cy) >= r + rr + GAP_M for (cx, cy), rr in zip(centres, radii))
            if not clear:
                break
            centres.append((x, y))
        if len(centres) == len(radii):
            return centres
    raise RuntimeError(f"could not lay out {len(radii)} objects without overlap in {MAX_LAYOUT_TRIES} tries.")


def _make_objects(rng: random.Random, n_blocks: int, containers: list[str], ws: Workspace) -> list[SimObject]:
    specs = []
    for colour in rng.sample(sorted(BLOCK_COLOURS), n_blocks):
        size = rng.uniform(*BLOCK_SIZE_M)
        specs.append(
            (
                BLOCK,
                colour,
                BLOCK_COLOURS[colour],
                rng.choice(BLOCK_SHAPES),
                size,
                rng.uniform(*BLOCK_HEIGHT_M),
            )
        )
    for kind, colour in zip(containers, rng.sample(sorted(CONTAINER_COLOURS), len(containers))):
        size = rng.uniform(*(BOWL_SIZE_M if kind == BOWL else PLATE_SIZE_M))
        height = BOWL_HEIGHT_M if kind == BOWL else PLATE_HEIGHT_M
        specs.append((kind, colour, CONTAINER_COLOURS[colour], kind, size, height))
    rng.shuffle(specs)
    # Place the big ones first: far fewer rejected layouts.
    order = sorted(range(len(specs)), key=lambda i: -specs[i][4])
    centres = _layout(rng, [specs[i][4] / 2 for i in order], ws)
    objects = [None] * len(specs)
    for i, (x, y) in zip(order, centres):
        kind, colour, rgb, shape, size, height = specs[i]
        objects[i] = SimObject(noun_phrase(kind, colour), kind, colour, rgb, shape, x, y, 0.0, size, height)
    return objects


def _make_task(rng: random.Random, kind: str, objects: list[SimObject]) -> Task:
    referents = tuple(Referent(o.name, o.kind, o.colour) for o in objects)
    blocks = [o.name for o in objects if o.kind == BLOCK]
    containers = [o.name for o in objects if o.kind != BLOCK]
    by_kind = {o.kind: o.name for o in objects if o.kind != BLOCK}
    a = rng.choice(blocks)
    if kind == PICK_UP:
        return Task(kind, referents, pick=a)
    if kind in (PUT_IN, PUT_ON):
        return Task(kind, referents, placements=(Placement(a, by_kind[BOWL if kind == PUT_IN else PLATE]),))
    if kind == PICK_PLACE_LIFT:
        return Task(kind, referents, placements=(Placement(a, rng.choice(containers)),), lift_after=True)
    a, b = rng.sample(blocks, 2)
    if kind == STACK:
        return Task(kind, referents, placements=(Placement(a, b),))
    targets = containers + [n for n in blocks if n not in (a, b)]
    t1, t2 = rng.sample(targets, 2)
    return Task(MULTI_STEP, referents, placements=(Placement(a, t1), Placement(b, t2)))


def make_scene(
    seed: int, task_kind: str | None = None, workspace: Workspace | None = None
) -> tuple[SimWorld, Task]:
    """A random scene and task for `seed`; the kind is drawn from the seed when not given."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    if task_kind is not None and task_kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {task_kind!r}; choose one of {TASK_KINDS}.")
    ws = workspace or Workspace()
    rng = random.Random(f"vlm2vla-sim-scene:{seed}")
    drawn = rng.choice(TASK_KINDS)  # drawn even when given: make_scene(s) == make_scene(s, its kind)
    kind = task_kind or drawn
    n_blocks, containers = _composition(rng, kind)
    objects = _make_objects(rng, n_blocks, containers, ws)
    task = _make_task(rng, kind, objects)
    world = SimWorld(
        objects,
        gripper_x=rng.uniform(0.15, 0.30),
        gripper_y=rng.uniform(-0.05, 0.05),
        gripper_z=rng.uniform(0.12, 0.18),
        gripper_open=True,
        workspace=ws,
    )
    return world, task
