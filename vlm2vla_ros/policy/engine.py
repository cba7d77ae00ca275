"""The policy engine: hierarchical generation (subtasks, then plan + chunk per cycle) and the verifier.

Backend-independent: a backend only turns one GenerationRequest into text. The engine builds
the prompts, picks each stage's sampling and grammar, parses every answer (even constrained
ones), retries unusable sampled answers up to max_retries (a greedy answer would come again,
so it gets one try) and then raises PolicyError.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np

from vlm2vla_ros.action_language import (
    ActionChunk,
    ActionParseError,
    ActionStep,
    chunk_regex,
    format_action_chunk,
    parse_action_chunk,
    parse_subtasks,
)

from . import prompts
from .adapter_base import check_adapter_base
from .adapter_language import language_differences, read_adapter_language
from .config import PolicyConfig, StageSampling, VerdictMargin, read_verdict_margin
from .types import (
    CycleResult,
    Generation,
    GenerationRequest,
    PolicyError,
    SubtaskResult,
    VerifyResult,
    as_images,
)

T = TypeVar("T")

PLAN_TOKENS_WITHOUT_LIMIT = 128
"""Plans are free text: with max_new_tokens null they get this many tokens."""


class Backend(Protocol):
    """Turns one request into text: the transformers backend or an OpenAI-compatible server."""

    def generate(self, request: GenerationRequest) -> Generation: ...

    def close(self) -> None: ...


def restart_sampling(key: str, *engines: Any) -> None:
    """PolicyEngine.restart_sampling(key) on each engine that samples, once each: stand-ins (the
    evaluation's ExpertReplay, the tests' scripted engines) do not sample and have no such method."""
    for engine in {id(e): e for e in engines}.values():
        if hasattr(engine, "restart_sampling"):
            engine.restart_sampling(key)


class PolicyEngine:
    """Subtasks once per task, plan + chunk per cycle, and the verifier, on one loaded model.

    Thread-safe: calls are serialised, so the policy and the verifier can share one engine
    (and one copy of the weights) from different threads.
    """

    def __init__(self, backend: Backend, config: PolicyConfig) -> None:
        self.backend = backend
        self.config = config
        self._lock = threading.Lock()
        self._calls = 0
        self._seed_offset = 0  # restart_sampling's, from the task's key
        limits = config.limits
        extreme = -limits.largest_cm
        longest = ActionStep(extreme, extreme, extreme, 0)
        self._chunk_regex = chunk_regex(limits)
        # Every token holds at least one character, so the longest answer (+1 for the stop
        # token) is a budget within which a constrained answer always completes.
        self._chunk_budget = len(format_action_chunk(ActionChunk((longest,) * limits.max_steps), limits)) + 1
        self._subtasks_regex = prompts.subtasks_regex()
        self._subtasks_budget = prompts.subtasks_max_chars() + 1
        self._verify_budget = max(len(prompts.ADVANCE), len(prompts.RETRY)) + 1
        self._margin_missing_said = False

    def subtasks(self, image: np.ndarray, task: str) -> SubtaskResult:
        """The task's subtask list, from the first image (once per task)."""
        images = as_images([image], 1)
        messages = prompts.subtasks_messages(task, self.config.prompts)
        request = self._request(messages, images, self.config.subtasks, self._subtasks_budget, self._subtasks_regex)
        generation, subtasks, failures, seconds, tokens = self._attempts("subtasks", request, parse_subtasks, whole=True)
        return SubtaskResult(subtasks, generation.text, {"subtasks": seconds}, {"subtasks": tokens}, failures)

    def cycle(self, image: np.ndarray, task: str, subtask: str) -> CycleResult:
        """A motion plan, then an action chunk, for the current subtask."""
        images = as_images([image], 1)
        config = self.config
        plan_request = self._request(
            prompts.plan_messages(task, subtask, config.prompts),
            images,
            config.plan,
            config.plan.max_new_tokens or PLAN_TOKENS_WITHOUT_LIMIT,
            None,
        )
        plan_request.keep_prefix = config.reuse_prefix
        plan_gen, plan, plan_failures, plan_s, plan_tokens = self._attempts("plan", plan_request, _plan_text)
        chunk_request = self._request(
            prompts.chunk_messages(task, subtask, plan, config.prompts),
            images,
            config.chunk,
            self._chunk_budget,
            self._chunk_regex,
        )
        chunk_request.prefix = plan_gen.prefix

        def parse(text: str) -> ActionChunk:
            return parse_action_chunk(text, config.limits)

        chunk_gen, chunk, chunk_failures, chunk_s, chunk_tokens = self._attempts("chunk", chunk_request, parse)
        return CycleResult(
            plan=plan,
            chunk=chunk,
            raw_plan=plan_gen.text,
            raw_chunk=chunk_gen.text,
            timings={"plan": plan_s, "chunk": chunk_s, "cycle": plan_s + chunk_s},
            tokens={
                "plan": plan_tokens,
                "chunk": chunk_tokens,
                "plan_prompt": plan_gen.prompt_tokens,
                "chunk_prompt": chunk_gen.prompt_tokens,
                "chunk_reused": chunk_gen.reused_tokens,
            },
            parse_failures=plan_failures + chunk_failures,
        )

    def verify(self, before: np.ndarray, after: np.ndarray, subtask: str, next_subtask: str, retries: int = 0
               ) -> VerifyResult:
        """Advance or retry, judged by the base model (the LoRA adapter switched off); retries:
        how many times this subtask was retried so far, for config.verdict_margin's bar."""
        rule = self.config.verdict_margin or VerdictMargin()
        rule.bar(retries)  # a bad count fails before the model runs
        images = as_images([before, after], 2)
        messages = prompts.verify_messages(subtask, next_subtask, self.config.prompts)
        request = self._request(messages, images, self.config.verify, self._verify_budget, prompts.VERDICT_REGEX)
        request.use_adapter = False
        request.first_token_choices = (prompts.ADVANCE, prompts.RETRY)
        generation, greedy_advance, _, seconds, tokens = self._attempts("verify", request, prompts.parse_verdict)
        logits = generation.first_token_logits
        margin = logits[prompts.ADVANCE] - logits[prompts.RETRY] if logits else None
        if margin is None and rule.applies(subtask) and not self._margin_missing_said:
            self._margin_missing_said = True
            logging.getLogger(__name__).warning(
                "verdict_margin %s is set, but the %s backend gives no margin (a server, or answers whose first tokens "
                "are one): its verdicts are the greedy word", rule, self.config.backend)
        advance = rule.advance(subtask, margin, greedy_advance, retries)
        return VerifyResult(advance, generation.text, {"verify": seconds}, {"verify": tokens}, margin)

    @property
    def needs_warm_up(self) -> bool:
        """A static cache on the transformers backend compiles each adapter state's decode step
        on its first request (on a GPU: minutes for Gemma-3-12B, docs/benchmarks.md)."""
        return self.config.backend == "transformers" and self.config.static_cache_tokens > 0

    @property
    def calls(self) -> int:
        """Sampled generations since the engine loaded or its task began (restart_sampling): the
        n-th samples with seed config.seed + the task's offset + n. Greedy ones (temperature 0,
        the verifier's) are not counted: they draw nothing, and a shared engine's verdict on a
        pre-empted task, landing after the next task began, must not shift that task's seeds."""
        return self._calls

    @property
    def sampling_state(self) -> tuple[int, int]:
        """(seed offset, calls): an engine given another's (a resumed experiment's) samples on as
        that one would have."""
        with self._lock:
            return self._seed_offset, self._calls

    @sampling_state.setter
    def sampling_state(self, state: tuple[int, int]) -> None:
        with self._lock:
            self._seed_offset, self._calls = state

    def restart_sampling(self, key: str) -> None:
        """Start a task's own sampling seeds, at the start of every task (the policy node's key: the
        task id) and closed-loop episode (the evaluation's: "kind-seed", the demo's task id): a task
        samples as it would alone, so an episode of an evaluation does not depend on the episodes
        before it, and the demo run on a scene draws what the evaluation drew there. The key's hash
        sets where the seeds start, so different tasks draw independent samples."""
        offset = zlib.crc32(f"{self.config.seed}:{key}".encode()) % 2**30
        with self._lock:
            self._seed_offset, self._calls = offset, 0

    def warm_up(self) -> float:
        """Run every stage once on a grey image and return the seconds it took; answers unused.

        So that compilation happens at start-up, not in a task's first cycle. Sampling seeds are
        left as they were, so a warmed engine answers as a fresh one does."""
        start = time.perf_counter()
        grey = np.full((224, 224, 3), 128, np.uint8)
        calls = self._calls
        stages: list[Callable[[], object]] = [
            lambda: self.subtasks(grey, "pick up the block"),
            lambda: self.cycle(grey, "pick up the block", "Grasp the block"),
            lambda: self.verify(grey, grey, "Grasp the block", "Lift the block"),
        ]
        try:
            for stage in stages:
                try:
                    stage()
                except PolicyError as exc:
                    if not exc.failures:  # nothing was generated: a real failure, not an unusable answer
                        raise
        finally:
            self._calls = calls
        return time.perf_counter() - start

    def close(self) -> None:
        with self._lock:
            self.backend.close()

    def _request(
        self,
        messages: Any,
        images: tuple[np.ndarray, ...],
        sampling: StageSampling,
        budget: int,
        regex: str | None,
    ) -> GenerationRequest:
        return GenerationRequest(
            messages=messages,
            images=images,
            sampling=sampling,
            max_new_tokens=sampling.max_new_tokens or budget,
            regex=regex if self.config.constrained else None,
        )

    def _attempts(
        self, stage: str, request: GenerationRequest, parse: Callable[[str], T], whole: bool = False
    ) -> tuple[Generation, T, int, float, int]:
        """Generate and parse up to max_retries times: (generation, value, failures, seconds, tokens).
        whole: an answer cut off at max_new_tokens is a failed try, since its end may be missing
        and still parse (a subtask list that lost its last items). A greedy stage (temperature 0)
        gets one try: it would write the same answer again."""
        failures = 0
        seconds = 0.0
        tokens = 0
        reason = ""
        tries = self.config.max_retries if request.sampling.temperature > 0 else 1
        for _ in range(tries):
            with self._lock:
                request.seed = self.config.seed + self._seed_offset + self._calls
                if request.sampling.temperature > 0:
                    self._calls += 1
                generation = self.backend.generate(request)
            seconds += generation.seconds
            tokens += generation.new_tokens
            if generation.prefix is not None:
                request.prefix = generation.prefix  # a retry continues from the same cache
            try:
                if whole and generation.cut_off:
                    raise ValueError(
                        f"the answer was cut off at {request.max_new_tokens} tokens, so it may be incomplete "
                        "(raise the stage's max_new_tokens if this repeats)"
                    )
                return generation, parse(generation.text), failures, seconds, tokens
            except (ActionParseError, ValueError) as exc:
                failures += 1
                reason = str(exc)
        greedy = " (greedy decoding, so a retry would write it again)" if tries == 1 < self.config.max_retries else ""
        raise PolicyError(
            f"the {stage} stage produced no usable answer in {failures} tries{greedy} (last: {reason[:200]})",
            stage,
            failures,
        )


def _plan_text(text: str) -> str:
    plan = " ".join(text.split())
    if not plan:
        raise ValueError("the motion plan is empty")
    return plan


def _check_adapter_language(config: PolicyConfig) -> None:
    """PolicyError when the config reads numbers in another format than the adapter writes them;
    a logged warning for tighter limits or other prompts (adapter_language)."""
    learnt = read_adapter_language(config.adapter_path) if config.adapter_path else None
    if learnt is None:
        return
    errors, warnings = language_differences(config, learnt)
    if errors:
        raise PolicyError(f"adapter {config.adapter_path}: " + "; ".join(errors), "load")
    for warning in warnings:
        logging.getLogger(__name__).warning("adapter %s: %s", config.adapter_path, warning)


def load_policy(config: PolicyConfig) -> PolicyEngine:
    """A new engine with the backend the config names (loads the model for transformers), warmed
    up when its first requests would compile (needs_warm_up)."""
    if config.backend == "openai":
        from .openai_backend import OpenAIBackend

        return PolicyEngine(OpenAIBackend(config.openai), config)
    from .transformers_backend import TransformersBackend

    if config.verdict_margin is None:
        config = config.replace(verdict_margin=read_verdict_margin(config.model_path))
    _check_adapter_language(config)
    if config.adapter_path:
        check_adapter_base(config.model_path, config.adapter_path)
    engine = PolicyEngine(TransformersBackend.load(config), config)
    if engine.needs_warm_up:
        seconds = engine.warm_up()
        logging.getLogger(__name__).info("policy warmed up in %.1f s (static_cache_tokens=%d)", seconds, config.static_cache_tokens)
    return engine
