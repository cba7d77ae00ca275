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
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np


def gemma3_12b_config(image_token_ids: dict[str, int], tiny: bool) -> Any:
    """Gemma-3-12B-IT's published architecture (or a scaled-down copy with --tiny)."""
    from transformers import Gemma3Config

    text = {
        "vocab_size": 262_208,
        "hidden_size": 3840,
        "intermediate_size": 15_360,
        "num_hidden_layers": 48,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 131_072,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 896,
        "patch_size": 14,
        "vision_use_head": False,
    }
    tokens_per_image = 256
    if tiny:
        text.update(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64)
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                      image_size=224, patch_size=14)
        tokens_per_image = 64
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=image_token_ids["boi"],
        eoi_token_index=image_token_ids["eoi"],
        image_token_index=image_token_ids["image"],
    )


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
    args = parser.parse_args(argv)

    import torch
    from peft import get_peft_model
    from transformers import Gemma3ForConditionalGeneration, Gemma3Processor, GenerationConfig

    from vlm2vla_ros.action_language import ActionLimits, chunk_regex
    from vlm2vla_ros.policy import StageSampling, prompts
    from vlm2vla_ros.policy.tiny_model import (
        BOI,
        END_OF_TURN,
        EOI,
        EOS,
        GEMMA3_CHAT_TEMPLATE,
        IMAGE_SOFT,
        PAD,
        image_processor_for,
        train_tokenizer,
    )
    from vlm2vla_ros.policy.transformers_backend import TransformersBackend, paper_lora_config
    from vlm2vla_ros.policy.types import GenerationRequest

    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gemma3_12b_latency: no CUDA GPU here; use --tiny to check the script on the CPU", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.tiny else torch.bfloat16
    tokenizer = train_tokenizer(seed=0, vocab_size=1024)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (("boi", BOI), ("eoi", EOI), ("image", IMAGE_SOFT))}
    config = gemma3_12b_config(ids, args.tiny)
    vision = config.vision_config
    processor = Gemma3Processor(
        image_processor=image_processor_for(vision.image_size),
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=config.mm_tokens_per_image,
    )

    start = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Gemma3ForConditionalGeneration(config).eval()
    torch.set_default_dtype(previous)
    stop_ids = [tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    model.generation_config = GenerationConfig(eos_token_id=stop_ids, pad_token_id=tokenizer.convert_tokens_to_ids(PAD))
    if not args.no_adapter:
        model = get_peft_model(model, paper_lora_config(r=16, alpha=32)).eval()
    build_s = time.perf_counter() - start
    backend = TransformersBackend(model, processor, has_adapter=not args.no_adapter)

    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    task, subtask = "put the carrot on the plate", "Grasp the carrot"
    plan_sampling = StageSampling(temperature=0.1, max_new_tokens=args.plan_tokens)
    chunk_sampling = StageSampling(temperature=0.5, max_new_tokens=args.chunk_tokens)
    regex = chunk_regex(ActionLimits()) if args.constrained else None
    rows: list[dict[str, float]] = []
    for index in range(args.warmup + args.cycles):
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

    def summary(key: str) -> dict[str, float]:
        values = [row[key] for row in rows]
        return {"median": statistics.median(values), "p90": float(np.percentile(values, 90)), "mean": statistics.mean(values)}

    report = {
        "model": "gemma-3-12b-it architecture, random weights" if not args.tiny else "scaled-down gemma-3 (--tiny)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).replace("torch.", ""),
        "lora_r": None if args.no_adapter else 16,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "build_s": build_s,
        "cycles": len(rows),
        "constrained": args.constrained,
        "reuse_prefix": not args.no_reuse,
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
