"""Every stage's chat messages and answer format, in one place.

The policy engine asks with these messages and the dataset builder writes training examples
with the same functions, so a fine-tuned adapter sees at run time exactly what it was trained
on. Messages follow the Hugging Face chat format: user content is a list of
{"type": "image"} and {"type": "text", "text": ...} items; images themselves travel
separately, in the order of the image items.

The chunk stage continues the plan stage's conversation (plan request, the plan as the
model's answer, then the chunk request), so both stages share the image + task + subtask
prefix and the engine can reuse its key/value cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from vlm2vla_ros.action_language import (
    MAX_SUBTASK_CHARS,
    MAX_SUBTASKS,
    ActionChunk,
    ActionLimits,
    format_action_chunk,
    format_subtasks,
)
from vlm2vla_ros.action_language.subtasks import CONTROL_CHARS, SUBTASK_FIRST_CHAR

Message = dict[str, Any]

ADVANCE, RETRY = "advance", "retry"
DIRECTIONS = ("left", "right", "none")
VERDICT_REGEX = f"({ADVANCE}|{RETRY})"
NO_NEXT_SUBTASK = "none, this is the last subtask"
"""What the verify prompt says after the last subtask."""
"""The verifier's answer format: exactly one of the two words."""

SUBTASK_LIST_MAX_ITEMS = MAX_SUBTASKS
"""The decoder allows as many subtasks as the action language does (a two-part multi-step task
has ten; a cap of eight here made every such list wrong)."""
SUBTASK_MAX_CHARS = MAX_SUBTASK_CHARS
# No control character inside a subtask (the parser's rule; CONTROL_CHARS holds every line break).
_SUBTASK_CHAR = f"[^{CONTROL_CHARS}]"


@dataclass(frozen=True)
class PromptTemplates:
    """The wording of each stage's request; fields are str.format templates."""

    subtasks: str = (
        "Task: {task}\n"
        "Break the task into the short subtasks the robot must complete, in order. "
        "Write one imperative subtask per line, numbered 1., 2., 3., ..."
    )
    plan: str = (
        "Task: {task}\n"
        "Current subtask: {subtask}\n"
        "Describe in one sentence how the gripper should move to complete the current subtask, "
        "direction first (+dx forward, +dy left, +dz up)."
    )
    chunk: str = (
        "Write the action chunk for this plan as [[dx, dy, dz, gripper], ...] with moves in cm "
        "(+dx forward, +dy left, +dz up) and gripper 1 open, 0 closed."
    )
    verify: str = (
        "The first image was taken before the robot moved, the second after.\n"
        "Subtask the robot was working on: {subtask}\n"
        "Next subtask: {next_subtask}\n"
        "Is the subtask complete, so the robot should advance to the next one? "
        "Answer advance or retry."
    )
    direction: str = (
        "The first image was taken before the robot moved, the second after.\n"
        "Did the gripper move to the left, to the right, or neither? Answer left, right or none."
    )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptTemplates:
        """Override some templates; unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown prompt template(s) {unknown}; known: {sorted(known)}")
        for key, value in data.items():
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"prompt template {key!r} must be a non-empty string")
        return cls(**data)


DEFAULT_PROMPTS = PromptTemplates()
DEFAULT_LIMITS = ActionLimits()


def _user(text: str, images: int) -> Message:
    content: list[dict[str, str]] = [{"type": "image"} for _ in range(images)]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _fill(template: str, name: str, **values: str) -> str:
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} prompt needs a non-empty {key}, got {value!r}")
    try:
        return template.format(**values)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"the {name} prompt template uses a placeholder {exc} that this stage does not supply") from None


def subtasks_messages(task: str, templates: PromptTemplates = DEFAULT_PROMPTS) -> list[Message]:
    """Image + task -> numbered subtask list (one image)."""
    return [_user(_fill(templates.subtasks, "subtasks", task=task), images=1)]


def plan_messages(task: str, subtask: str, templates: PromptTemplates = DEFAULT_PROMPTS) -> list[Message]:
    """Image + task + current subtask -> one-sentence motion plan (one image)."""
    return [_user(_fill(templates.plan, "plan", task=task, subtask=subtask), images=1)]


def chunk_messages(task: str, subtask: str, plan: str, templates: PromptTemplates = DEFAULT_PROMPTS) -> list[Message]:
    """The plan conversation, the plan as the model's answer, then the chunk request (one image)."""
    if not isinstance(plan, str) or not plan.strip():
        raise ValueError(f"chunk prompt needs a non-empty plan, got {plan!r}")
    return [*plan_messages(task, subtask, templates), _assistant(plan.strip()), _user(templates.chunk, images=0)]


def verify_messages(subtask: str, next_subtask: str, templates: PromptTemplates = DEFAULT_PROMPTS) -> list[Message]:
    """Images before and after + current and next subtask -> "advance" or "retry" (two images).

    The last subtask has no next one: an empty next_subtask is written as NO_NEXT_SUBTASK, the
    same words at run time and in training data.
    """
    if isinstance(next_subtask, str) and not next_subtask.strip():
        next_subtask = NO_NEXT_SUBTASK
    text = _fill(templates.verify, "verify", subtask=subtask, next_subtask=next_subtask)
    return [_user(text, images=2)]


def direction_messages(templates: PromptTemplates = DEFAULT_PROMPTS) -> list[Message]:
    """Images before and after -> "left", "right" or "none" (two images; a training signal)."""
    return [_user(templates.direction, images=2)]


def question_messages(question: str, images: int = 1) -> list[Message]:
    """A visual question: images first, then the question (vlm2vla-eval's VQA format, and the
    miniature base's pretraining questions)."""
    return [_user(question, images)]


def count_images(messages: Sequence[Message]) -> int:
    """How many images a conversation expects, in the order they must be supplied."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            total += sum(1 for item in content if item.get("type") == "image")
    return total


def with_answer(messages: Sequence[Message], answer: str) -> list[Message]:
    """A complete training conversation: the request followed by the expected answer."""
    return [*messages, _assistant(answer)]


def subtasks_answer(subtasks: Sequence[str]) -> str:
    return format_subtasks(subtasks)


def chunk_answer(chunk: ActionChunk, limits: ActionLimits = DEFAULT_LIMITS) -> str:
    return format_action_chunk(chunk, limits)


def verify_answer(advance: bool) -> str:
    return ADVANCE if advance else RETRY


def direction_answer(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return direction


def subtasks_regex(max_items: int = SUBTASK_LIST_MAX_ITEMS, max_chars: int = SUBTASK_MAX_CHARS) -> str:
    """The subtask list's answer format: canonical numbered lines "1. ...", "2. ..." in order.

    Every text it allows is read back by parse_subtasks (items start with a letter, stay on
    one line and are at most max_chars long).
    """
    if max_items < 1 or max_chars < 1:
        raise ValueError(f"subtasks_regex needs max_items >= 1 and max_chars >= 1, got {max_items} and {max_chars}")
    item = f"{SUBTASK_FIRST_CHAR}{_SUBTASK_CHAR}{{0,{max_chars - 1}}}"
    rest = ""
    for number in range(max_items, 1, -1):
        rest = f"(\\n{number}\\. {item}{rest})?"
    return f"1\\. {item}{rest}"


def subtasks_max_chars(max_items: int = SUBTASK_LIST_MAX_ITEMS, max_chars: int = SUBTASK_MAX_CHARS) -> int:
    """Length of the longest text subtasks_regex allows."""
    return sum(len(f"{number}. ") + max_chars for number in range(1, max_items + 1)) + (max_items - 1)


def parse_verdict(text: str) -> bool:
    """True for "advance", False for "retry" (case and surrounding punctuation ignored)."""
    word = text.strip().strip(".!\"'`*").strip().lower()
    if word == ADVANCE:
        return True
    if word == RETRY:
        return False
    raise ValueError(f"the verifier answered {text[:80]!r}, which is neither {ADVANCE!r} nor {RETRY!r}")


def render_prompt_text(task: str, subtask: str, plan: str, next_subtask: str, templates: PromptTemplates = DEFAULT_PROMPTS) -> str:
    """All request texts for one example, joined (the tiny model's tokenizer trains on them)."""
    conversations = [
        subtasks_messages(task, templates),
        chunk_messages(task, subtask, plan, templates),
        verify_messages(subtask, next_subtask, templates),
        direction_messages(templates),
    ]
    texts = [
        item["text"]
        for conversation in conversations
        for message in conversation
        for item in message["content"]
        if item.get("type") == "text"
    ]
    return "\n".join(texts)
