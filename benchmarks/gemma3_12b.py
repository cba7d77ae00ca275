"""Gemma-3-12B-IT's exact architecture with random weights, shared by the GPU benchmarks.

Random weights of the same architecture cost the same FLOPs and bytes as the real ones, so a
benchmark on this model measures what the real 12B model costs without downloading it. The
tokenizer is the tiny model's (Gemma-3's is not available offline): token counts of text
differ from Gemma-3's, image tokens (256 per image) do not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


def gemma3_12b_config(image_token_ids: dict[str, int], tiny: bool, text_layers: int | None = None) -> Any:
    """Gemma-3-12B-IT's published architecture (or a scaled-down copy with tiny=True).

    text_layers overrides the language model's depth: a tiny model 48 layers deep costs what
    eager generation costs per layer and per token, with almost no arithmetic.
    """
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
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=image_token_ids["boi"],
        eoi_token_index=image_token_ids["eoi"],
        image_token_index=image_token_ids["image"],
    )


@dataclass
class RandomGemma3:
    model: Any
    processor: Any
    device: str
    dtype: Any
    build_s: float


def build_random_gemma3(tiny: bool, text_layers: int | None = None) -> RandomGemma3:
    """The processor and a random-weight model: bfloat16 on the GPU, or float32 on the CPU with tiny=True."""
    import torch
    from transformers import Gemma3ForConditionalGeneration, Gemma3Processor, GenerationConfig

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

    device = "cpu" if tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --tiny to check the benchmark on the CPU")
    dtype = torch.float32 if tiny else torch.bfloat16
    tokenizer = train_tokenizer(seed=0, vocab_size=1024)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (("boi", BOI), ("eoi", EOI), ("image", IMAGE_SOFT))}
    config = gemma3_12b_config(ids, tiny, text_layers)
    processor = Gemma3Processor(
        image_processor=image_processor_for(config.vision_config.image_size),
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=config.mm_tokens_per_image,
    )
    start = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Gemma3ForConditionalGeneration(config)
    torch.set_default_dtype(previous)
    stop_ids = [tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    model.generation_config = GenerationConfig(eos_token_id=stop_ids, pad_token_id=tokenizer.convert_tokens_to_ids(PAD))
    return RandomGemma3(model, processor, device, dtype, time.perf_counter() - start)


def device_name(device: str) -> str:
    import torch

    from vlm2vla_ros.machine import cpu_model

    return torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({cpu_model()})"
