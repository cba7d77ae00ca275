"""Cycle latency (plan + chunk) of a random-weight model with Gemma-3-12B-IT's exact architecture.

Random weights of the same architecture cost the same FLOPs and bytes as the real ones, so
this measures what the real 12B model costs per cycle without downloading it. The run goes
through the project's own backend (prompts, chat template, image processing, prefix reuse,
LoRA r=16 on all language-model linears, optional xgrammar constraints); the tokenizer is the
tiny model's (Gemma-3's is not available offline), so token counts are fixed by flags instead
(plan and chunk lengths default to realistic Gemma-3 counts: a 4-step chunk is ~64 tokens
because Gemma-3's tokenizer splits digits).

Prints one JSON object. Usage:
    python benchmarks/gemma3_12b_latency.py                 # GPU, bf16, the real 12B shape
    python benchmarks/gemma3_12b_latency.py --tiny --cycles 3   # any CPU: checks the script
    python benchmarks/gemma3_12b_latency.py --tiny --text-layers 48 --cycles 10   # generate()'s own cost
    python benchmarks/gemma3_12b_latency.py --static-cache 1024   # compiled decode (CUDA graphs)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from gemma3_12b import build_random_gemma3, device_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="scaled-down config on the CPU (checks the script)")
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--plan-tokens", type=int, default=24, help="tokens per motion plan (default 24)")
    parser.add_argument("--chunk-tokens", type=int, default=64, help="tokens per chunk (default 64: ~4 steps)")
    parser.add_argument("--constrained", action="store_true",
                        help="decode the chunk with the xgrammar chunk grammar (its length is then the model's choice)")
    parser.add_argument("--no-reuse", action="store_true", help="prefill the chunk prompt from scratch")
    parser.add_argument("--no-adapter", action="store_true", help="no LoRA adapter")
    parser.add_argument("--text-layers", type=int, default=None,
                        help="language-model depth (with --tiny 48: eager generation's per-layer cost on the CPU)")
    parser.add_argument("--static-cache", type=int, default=0, metavar="TOKENS",
                        help="the backend's static_cache_tokens: one preallocated cache, so that generate() compiles "
                             "the decode step on a GPU (the first cycles compile: give --warmup 2 or more)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after this many seconds of timed cycles and report those done (for a short GPU lease)")
    args = parser.parse_args(argv)

    import torch
    from peft import get_peft_model

    from vlm2vla_ros.action_language import ActionLimits, chunk_regex
    from vlm2vla_ros.policy import StageSampling, prompts
    from vlm2vla_ros.policy.transformers_backend import TransformersBackend, paper_lora_config
    from vlm2vla_ros.policy.types import GenerationRequest

    built = build_random_gemma3(args.tiny, args.text_layers)
    model, processor, device, dtype = built.model.eval(), built.processor, built.device, built.dtype
    if not args.no_adapter:
        model = get_peft_model(model, paper_lora_config(r=16, alpha=32)).eval()
    backend = TransformersBackend(model, processor, has_adapter=not args.no_adapter, static_cache_tokens=args.static_cache)

    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    task, subtask = "put the carrot on the plate", "Grasp the carrot"
    plan_sampling = StageSampling(temperature=0.1, max_new_tokens=args.plan_tokens)
    chunk_sampling = StageSampling(temperature=0.5, max_new_tokens=args.chunk_tokens)
    regex = chunk_regex(ActionLimits()) if args.constrained else None
    rows: list[dict[str, float]] = []
    warmup_s: list[float] = []
    started = time.perf_counter()
    for index in range(args.warmup + args.cycles):
        if index == args.warmup:
            started = time.perf_counter()  # the time limit counts timed cycles, not warm-up (compilation)
        if args.max_seconds is not None and rows and time.perf_counter() - started > args.max_seconds:
            break
        plan_request = GenerationRequest(prompts.plan_messages(task, subtask), (image,), plan_sampling,
                                         args.plan_tokens, keep_prefix=not args.no_reuse, seed=index)
        if device == "cuda":
            torch.cuda.synchronize()
        plan = backend.generate(plan_request)
        plan_text = plan.text.strip() or "Move down toward the carrot, then close the gripper."
        chunk_request = GenerationRequest(prompts.chunk_messages(task, subtask, plan_text), (image,), chunk_sampling,
                                          args.chunk_tokens if regex is None else 420, regex=regex,
                                          prefix=plan.prefix, seed=index)
        chunk = backend.generate(chunk_request)
        if device == "cuda":
            torch.cuda.synchronize()
        if index >= args.warmup:
            rows.append({"plan_s": plan.seconds, "chunk_s": chunk.seconds, "cycle_s": plan.seconds + chunk.seconds,
                         "plan_tokens": plan.new_tokens, "chunk_tokens": chunk.new_tokens,
                         "plan_prompt_tokens": plan.prompt_tokens, "chunk_prompt_tokens": chunk.prompt_tokens,
                         "chunk_reused_tokens": chunk.reused_tokens})
            print(f"cycle {len(rows)}: {rows[-1]['cycle_s']:.2f} s", file=sys.stderr, flush=True)
        else:
            warmup_s.append(plan.seconds + chunk.seconds)
            print(f"warm-up cycle {len(warmup_s)}: {warmup_s[-1]:.2f} s", file=sys.stderr, flush=True)

    def summary(key: str) -> dict[str, float]:
        values = [row[key] for row in rows]
        return {"median": statistics.median(values), "p90": float(np.percentile(values, 90)), "mean": statistics.mean(values)}

    report = {
        "model": "gemma-3-12b-it architecture, random weights" if not args.tiny else "scaled-down gemma-3 (--tiny)",
        "text_layers": built.model.config.text_config.num_hidden_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).replace("torch.", ""),
        "lora_r": None if args.no_adapter else 16,
        "device": device_name(device),
        "torch": torch.__version__,
        "build_s": built.build_s,
        "cycles": len(rows),
        "constrained": args.constrained,
        "reuse_prefix": not args.no_reuse and not args.static_cache,
        "static_cache_tokens": args.static_cache,
        "warmup_cycle_s": warmup_s,
        "median_cycle_s": summary("cycle_s")["median"],
        "p90_cycle_s": summary("cycle_s")["p90"],
        "plan_s": summary("plan_s"),
        "chunk_s": summary("chunk_s"),
        "tokens": {key: summary(key)["mean"] for key in
                   ("plan_tokens", "chunk_tokens", "plan_prompt_tokens", "chunk_prompt_tokens", "chunk_reused_tokens")},
        "paper_median_cycle_s_a100": 6.1,
    }
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
