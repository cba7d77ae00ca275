"""Batches of chat examples for a Gemma-3-style image-text model, with loss on answers only.

Each example is a complete conversation whose last message is the assistant's answer. The
whole conversation goes through the processor's own chat template (as the policy engine's
prompts do); the prompt boundary is where the same conversation without its answer, rendered
with add_generation_prompt=True, ends. Labels are -100 on the prompt (image tokens included),
on padding and after the answer's end-of-turn token, so the loss is exactly the answer plus
end-of-turn: what the model must write at run time, and when to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100


@dataclass
class CollatorStats:
    truncated: int = 0
    batches: int = 0


@dataclass
class AnswerOnlyCollator:
    processor: Any
    max_length: int = 1024
    end_of_turn: str = "<end_of_turn>"
    stats: CollatorStats = field(default_factory=CollatorStats)

    def __post_init__(self) -> None:
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "right"  # positions then match unpadded inference
        self.end_id = tokenizer.convert_tokens_to_ids(self.end_of_turn)
        if self.end_id is None or self.end_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {self.end_of_turn} token, so answers cannot be delimited")

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        full_texts, prompt_texts, images = [], [], []
        for example in examples:
            messages = example["messages"]
            if not messages or messages[-1].get("role") != "assistant":
                raise ValueError(f"example {example.get('id', '?')} does not end with the assistant's answer")
            full_texts.append(self.processor.apply_chat_template(messages, tokenize=False))
            prompt_texts.append(self.processor.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True))
            images.append(load_images(example.get("images", [])))
        batch = self._process(full_texts, images, padding=True)
        prompts = self._process(prompt_texts, images, padding=False)
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, prompt_ids in enumerate(prompts["input_ids"]):
            ids = input_ids[row].tolist()
            length = int(batch["attention_mask"][row].sum())
            start = _common_prefix(prompt_ids, ids[:length])
            ends = [i for i in range(start, length) if ids[i] == self.end_id]
            stop = ends[0] + 1 if ends else length  # no end-of-turn left: the answer was truncated
            labels[row, start:stop] = input_ids[row, start:stop]
        batch["labels"] = labels
        self.stats.batches += 1
        return dict(batch)

    def _process(self, texts: list[str], images: list[list[Any]], padding: bool) -> Any:
        has_images = any(images)
        kwargs: dict[str, Any] = {"text": texts, "add_special_tokens": False}
        if has_images:
            kwargs["images"] = images
        if padding:
            kwargs.update(return_tensors="pt", padding=True)
        out = self.processor(**kwargs)
        if padding and out["input_ids"].shape[1] > self.max_length:
            self.stats.truncated += int((out["attention_mask"].sum(dim=1) > self.max_length).sum())
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                if key in out:
                    out[key] = out[key][:, : self.max_length]
        return out


def load_images(paths: Sequence[str]) -> list[Any]:
    from PIL import Image

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except OSError as exc:
            raise ValueError(f"training image {path} cannot be read: {exc}") from None
    return images


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the shared start; usually all of `a` (the prompt tokens are a prefix)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
