"""The in-process backend: a Hugging Face image-text-to-text model, a PEFT LoRA adapter, xgrammar.

Loading goes through AutoProcessor / AutoModelForImageTextToText / PeftModel.from_pretrained on
local folders only (the tiny test model takes exactly the same path as Gemma-3-12B-IT).
Constrained stages mask logits with xgrammar, the structured-output engine vLLM uses by
default, so both backends enforce the same regular expression the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PolicyConfig
from .types import Generation, GenerationRequest, PolicyError

# No machine here can reach a model hub; nothing may try (set before transformers is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLING_LOCK = threading.Lock()
"""torch's random generator is one per process: each request seeds it and samples under this lock,
so two engines in one process (a policy and its verifier on two executor threads) cannot draw
from each other's seeds."""

LORA_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""The paper's LoRA layout: every linear layer of the language model (not the vision tower)."""
VISION_LORA_TARGET_MODULES = r".*vision_tower.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
"""The vision tower's linear layers (attention and MLP), adapted only on request
(TrainConfig.vision_learning_rate): a departure from the paper, which adapts the language model alone."""


def paper_lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, init_lora_weights: Any = True,
                      vision: bool = False):
    """PEFT LoraConfig with the paper's layout (r=16, alpha=32 on all language-model linears);
    vision=True adds the vision tower's linears."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=f"(?:{LORA_TARGET_MODULES})|(?:{VISION_LORA_TARGET_MODULES})" if vision else LORA_TARGET_MODULES,
        init_lora_weights=init_lora_weights,
        task_type="CAUSAL_LM",
    )


def resolve_device(device: str) -> str:
    """"auto" -> cuda when present, else cpu; an explicit CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PolicyError(f"device {device!r} was requested but this machine has no usable CUDA GPU", "load")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise PolicyError(f"device {device!r} does not exist: only {torch.cuda.device_count()} CUDA device(s)", "load")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model(config: PolicyConfig) -> tuple[Any, Any, bool]:
    """(model, processor, has_adapter) from local folders; every failure is one PolicyError sentence."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if not config.model_path:
        raise PolicyError("model_path is not set; the transformers backend needs a local model folder", "load")
    model_dir = Path(config.model_path)
    if not model_dir.is_dir():
        raise PolicyError(f"model folder {model_dir} does not exist", "load")
    if not (model_dir / "config.json").is_file():
        raise PolicyError(f"model folder {model_dir} has no config.json, so it is not a Hugging Face model folder", "load")
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if config.load_in_4bit:
        if not device.startswith("cuda"):
            raise PolicyError("load_in_4bit needs a CUDA GPU (bitsandbytes), but the policy runs on the CPU", "load")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": device}
    try:
        model_config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, config=model_config, **kwargs)
    except Exception as exc:  # any library's failure becomes one sentence naming the folder
        raise PolicyError(f"model folder {model_dir} could not be loaded as an image-text-to-text model: {_first_line(exc)}", "load") from exc
    if not getattr(processor, "chat_template", None):  # else found out at the first task, which then fails
        raise PolicyError(f"model folder {model_dir} has no chat template (chat_template.jinja): every prompt "
                          "here is a chat turn, so the model cannot be asked anything", "load")
    if not config.load_in_4bit:
        model = model.to(device)
    has_adapter = config.adapter_path is not None
    if has_adapter:
        model = _load_adapter(model, Path(str(config.adapter_path)), model_dir)
    model.eval()
    return model, processor, has_adapter


def _load_adapter(model: Any, adapter_dir: Path, model_dir: Path) -> Any:
    from peft import PeftModel

    if not adapter_dir.is_dir():
        raise PolicyError(f"adapter folder {adapter_dir} does not exist", "load")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise PolicyError(f"adapter folder {adapter_dir} has no adapter_config.json, so it is not a PEFT adapter", "load")
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as exc:  # shape mismatches, missing target modules, bad files alike
        raise PolicyError(f"adapter {adapter_dir} does not fit the model in {model_dir}: {_first_line(exc)}", "load") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


@dataclass
class _PrefixState:
    """A key/value cache and the token ids it holds, reusable by a request that extends them."""

    ids: list[int]
    cache: Any
    use_adapter: bool


class TransformersBackend:
    """Runs requests on a loaded model; not thread-safe (the engine serialises calls)."""

    def __init__(self, model: Any, processor: Any, has_adapter: bool, static_cache_tokens: int = 0) -> None:
        import xgrammar as xgr

        self.model = model
        self.processor = processor
        self.has_adapter = has_adapter
        self.device = next(model.parameters()).device
        generation = model.generation_config
        eos = generation.eos_token_id
        self.stop_ids: list[int] = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.pad_id = generation.pad_token_id if generation.pad_token_id is not None else self.stop_ids[0]
        text_config = model.config.get_text_config()
        self.sliding_window: int | None = getattr(text_config, "sliding_window", None)
        self.image_token_id: int | None = getattr(model.config, "image_token_id", None)
        info = xgr.TokenizerInfo.from_huggingface(
            processor.tokenizer, vocab_size=text_config.vocab_size, stop_token_ids=self.stop_ids
        )
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        tokenizer = processor.tokenizer
        control = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        control |= set(tokenizer.all_special_tokens)
        self._control_tokens = re.compile("|".join(re.escape(t) for t in sorted(control, key=len, reverse=True) if t))
        self._grammars: dict[str, Any] = {}
        self.static_cache_tokens = static_cache_tokens
        self._static_cache: Any = None

    @classmethod
    def load(cls, config: PolicyConfig) -> TransformersBackend:
        model, processor, has_adapter = load_model(config)
        return cls(model, processor, has_adapter, config.static_cache_tokens)

    def _static_cache_for(self, tokens: int) -> Any:
        """The shared static cache, emptied, when `tokens` fit in it; None: use a growing cache.

        One cache object for every request keeps its tensors at fixed addresses, which a
        captured CUDA graph needs; a new one per request would be captured again each time.
        """
        if not self.static_cache_tokens or tokens > self.static_cache_tokens:
            return None
        import torch

        if self._static_cache is None:
            from transformers import StaticCache

            self._static_cache = StaticCache(config=self.model.config.get_text_config(), max_cache_len=self.static_cache_tokens)
        with torch.inference_mode():  # its tensors were made under inference mode by the first request
            self._static_cache.reset()
        return self._static_cache

    def compiled(self, regex: str) -> Any:
        """The compiled grammar of a regex, compiled once per regex."""
        if regex not in self._grammars:
            try:
                self._grammars[regex] = self._compiler.compile_regex(regex)
            except RuntimeError as exc:
                raise PolicyError(f"xgrammar cannot compile the regular expression {regex[:80]!r}: {_first_line(exc)}") from exc
        return self._grammars[regex]

    def prompt_inputs(self, request: GenerationRequest) -> dict[str, Any]:
        from PIL import Image

        self._refuse_control_tokens(request.messages)
        text = self.processor.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        images = [Image.fromarray(image) for image in request.images] or None
        inputs = self.processor(text=text, images=images, return_tensors="pt", add_special_tokens=False)
        return {key: value.to(self.device) for key, value in inputs.items()}

    def _refuse_control_tokens(self, messages: list[Any]) -> None:
        """The chat template renders text that is tokenized whole, so a task holding
        '<end_of_turn>' would end the user's turn and could write a model turn of its own (a
        forged plan), and '<start_of_image>' would ask for an image never given. Refused."""
        if not self._control_tokens.pattern:
            return
        for message in messages:
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for part in parts:
                text = part.get("text") if isinstance(part, dict) else None
                hit = self._control_tokens.search(text) if isinstance(text, str) else None
                if hit:
                    raise PolicyError(f"the prompt's text (the task or a subtask) holds the model's control token "
                                      f"{hit.group()!r}, which would act as one; refused", "prompt")

    def generate(self, request: GenerationRequest) -> Generation:
        import torch
        from transformers import DynamicCache
        from xgrammar.contrib.hf import LogitsProcessor

        start = time.perf_counter()
        inputs = self.prompt_inputs(request)
        ids: list[int] = inputs["input_ids"][0].tolist()
        static_cache = self._static_cache_for(len(ids) + request.max_new_tokens)
        reused = 0 if static_cache is not None else self._reusable_length(request.prefix, ids, request.use_adapter)
        if static_cache is not None:
            cache = static_cache
            model_inputs = inputs
        elif reused:
            state: _PrefixState | None = request.prefix
            assert state is not None
            state.cache.crop(reused - state.cache.get_seq_length())
            cache = state.cache
            # The new tokens are text after the cached images: no pixels, plain causal attention.
            model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        else:
            cache = DynamicCache(config=self.model.config.get_text_config())
            model_inputs = inputs
        sampling = request.sampling
        do_sample = sampling.temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": request.max_new_tokens,
            "do_sample": do_sample,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.pad_id,
            "past_key_values": cache,
            "return_dict_in_generate": True,
            "top_k": None,
        }
        if do_sample:
            options.update(temperature=float(sampling.temperature), top_p=float(sampling.top_p))
        else:
            options.update(temperature=None, top_p=None)
        if request.regex is not None:
            options["logits_processor"] = [LogitsProcessor(self.compiled(request.regex))]
        if request.first_token_choices:
            options["output_logits"] = True  # raw, before the grammar's mask and any sampling warper
        adapter = self.model.disable_adapter() if self.has_adapter and not request.use_adapter else contextlib.nullcontext()
        with SAMPLING_LOCK, torch.inference_mode(), adapter:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            output = self.model.generate(**model_inputs, **options)
        sequence = output.sequences[0]
        new_ids = sequence[len(ids) :]
        stops = torch.isin(new_ids, torch.tensor(self.stop_ids, device=new_ids.device))
        cut_off = int(new_ids.numel()) >= request.max_new_tokens and not bool(stops.any())
        new_ids = new_ids[~stops]
        text = self.processor.tokenizer.decode(new_ids, skip_special_tokens=True)
        prefix = None
        if static_cache is None and (request.keep_prefix or reused):
            kept = output.past_key_values.get_seq_length()
            prefix = _PrefixState(sequence[:kept].tolist(), output.past_key_values, request.use_adapter)
        return Generation(
            text=text,
            new_tokens=int(new_ids.numel()),
            prompt_tokens=len(ids),
            reused_tokens=reused,
            seconds=time.perf_counter() - start,
            prefix=prefix,
            cut_off=cut_off,
            first_token_logits=self._first_token_logits(request.first_token_choices, output),
        )

    def _first_token_logits(self, choices: tuple[str, ...], output: Any) -> dict[str, float] | None:
        """Each choice's first token's raw logit at the answer's first position; None when two
        choices begin with the same token (their first logits would tell them apart by nothing)."""
        if not choices or not getattr(output, "logits", None):
            return None
        firsts = {choice: self.processor.tokenizer.encode(choice, add_special_tokens=False)[:1] for choice in choices}
        ids = [first[0] for first in firsts.values() if first]
        if len(ids) != len(choices) or len(set(ids)) != len(ids):
            return None
        logits = output.logits[0][0]
        return {choice: float(logits[first[0]]) for choice, first in firsts.items()}

    def _reusable_length(self, state: _PrefixState | None, ids: list[int], use_adapter: bool) -> int:
        """How many leading prompt tokens the cached state already holds (0: prefill everything)."""
        if not isinstance(state, _PrefixState) or state.use_adapter != use_adapter:
            return 0
        if self.sliding_window is not None and len(state.ids) >= self.sliding_window:
            return 0  # a sliding-window layer has dropped its oldest entries; they cannot be cropped back
        common = 0
        for cached, new in zip(state.ids, ids):
            if cached != new:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token must be fed to get logits
        if common <= 0 or (self.image_token_id is not None and self.image_token_id in ids[common:]):
            return 0
        return common

    def close(self) -> None:
        self.model = None
        self._static_cache = None
        self._grammars.clear()
