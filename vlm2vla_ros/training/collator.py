"""Batches of chat examples for a Gemma-3-style image-text model, with loss on answers only.

Each example is a complete conversation whose last message is the assistant's answer. The
whole conversation goes through the processor's own chat template (as the policy engine's
prompts do); the prompt boundary is where the same conversation without its answer, rendered
with add_generation_prompt=True, ends. Labels are -100 on the prompt (image tokens included),
on padding and after the answer's end-of-turn token, so the loss is exactly the answer plus
end-of-turn: what the model must write at run time, and when to stop. A conversation longer
than max_length is refused, never cut.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


@dataclass
class AnswerOnlyCollator:
    processor: Any
    max_length: int = 1024
    end_of_turn: str = "<end_of_turn>"

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
        for example, length in zip(examples, batch["attention_mask"].sum(dim=1).tolist()):
            self._check_length(example, int(length))
        prompts = self._process(prompt_texts, images, padding=False)
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, prompt_ids in enumerate(prompts["input_ids"]):
            length = int(batch["attention_mask"][row].sum())
            start, stop = self._answer_span(prompt_ids, input_ids[row, :length].tolist())
            labels[row, start:stop] = input_ids[row, start:stop]
        batch["labels"] = labels
        return dict(batch)

    def _answer_span(self, prompt_ids: Sequence[int], ids: Sequence[int]) -> tuple[int, int]:
        """[start, stop) of the answer plus its end-of-turn token inside a conversation's ids."""
        start = _common_prefix(prompt_ids, ids)
        ends = [i for i in range(start, len(ids)) if ids[i] == self.end_id]
        return start, (ends[0] + 1 if ends else len(ids))  # a template that leaves the turn open

    def pretokenize(self, examples: Sequence[dict[str, Any]]) -> PretokenizedExamples:
        """Tokenise every example and every distinct image once, for loops that revisit them.

        Gives the same batches as calling the collator (test_training_collator checks it),
        without re-running the chat template, the tokenizer and image loading at every step:
        what made pretraining the miniature model (vlm2vla_ros.miniature) three times slower.
        """
        import torch

        processor, tokenizer = self.processor, self.processor.tokenizer
        for example in examples:
            if not example["messages"] or example["messages"][-1].get("role") != "assistant":
                raise ValueError(f"example {example.get('id', '?')} does not end with the assistant's answer")
        fulls = self._token_ids(examples, prompt=False)
        prompts = self._token_ids(examples, prompt=True)
        index: dict[Any, int] = {}  # a file by its path, an image in memory by its identity
        sources: list[Any] = []
        rows = []
        for example, ids, prompt_ids in zip(examples, fulls, prompts):
            self._check_length(example, len(ids))
            start, stop = self._answer_span(prompt_ids, ids)
            images = []
            for image in example.get("images", []):
                key = str(image) if isinstance(image, (str, os.PathLike)) else id(image)
                if key not in index:
                    index[key] = len(sources)
                    sources.append(image)
                images.append(index[key])
            rows.append(_TokenizedRow(torch.tensor(ids), start, stop, tuple(images)))
        pixels = None
        if sources:
            pixels = torch.cat(
                [
                    processor.image_processor(load_images(sources[i : i + 256]), return_tensors="pt")["pixel_values"]
                    for i in range(0, len(sources), 256)
                ]
            )
        # Gemma-3 marks the image's soft tokens (the tokenizer's image_token), not <start_of_image>.
        soft_token = getattr(tokenizer, "image_token", None)
        image_token_id = tokenizer.convert_tokens_to_ids(soft_token) if soft_token else None
        return PretokenizedExamples(rows, pixels, tokenizer.pad_token_id, image_token_id)

    def lengths(self, examples: Sequence[dict[str, Any]]) -> list[int]:
        """Each whole conversation's length in tokens, image tokens included, as a batch has it."""
        return [len(ids) for ids in self._token_ids(examples, prompt=False)]

    def _token_ids(self, examples: Sequence[dict[str, Any]], prompt: bool) -> list[list[int]]:
        """Token ids of each conversation (prompt: without its answer, up to the generation
        prompt), with every image's soft tokens written out as the processor expands them
        (Gemma 3's boi_token -> full_image_sequence; a processor without them would be
        undercounted here and refused later, at its batch)."""
        processor = self.processor
        image_text = (getattr(processor, "boi_token", None), getattr(processor, "full_image_sequence", None))
        texts = []
        for example in examples:
            messages = example["messages"]
            if prompt:
                text = processor.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            else:
                text = processor.apply_chat_template(messages, tokenize=False)
            texts.append(text.replace(*image_text) if image_text[0] and image_text[1] else text)
        return processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def _process(self, texts: list[str], images: list[list[Any]], padding: bool) -> Any:
        has_images = any(images)
        kwargs: dict[str, Any] = {"text": texts, "add_special_tokens": False}
        if has_images:
            kwargs["images"] = images
        if padding:
            kwargs.update(return_tensors="pt", padding=True)
        return self.processor(**kwargs)

    def _check_length(self, example: dict[str, Any], length: int) -> None:
        """Refuse, not cut: a cut conversation trains an answer without its end (an action list
        never closed, no end-of-turn) or no answer at all. vlm2vla-train leaves such examples out
        before it starts (lengths())."""
        if length > self.max_length:
            raise ValueError(f"example {example.get('id', '?')} is {length} tokens long, more than max_length "
                             f"{self.max_length}; leave it out or raise max_length")


@dataclass(frozen=True)
class _TokenizedRow:
    ids: Any
    answer_start: int
    answer_stop: int
    images: tuple[int, ...]


@dataclass
class PretokenizedExamples:
    """AnswerOnlyCollator.pretokenize's result: batch(indices) builds a training batch."""

    rows: list[_TokenizedRow]
    pixels: Any
    pad_id: int
    image_token_id: int | None

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: Sequence[int], extra: PretokenizedExamples | None = None) -> dict[str, Any]:
        """The rows at indices, then every row of extra with its own images: a fixed training set
        and examples made fresh for this step in one batch."""
        import torch

        rows = [self.rows[i] for i in indices] + (list(extra.rows) if extra is not None else [])
        width = max(len(r.ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for k, row in enumerate(rows):
            input_ids[k, : len(row.ids)] = row.ids
            attention[k, : len(row.ids)] = 1
            labels[k, row.answer_start : row.answer_stop] = row.ids[row.answer_start : row.answer_stop]
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        own = [i for r in rows[: len(indices)] for i in r.images]
        pixels = [self.pixels[own]] if own else []
        if extra is not None:
            theirs = [i for r in extra.rows for i in r.images]
            pixels += [extra.pixels[theirs]] if theirs else []
        if pixels:  # images in the order of their rows, as the model fills the image tokens
            batch["pixel_values"] = torch.cat(pixels)
            batch["token_type_ids"] = (input_ids == self.image_token_id).long()
        return batch


def load_images(sources: Sequence[Any]) -> list[Any]:
    """RGB images from file paths; a PIL image already in memory (a training stream that renders
    fresh scenes for every batch writes no files) is taken as it is."""
    from PIL import Image

    images = []
    for path in sources:
        if isinstance(path, Image.Image):
            images.append(path.convert("RGB"))
            continue
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
