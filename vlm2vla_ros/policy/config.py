"""Policy engine settings: one dataclass, read from a dict or a YAML file, strictly checked.

Unknown keys are rejected rather than ignored, so a misspelt setting in a launch file fails
at start-up instead of silently running with a default.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from vlm2vla_ros.action_language import ActionLimits
from vlm2vla_ros.checks import positive, real

from .prompts import DEFAULT_PROMPTS, PromptTemplates

BACKENDS = ("transformers", "openai")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

T = TypeVar("T")


@dataclass(frozen=True)
class StageSampling:
    """How one stage samples. temperature 0 means greedy.

    max_new_tokens None means "as long as the stage's answer format can be" (the grammar's
    longest text), so a constrained answer is never cut off.
    """

    temperature: float
    top_p: float = 0.95
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        real(self.temperature, "temperature", lo=0.0)  # NaN ran greedy without a word
        positive(self.top_p, "top_p", hi=1.0)
        if self.max_new_tokens is not None and (
            isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be a positive integer or null, got {self.max_new_tokens!r}")


VERDICT_MARGIN_FILE = "verdict_margin.json"
"""A verifier model folder's own VerdictMargin, written beside its weights."""


@dataclass(frozen=True)
class VerdictMargin:
    """When the verifier's answer counts as "advance": its margin (the first-token logit of
    "advance" minus that of "retry") above start - step * k, k the retries the subtask has had so
    far. A strict start keeps the first, far-off ends of a move from passing; the bar falls with
    each retry, so the subtask still passes where the verifier is less sure (docs/miniature.md,
    finding 50). It has no floor: without a retry limit a subtask passes after enough retries
    whatever the verifier says (the policy node's max_retries_per_subtask, 3, stops at -0.25
    for the shipped rule). It applies to the subtasks whose first word is in `verbs` (all when empty); the
    others, and start = step = 0, keep the greedy verdict. The numbers belong to one verifier's
    weights: a verifier folder carries its own (VERDICT_MARGIN_FILE)."""

    start: float = 0.0
    step: float = 0.0
    verbs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        real(self.start, "verdict_margin.start")
        real(self.step, "verdict_margin.step", lo=0.0)
        verbs = self.verbs
        if isinstance(verbs, str) or not isinstance(verbs, (list, tuple)) or not all(
                isinstance(v, str) and v.strip() and " " not in v.strip() for v in verbs):
            raise ValueError(f"verdict_margin.verbs must be a list of single words, got {verbs!r}")
        object.__setattr__(self, "verbs", tuple(v.strip().lower() for v in verbs))

    def bar(self, retries: int) -> float:
        """The margin a verdict must clear after `retries` retries of its subtask."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        return self.start - self.step * retries

    @property
    def greedy(self) -> bool:
        """start = step = 0: the greedy verdict on every subtask."""
        return self.start == 0 and self.step == 0

    def applies(self, subtask: str) -> bool:
        if self.greedy:
            return False
        words = subtask.split()
        return not self.verbs or bool(words) and words[0].lower() in self.verbs

    def advance(self, subtask: str, margin: float | None, greedy_advance: bool, retries: int) -> bool:
        """The verdict: whether the margin clears the bar after `retries` retries, where this
        rule applies to the subtask and the backend gave a margin; else greedy_advance (the
        decoded word)."""
        bar = self.bar(retries)
        if margin is None or not self.applies(subtask):
            return greedy_advance
        return margin > bar


def write_verdict_margin(model_dir: str | Path, rule: VerdictMargin) -> Path:
    """Write a verifier folder's own rule (VERDICT_MARGIN_FILE), for whoever loads it."""
    path = Path(model_dir) / VERDICT_MARGIN_FILE
    data = {"start": rule.start, "step": rule.step, "verbs": list(rule.verbs)}
    path.write_text(json.dumps(data) + "\n", encoding="utf-8")
    return path


def read_verdict_margin(model_dir: str | Path) -> VerdictMargin:
    """The verifier folder's VERDICT_MARGIN_FILE, or the greedy verdict when it has none."""
    path = Path(model_dir) / VERDICT_MARGIN_FILE
    if not path.is_file():
        return VerdictMargin()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None
    return VerdictMargin(**_checked_keys(VerdictMargin, data, str(path)))


@dataclass(frozen=True)
class OpenAIConfig:
    """An OpenAI-compatible server (vLLM) serving the base model and the LoRA adapter by name."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "vlm2vla"
    """Served name of the policy (vLLM: the name given in --lora-modules NAME=PATH)."""
    base_model: str = ""
    """Served name of the base model, used by the verifier (adapter off)."""
    api_key: str = ""
    timeout_s: float = 30.0
    legacy_guided_regex: bool = False
    """Send vLLM's pre-0.10.2 `guided_regex` instead of `structured_outputs` (removed in 0.12)."""

    def __post_init__(self) -> None:
        if not re.match(r"https?://", self.base_url):
            raise ValueError(f"openai.base_url must start with http:// or https://, got {self.base_url!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("openai.model (the served adapter name) must be a non-empty string")
        positive(self.timeout_s, "openai.timeout_s")


@dataclass(frozen=True)
class PolicyConfig:
    """Everything the policy engine needs: which model, where it runs, how each stage decodes."""

    backend: str = "transformers"
    model_path: str = ""
    """Local model folder (transformers backend, required there); unused by the openai backend."""
    adapter_path: str | None = None
    """Local LoRA adapter folder (PEFT format); None runs the base model."""
    device: str = "auto"
    dtype: str = "auto"
    """auto: bfloat16 on CUDA, float32 on CPU."""
    load_in_4bit: bool = False
    subtasks: StageSampling = StageSampling(temperature=0.5)
    plan: StageSampling = StageSampling(temperature=0.1, max_new_tokens=64)
    chunk: StageSampling = StageSampling(temperature=0.5)
    verify: StageSampling = StageSampling(temperature=0.0)
    seed: int = 0
    max_retries: int = 3
    """Tries per stage before a PolicyError (a greedy stage, temperature 0, gets one)."""
    constrained: bool = True
    """Decode subtasks, chunks and verdicts with their grammars (never unparseable)."""
    reuse_prefix: bool = True
    """Continue the chunk stage from the plan stage's key/value cache (a dynamic cache only)."""
    static_cache_tokens: int = 0
    """0: a new key/value cache that grows with each request (transformers backend). N > 0: one
    cache of N tokens, allocated once and reset for every request that fits in it (prompt plus
    max_new_tokens); a request that does not fit gets a growing one. On a CUDA GPU a static
    cache lets generate() compile the decode step with torch.compile and replay it as a CUDA
    graph (docs/benchmarks.md). The shared cache is not carried from plan to chunk, so
    reuse_prefix has no effect on the requests it serves."""
    limits: ActionLimits = field(default_factory=ActionLimits)
    prompts: PromptTemplates = DEFAULT_PROMPTS
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    verdict_margin: VerdictMargin | None = None
    """When a verdict advances (VerdictMargin); None: the model folder's own, when it has one
    (load_policy reads it), else the greedy verdict."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 1:
            raise ValueError(f"max_retries must be a positive integer, got {self.max_retries!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**30:
            # each task's seeds start up to 2**30 above it (PolicyEngine.restart_sampling): below 2**31 in all,
            # which a server's 32-bit seed field holds
            raise ValueError(f"seed must be an integer from 0 to 2**30 - 1, got {self.seed!r}")
        if isinstance(self.static_cache_tokens, bool) or not isinstance(self.static_cache_tokens, int) or self.static_cache_tokens < 0:
            raise ValueError(f"static_cache_tokens must be an integer >= 0 (0: off), got {self.static_cache_tokens!r}")
        for name in ("load_in_4bit", "constrained", "reuse_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.adapter_path is not None and not str(self.adapter_path).strip():  # `adapter_path: ""` in a YAML
            object.__setattr__(self, "adapter_path", None)  # no adapter, not the folder "." it would name

    def replace(self, **changes: Any) -> PolicyConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Build from plain data (parsed YAML/JSON); nested sections are dicts."""
        values = _checked_keys(cls, data, "policy config")
        for stage in ("subtasks", "plan", "chunk", "verify"):
            if stage in values:
                default = getattr(cls, stage)
                section = _checked_keys(StageSampling, values[stage], f"policy config section {stage!r}")
                values[stage] = dataclasses.replace(default, **section)
        sections: dict[str, type[Any]] = {"limits": ActionLimits, "openai": OpenAIConfig, "verdict_margin": VerdictMargin}
        for name, section_cls in sections.items():
            if name in values and not (name == "verdict_margin" and values[name] is None):
                values[name] = section_cls(**_checked_keys(section_cls, values[name], f"policy config section {name!r}"))
        if "prompts" in values:
            if not isinstance(values["prompts"], Mapping):
                raise ValueError("policy config section 'prompts' must be a mapping")
            values["prompts"] = PromptTemplates.from_dict(dict(values["prompts"]))
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str, overrides: Mapping[str, Any] | None = None) -> PolicyConfig:
        """Read a YAML mapping of PolicyConfig fields; top-level overrides replace the file's values."""
        import yaml

        file = Path(path)
        if not file.is_file():
            raise ValueError(f"policy config file {file} does not exist")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"policy config file {file} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"policy config file {file} must hold a mapping, not {type(data).__name__}")
        return cls.from_dict({**data, **(overrides or {})})


def _checked_keys(cls: type[T], data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {what}; known keys: {sorted(known)}")
    return dict(data)
