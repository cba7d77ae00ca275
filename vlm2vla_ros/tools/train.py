"""vlm2vla-train: LoRA fine-tuning of the policy on a vlm2vla-dataset folder.

    vlm2vla-train --model MODEL_DIR --data DATASET --out ADAPTER_DIR [--config train.yaml] [--resume]

Defaults are the paper's recipe (TrainConfig); a YAML file and flags override them. On several
GPUs launch the same command with `accelerate launch -m vlm2vla_ros.tools.train ...`. The
output folder is a PEFT adapter the policy engine loads as adapter_path, plus action_language.json
(the dataset's limits and prompts, checked when the policy loads it), loss.png and train_log.json.
Ctrl-C saves a checkpoint; --resume continues from the last one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vlm2vla-train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="base model folder (Hugging Face format, e.g. Gemma-3-12B-IT)")
    ap.add_argument("--data", help="dataset folder written by vlm2vla-dataset build")
    ap.add_argument("--out", help="output folder for the adapter")
    ap.add_argument("--config", default=None, help="YAML file of TrainConfig fields")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    ap.add_argument("--stages", nargs="+", default=None, help="train only these stages")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None, help="learning rate")
    ap.add_argument("--batch-size", type=int, default=None, help="per device")
    ap.add_argument("--grad-accum", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--lora-r", type=int, default=None)
    ap.add_argument("--lora-alpha", type=int, default=None)
    ap.add_argument("--dtype", default=None, choices=("auto", "bfloat16", "float16", "float32"))
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    ap.add_argument("--load-in-4bit", action="store_true", default=None, help="QLoRA: 4-bit NF4 base (CUDA)")
    ap.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None)
    ap.add_argument("--save-steps", type=int, default=None)
    ap.add_argument("--eval-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    return ap.parse_args(argv)


FLAGS = {
    "model": "model_path", "data": "dataset_dir", "out": "output_dir", "stages": "stages", "max_steps": "max_steps",
    "epochs": "epochs", "lr": "learning_rate", "batch_size": "batch_size", "grad_accum": "grad_accum",
    "max_length": "max_length", "lora_r": "lora_r", "lora_alpha": "lora_alpha", "dtype": "dtype", "device": "device",
    "load_in_4bit": "load_in_4bit", "gradient_checkpointing": "gradient_checkpointing", "save_steps": "save_steps",
    "eval_steps": "eval_steps", "seed": "seed",
}


def build_config(args: argparse.Namespace) -> Any:
    from vlm2vla_ros.training import TrainConfig

    overrides: dict[str, Any] = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
    if args.config:
        return TrainConfig.from_yaml(args.config, **overrides)
    return TrainConfig.from_dict(overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from vlm2vla_ros.training import TrainError, train

    try:
        config = build_config(args)
        result = train(config, resume=args.resume)
    except (ValueError, OSError, TrainError) as exc:  # OSError: a full disk, a missing file; its text names it
        print(f"vlm2vla-train: {exc}", file=sys.stderr)
        return 1
    if result.interrupted:
        print(f"interrupted at step {result.steps}; checkpoint saved, rerun with --resume to continue")
        return 130
    print(
        f"trained {result.steps} steps on {result.train_examples} examples in {result.seconds:.1f} s; "
        f"loss {_loss(result.first_loss)} -> {_loss(result.last_loss)}; adapter: {result.output_dir}"
    )
    return 0


def _loss(value: float | None) -> str:
    """A logged loss, or n/a when no step was logged (logging_steps above the step count)."""
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
