"""LoRA fine-tuning and evaluation of the policy (see docs/data_and_training.md).

torch, transformers and peft are imported only when a run starts.
"""

from .collator import IGNORE_INDEX, AnswerOnlyCollator
from .config import TrainConfig
from .trainer import TrainError, TrainResult, train

__all__ = ["IGNORE_INDEX", "AnswerOnlyCollator", "TrainConfig", "TrainError", "TrainResult", "train"]
