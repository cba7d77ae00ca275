"""Training step time and memory of a random-weight model with Gemma-3-12B-IT's exact architecture.

One optimiser step as `vlm2vla-train` takes it: a batch of real dataset examples (a folder that
`vlm2vla-dataset build` wrote) through the project's AnswerOnlyCollator, forward and backward
in bfloat16, AdamW (0.9, 0.999, 1e-8, lr 5e-5). LoRA r=16, alpha=32 on all language-model
linears (the paper's VLM2VLA), or with --full every weight trainable (the paper's baseline's
full fine-tuning). Batches are collated before timing, so the figure is the GPU's; collation
time is reported beside it. The tokenizer is the tiny model's, so text token counts differ
from Gemma-3's; the 256 image tokens per image, which dominate, do not.

Prints one JSON object. Usage:
    python benchmarks/gemma3_12b_train_step.py --data DATASET                  # GPU, the 12B shape
    python benchmarks/gemma3_12b_train_step.py --data DATASET --batch-size 8 --no-checkpointing
    python benchmarks/gemma3_12b_train_step.py --data DATASET --full
    python benchmarks/gemma3_12b_train_step.py --data DATASET --tiny --steps 2   # any CPU: checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from gemma3_12b import build_random_gemma3, device_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (train.jsonl + images)")
    parser.add_argument("--tiny", action="store_true", help="scaled-down config on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1, help="examples per step (the paper: 1 per GPU x 8 accumulated)")
    parser.add_argument("--no-checkpointing", action="store_true", help="keep activations instead of recomputing them")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after this many seconds of steps and report those done (for a short GPU lease)")
    args = parser.parse_args(argv)

    import torch
    from peft import get_peft_model

    from vlm2vla_ros.data.builder import read_examples
    from vlm2vla_ros.policy.transformers_backend import paper_lora_config
    from vlm2vla_ros.training.collator import AnswerOnlyCollator

    examples = read_examples(args.data / "train.jsonl")
    if not examples:
        raise SystemExit(f"{args.data}/train.jsonl holds no examples")
    built = build_random_gemma3(args.tiny)
    model, device = built.model, built.device
    model.config.use_cache = False
    if not args.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not args.full:
        model = get_peft_model(model, paper_lora_config(r=16, alpha=32))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=5e-5, betas=(0.9, 0.999), eps=1e-8, fused=device == "cuda")

    collator = AnswerOnlyCollator(built.processor, max_length=args.max_length)
    batches, collate_s = [], []
    for step in range(args.warmup + args.steps):
        chosen = [examples[(step * args.batch_size + i) % len(examples)] for i in range(args.batch_size)]
        start = time.perf_counter()
        batches.append(collator(chosen))
        collate_s.append(time.perf_counter() - start)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for index, batch in enumerate(batches):
        if args.max_seconds is not None and rows and time.perf_counter() - started > args.max_seconds:
            break
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(built.dtype)
        sync()
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        sync()
        seconds = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise SystemExit(f"step {index}: the loss is {loss.item()}")
        if index >= args.warmup:
            tokens = int(batch["attention_mask"].sum())
            rows.append({"step_s": seconds, "tokens": tokens, "answer_tokens": int((batch["labels"] != -100).sum())})
            print(f"step {len(rows)}: {seconds:.2f} s", file=sys.stderr, flush=True)

    steps = [row["step_s"] for row in rows]
    median = statistics.median(steps)
    report = {
        "model": "gemma-3-12b-it architecture, random weights" if not args.tiny else "scaled-down gemma-3 (--tiny)",
        "device": device_name(device),
        "torch": torch.__version__,
        "dtype": str(built.dtype).replace("torch.", ""),
        "method": "full fine-tuning" if args.full else "LoRA r=16 alpha=32, all language-model linears",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "batch_size": args.batch_size,
        "gradient_checkpointing": not args.no_checkpointing,
        "steps": len(rows),
        "median_step_s": median,
        "max_step_s": max(steps),
        "examples_per_s": args.batch_size / median,
        "tokens_per_step_mean": statistics.mean(row["tokens"] for row in rows),
        "answer_tokens_per_step_mean": statistics.mean(row["answer_tokens"] for row in rows),
        "tokens_per_s": statistics.mean(row["tokens"] for row in rows) / median,
        "collate_s_per_step_median": statistics.median(collate_s),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "build_s": built.build_s,
        "dataset": str(args.data),
        "stages": sorted({e.get("stage", "?") for e in examples}),
    }
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
