#!/usr/bin/env python3
"""Finding 14 of docs/miniature.md: can the chunk stage write numbers it is given in its prompt?

Trains the documented run's LoRA (ExperimentConfig.lora_train) on the experiment's action data with
three chunk requests: the engine's own ("plain"), plus the expert's summed move ("move"), plus
the expert's chunk itself ("chunk", so the answer is a copy). Each adapter then writes the first
"move above" chunk of held-out expert demonstrations, the expert's plan given, greedy under the
chunk grammar, and the chunk's summed move is scored against the expert's. With --copy-steps N,
the base is first trained N steps (every weight but the tower's) to repeat random number lists,
and the same three adapters are trained on that copy base as well.

    .venv/bin/python scripts/chunk_copy_probe.py --out /tmp/copy-probe --copy-steps 1200

About 25 minutes on 2 CPU cores. Prints one line per (base, request) and writes results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REQUESTS = ("plain", "move", "chunk")
TOLERANCE_CM = 1.5


def summed_move(chunk: list[list[float]]) -> list[float]:
    return [round(sum(step[axis] for step in chunk), 1) for axis in range(3)]


def with_hint(example: dict, request: str) -> dict:
    """The example with its chunk request extended by the hint `request` names."""
    example = json.loads(json.dumps(example))
    if example["stage"] != "chunk" or request == "plain":
        return example
    ask = example["messages"][2]["content"][-1]
    if request == "move":
        ask["text"] += f"\nThe gripper must move {summed_move(example['meta']['chunk'])} cm in all."
    else:
        ask["text"] += "\nThe chunk: " + example["messages"][3]["content"][-1]["text"]
    return example


def number_list(rng: random.Random) -> str:
    rows = [[round(rng.uniform(-30, 30), 1) for _ in range(3)] + [rng.randint(0, 1)] for _ in range(rng.randint(1, 3))]
    return "[" + ", ".join("[" + ", ".join(str(v) for v in row) + "]" for row in rows) + "]"


def copy_base(base: Path, out: Path, steps: int, image: str) -> dict:
    """The base trained `steps` steps to repeat number lists; returns its exact-copy score."""
    from PIL import Image

    from vlm2vla_ros.miniature.model import load_model, save_model, train_full
    from vlm2vla_ros.policy import PolicyConfig, StageSampling, load_policy, prompts
    from vlm2vla_ros.policy.types import GenerationRequest

    def messages(text: str) -> list:
        return prompts.with_answer(prompts.question_messages("Repeat: " + text, 1), text)

    rng = random.Random(0)
    examples = []
    for i in range(6000):
        text = number_list(rng)
        examples.append({"id": f"copy-{i}", "stage": "copy", "messages": messages(text),
                         "images": [image], "meta": {}})
    model, processor = load_model(base)
    trained = train_full(model, processor, examples, steps, 32, 1e-3, 0, warmup_steps=20, log=print,
                         log_every=max(1, steps // 10), train_vision_tower=False)
    save_model(model, processor, out)
    shutil.copy(base / "sim_camera.json", out / "sim_camera.json")
    engine = load_policy(PolicyConfig(model_path=str(out), device="cpu", dtype="float32", seed=0))
    pixels = np.asarray(Image.open(image).convert("RGB"))
    rng = random.Random(99)
    exact = 0
    for _ in range(20):
        text = number_list(rng)
        request = GenerationRequest(messages=messages(text)[:-1], images=(pixels,),
                                    sampling=StageSampling(temperature=0.0), max_new_tokens=80)
        exact += engine.backend.generate(request).text.strip() == text
    engine.close()
    return {"steps": steps, "losses": trained.losses, "exact_copies_of_20": exact}


def hinted_dataset(plain: Path, out: Path, request: str) -> Path:
    if request == "plain":
        return plain
    out.mkdir(parents=True, exist_ok=True)
    for item in plain.iterdir():
        if item.suffix == ".jsonl":
            rows = [with_hint(json.loads(line), request) for line in item.read_text().splitlines() if line.strip()]
            (out / item.name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        elif not (out / item.name).exists():
            os.symlink(item, out / item.name)
    return out


def score(base: Path, adapter: Path, held_out: Path, request: str, config) -> dict:
    from PIL import Image

    from vlm2vla_ros.action_language import chunk_regex, parse_action_chunk
    from vlm2vla_ros.miniature.experiment import policy_config
    from vlm2vla_ros.policy import StageSampling, load_policy
    from vlm2vla_ros.policy.types import GenerationRequest

    engine = load_policy(policy_config(base, adapter, config))
    limits = engine.config.limits
    rows = []
    for split in ("train", "val"):
        for line in (held_out / f"{split}.jsonl").read_text().splitlines():
            example = json.loads(line)
            meta = example["meta"]
            if example["stage"] != "chunk" or meta["subtask_index"] != 0 or not meta["subtask"].startswith("move above"):
                continue
            example = with_hint(example, request)
            pixels = np.asarray(Image.open(held_out / example["images"][0]).convert("RGB"))
            text = engine.backend.generate(GenerationRequest(
                messages=example["messages"][:-1], images=(pixels,), sampling=StageSampling(temperature=0.0),
                max_new_tokens=200, regex=chunk_regex(limits))).text
            chunk = parse_action_chunk(text, limits)
            rows.append({"want": summed_move(meta["chunk"]),
                         "got": summed_move([[s.dx, s.dy, s.dz] for s in chunk.steps]), "text": text})
    engine.close()
    errors = np.array([[abs(r["got"][a] - r["want"][a]) for a in range(3)] for r in rows])
    wanted = np.array([r["want"] for r in rows])
    return {
        "chunks": len(rows),
        "mean_abs_error_cm": errors.mean(0).round(2).tolist(),
        "within_tolerance": int(((errors[:, 0] <= TOLERANCE_CM) & (errors[:, 1] <= TOLERANCE_CM)).sum()),
        "mean_guess_error_cm": np.abs(wanted - wanted.mean(0)).mean(0).round(2).tolist(),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    parser.add_argument("--base", type=Path, default=REPO / "models" / "vlm2vla-mini" / "base")
    parser.add_argument("--copy-steps", type=int, default=0, help="also train a copy base for this many steps")
    parser.add_argument("--lora-steps", type=int, default=None, help="default: the documented run's")
    parser.add_argument("--train-seeds", type=int, default=None, help="default: the documented run's")
    parser.add_argument("--held-out-seeds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty")

    from vlm2vla_ros.miniature import data
    from vlm2vla_ros.miniature.experiment import ExperimentConfig
    from vlm2vla_ros.miniature.vqa import ImageWriter, sample_state
    from vlm2vla_ros.sim.views import read_model_view
    from vlm2vla_ros.training.trainer import train

    out = args.out
    view = read_model_view(args.base)
    documented = ExperimentConfig()
    config = dataclasses.replace(
        documented, view=view, chunk_temperature=0.0,
        finetune_steps=args.lora_steps or documented.finetune_steps, action_seeds=args.train_seeds or documented.action_seeds,
    )
    data.export_episodes(out / "episodes", config.action_kinds, range(config.action_seeds), config.action_augment,
                         config.image_size, view)
    data.build_action_dataset(out / "episodes", out / "dataset", config.action_build())
    first = config.eval_first_seed
    data.export_episodes(out / "held_out_episodes", ("pick_up", "put_in"), range(first, first + args.held_out_seeds), 0,
                         config.image_size, view)
    data.build_action_dataset(out / "held_out_episodes", out / "held_out", config.action_build())

    bases = {"shipped": args.base}
    results: dict = {"view": view, "lora_steps": config.finetune_steps}
    if args.copy_steps:
        image = ImageWriter(out / "copy_image", 64, view).write(sample_state(0)[0])
        results["copy_training"] = copy_base(args.base, out / "copy_base", args.copy_steps, image)
        print(f"copy base: {results['copy_training']['exact_copies_of_20']} of 20 lists copied exactly")
        bases["copy"] = out / "copy_base"
    for name, base in bases.items():
        for request in REQUESTS:
            dataset = hinted_dataset(out / "dataset", out / f"dataset_{request}", request)
            adapter = out / f"adapter_{name}_{request}"
            train(config.lora_train(base, dataset, adapter))
            scored = score(base, adapter, out / "held_out", request, config)
            results[f"{name}/{request}"] = scored
            x, y, z = scored["mean_abs_error_cm"]
            print(f"{name} base, {request} request: mean error {x} / {y} / {z} cm, "
                  f"{scored['within_tolerance']} of {scored['chunks']} within {TOLERANCE_CM} cm")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
