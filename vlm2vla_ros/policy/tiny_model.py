"""A tiny, random-weight Gemma-3 model folder that loads through the real from_pretrained path.

No machine here can reach a model hub, yet the loading, prompting, constrained decoding and
LoRA code must be exercised exactly as with Gemma-3-12B-IT. This writes a complete local
folder (config, safetensors weights, a tokenizer trained on the project's own text with
Gemma-3's special tokens and chat template, image processor and processor configs) that
AutoProcessor / AutoModelForImageTextToText read like any Hugging Face checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from vlm2vla_ros.action_language import (
    ActionChunk,
    ActionLimits,
    ActionStep,
    format_action_chunk,
    format_subtasks,
    verbalise_moves,
)

from . import prompts

TINY_MODEL_VERSION = "v2"
"""Bumped whenever the recipe changes, so a cached folder from an older recipe is not reused."""

# Gemma-3's special tokens, in the roles Gemma3Processor and the chat template give them.
PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
BOI, EOI, IMAGE_SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, MASK, START_OF_TURN, END_OF_TURN, BOI, EOI, IMAGE_SOFT]

# Gemma-3-IT's chat template (the format the model was instruction-tuned on): turns are
# "<start_of_turn>user|model\n...<end_of_turn>\n", a system message is prefixed to the first
# user turn, and each image item becomes one <start_of_image> that the processor expands.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{ raise_exception('Invalid content type') }}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_OBJECTS = ["red block", "blue cup", "green sponge", "carrot", "pepper", "eggplant", "spoon", "yellow ball"]
_PLACES = ["plate", "bowl", "pot", "tray", "drawer", "basket"]
_TASK_FORMS = [
    "pick up the {obj}",
    "put the {obj} on the {place}",
    "put the {obj} in the {place}, then lift the {place}",
    "move the {obj} to the left of the {place}",
    "push the {obj} toward the {place}",
]


def build_tiny_model(
    out_dir: os.PathLike,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_size: int = 64,
    mm_tokens_per_image: int = 16,
    *,
    extra_texts: Iterable[str] = (),
    intermediate_size: int | None = None,
    num_attention_heads: int = 2,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    vision_hidden_size: int = 32,
    vision_intermediate_size: int | None = None,
    vision_layers: int = 1,
    vision_heads: int = 2,
    patch_size: int = 8,
    split_digits: bool = False,
) -> Path:
    """Write a complete Gemma-3 model folder with random weights to out_dir; returns its path.

    Deterministic for a given seed. The folder holds a few MB and loads in well under a second.
    The keyword-only arguments size a bigger model (vlm2vla_ros.miniature trains one from
    scratch); extra_texts are added to the tokenizer's training corpus; split_digits as
    train_tokenizer's.
    """
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, GenerationConfig

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"tiny model folder {out} already exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(seed, vocab_size, extra_texts, split_digits)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}

    config = Gemma3Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size or 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim,
            "sliding_window": 512,
            # Both of Gemma-3's attention kinds (the 12B model interleaves 5 sliding : 1 full).
            "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)],
            "max_position_embeddings": 4096,
            "pad_token_id": ids[PAD],
            "eos_token_id": ids[EOS],
            "bos_token_id": ids[BOS],
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_intermediate_size or 2 * vision_hidden_size,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=ids[BOI],
        eoi_token_index=ids[EOI],
        image_token_index=ids[IMAGE_SOFT],
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    # Gemma-3 initialises the image projection to zeros; random values make images matter.
    with torch.no_grad():
        projection = model.model.multi_modal_projector.mm_input_projection_weight
        projection.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS],
        eos_token_id=[ids[EOS], ids[END_OF_TURN]],
        pad_token_id=ids[PAD],
        do_sample=True,
        top_p=0.95,
        top_k=64,
    )
    model.save_pretrained(out)

    image_processor = image_processor_for(image_size)
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=mm_tokens_per_image,
    )
    processor.save_pretrained(out)
    return out


def default_cache_dir() -> Path:
    """$VLM2VLA_CACHE, else ~/.cache/vlm2vla_ros."""
    root = os.environ.get("VLM2VLA_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "vlm2vla_ros"


def ensure_tiny_model(cache_dir: os.PathLike | None = None) -> Path:
    """The cached tiny model folder, built once (atomically) on first use."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _ensure_built(root / f"tiny-gemma3-{TINY_MODEL_VERSION}", build_tiny_model)


def ensure_tiny_adapter(cache_dir: os.PathLike | None = None) -> Path:
    """A cached random LoRA adapter for the cached tiny model (built once, atomically)."""
    model_dir = ensure_tiny_model(cache_dir)
    return _ensure_built(model_dir.with_name(model_dir.name + "-lora"), lambda out: build_random_adapter(model_dir, out))


def _ensure_built(target: Path, build: Callable[[Path], object]) -> Path:
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: an interrupted build never leaves a half folder,
    # and of two concurrent builders the first rename wins and the other discards its copy.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging / "out")
        try:
            os.rename(staging / "out", target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def image_processor_for(image_size: int):
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    return Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_pan_and_scan=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def train_tokenizer(seed: int, vocab_size: int, extra_texts: Iterable[str] = (), split_digits: bool = False):
    """A Gemma-style BPE (byte fallback, "▁" for spaces) trained on project text (+ extra_texts) in seconds.

    With split_digits, as Gemma's own tokenizer, no merge holds a digit, so every digit is a
    token of its own and a number is written the same way wherever it stands. Without it the
    merges mix digits with signs, points and commas ("-4." then "8", but "-1" then "5." then
    "1"), and a model must learn each number's pieces anew in every context (docs/miniature.md,
    finding 30)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    raw = Tokenizer(BPE(unk_token=UNK, byte_fallback=True, fuse_unk=True))
    raw.normalizer = normalizers.Replace(" ", "▁")
    raw.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    if split_digits:
        raw.pre_tokenizer = pre_tokenizers.Sequence([raw.pre_tokenizer, pre_tokenizers.Digits(individual_digits=True)])
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + byte_tokens,
        initial_alphabet=list("0123456789[],.-+ ▁\n"),
        show_progress=False,
    )
    raw.train_from_iterator(list(_corpus(seed)) + list(extra_texts), trainer=trainer)
    state = json.loads(raw.to_str())["model"]
    return GemmaTokenizer(
        vocab=state["vocab"],
        merges=[tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in state["merges"]],
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        mask_token=MASK,
        extra_special_tokens={
            "boi_token": BOI,
            "eoi_token": EOI,
            "image_token": IMAGE_SOFT,
            "sot_token": START_OF_TURN,
            "eot_token": END_OF_TURN,
        },
    )


def _corpus(seed: int) -> Iterator[str]:
    """Task phrases, subtasks, plans, chunks and every prompt text, in a fixed order."""
    rng = random.Random(seed)
    limits = ActionLimits()
    tasks: list[str] = []
    for form in _TASK_FORMS:
        for obj in _OBJECTS:
            for place in _PLACES:
                tasks.append(form.format(obj=obj, place=place))
    for task in tasks:
        obj = rng.choice(_OBJECTS)
        place = rng.choice(_PLACES)
        subtasks = [f"Move to the {obj}", f"Grasp the {obj}", f"Move above the {place}", f"Release the {obj}"]
        steps = tuple(
            ActionStep(
                round(rng.uniform(-5, 5), 1), round(rng.uniform(-5, 5), 1), round(rng.uniform(-5, 5), 1), rng.randint(0, 1)
            )
            for _ in range(rng.randint(1, 6))
        )
        chunk = ActionChunk(steps)
        yield task
        yield format_subtasks(subtasks)
        yield verbalise_moves(chunk)
        yield format_action_chunk(chunk, limits)
        yield prompts.render_prompt_text(task, subtasks[0], verbalise_moves(chunk), subtasks[1])
    yield "user\nmodel\nadvance retry left right none"


def build_random_adapter(model_dir: os.PathLike, out_dir: os.PathLike, seed: int = 0, r: int = 4) -> Path:
    """Save a LoRA adapter with random, non-zero weights for the model in model_dir.

    Unlike a freshly initialised adapter (which is a no-op), this one changes the model's
    outputs, so tests can tell whether it is active.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from .transformers_backend import paper_lora_config

    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    torch.manual_seed(seed)
    model = get_peft_model(base, paper_lora_config(r=r, alpha=2 * r, init_lora_weights=False))
    model.save_pretrained(out_dir)
    return Path(out_dir)
