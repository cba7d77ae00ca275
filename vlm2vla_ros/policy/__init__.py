"""The policy engine (pure Python, no ROS): VLM + LoRA adapter writing subtasks, plans and chunks.

torch, transformers and peft are imported only when a model is loaded, so configs, prompts
and the OpenAI backend work without them. See docs/policy.md.
"""

from .config import OpenAIConfig, PolicyConfig, StageSampling, VerdictMargin
from .engine import Backend, PolicyEngine, load_policy
from .prompts import DEFAULT_PROMPTS, PromptTemplates
from .types import CycleResult, Generation, GenerationRequest, PolicyError, SubtaskResult, VerifyResult

__all__ = [
    "DEFAULT_PROMPTS",
    "Backend",
    "CycleResult",
    "Generation",
    "GenerationRequest",
    "OpenAIConfig",
    "PolicyConfig",
    "PolicyEngine",
    "PolicyError",
    "PromptTemplates",
    "StageSampling",
    "SubtaskResult",
    "VerdictMargin",
    "VerifyResult",
    "load_policy",
]
