"""The action language: how robot actions are written as plain text (see docs/action_language.md).

Pure Python (no ROS): grammar, parser and formatter of action chunks, subtask lists,
trajectory merging for dataset building, and rule-based motion plans.
"""

from .grammar import chunk_regex, number_regex
from .parser import (
    MAX_TEXT_CHARS,
    chunk_to_array,
    format_action_chunk,
    parse_action_chunk,
    step_values,
    validate_chunk,
)
from .subtasks import MAX_SUBTASK_CHARS, MAX_SUBTASKS, checked_subtasks, format_subtasks, parse_subtasks
from .trajectory import MergeConfig, Segment, below_resolution, merge_segments, merge_trajectory
from .types import DEFAULT_LIMITS, ActionChunk, ActionLimits, ActionParseError, ActionStep, ActionValueError
from .verbalise import CM_VECTOR_PATTERN, format_cm, plan_with_total, read_plan_total, verbalise_moves

__all__ = [
    "CM_VECTOR_PATTERN",
    "MAX_SUBTASKS",
    "MAX_SUBTASK_CHARS",
    "MAX_TEXT_CHARS",
    "DEFAULT_LIMITS",
    "ActionChunk",
    "ActionLimits",
    "ActionParseError",
    "ActionStep",
    "ActionValueError",
    "MergeConfig",
    "Segment",
    "below_resolution",
    "chunk_regex",
    "checked_subtasks",
    "chunk_to_array",
    "format_action_chunk",
    "format_cm",
    "format_subtasks",
    "merge_segments",
    "merge_trajectory",
    "number_regex",
    "parse_action_chunk",
    "parse_subtasks",
    "plan_with_total",
    "read_plan_total",
    "step_values",
    "validate_chunk",
    "verbalise_moves",
]
