"""Robot data -> training examples: the episode format, its sources, labellers, the builder.

Pure Python (no ROS import; the bag source reads rosbag2 with the pure-Python rosbags).
See docs/data_and_training.md.
"""

from .builder import STAGES, BuildConfig, BuildReport, build_dataset, read_examples, split_of
from .episode import EpisodeError, EpisodeRecord, LoadReport, StepRecord, load_episodes, write_episode
from .labeller import (
    LabelError,
    LabellerSettings,
    OpenAILabeller,
    OpenAILabellerConfig,
    make_labeller,
)

__all__ = [
    "STAGES",
    "BuildConfig",
    "BuildReport",
    "EpisodeError",
    "EpisodeRecord",
    "LabelError",
    "LabellerSettings",
    "LoadReport",
    "OpenAILabeller",
    "OpenAILabellerConfig",
    "StepRecord",
    "build_dataset",
    "load_episodes",
    "make_labeller",
    "read_examples",
    "split_of",
    "write_episode",
]
