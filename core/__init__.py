"""rlhfx: align language models with human feedback, every part a plugin.

Plugin authors need only what this module exports.
"""

from rlhfx.alignment import AlgorithmConfig, AlignmentSetup, Batch
from rlhfx.components import (
    AlignmentAlgorithm,
    CleanResult,
    Component,
    ComponentConfig,
    DataFormat,
    EmptyConfig,
    EngineSetup,
    Environment,
    EnvironmentConfig,
    EnvStep,
    Ranker,
    ResponseCleaner,
    RewardSource,
    RolloutEngine,
    Sample,
    Stage,
)
from rlhfx.config import (
    AlgorithmRef,
    CleanerRef,
    DataSource,
    EnvironmentRef,
    ModelSource,
    RankerRef,
    Regex,
    RewardSourceRef,
)
from rlhfx.context import StageContext
from rlhfx.data.preference import PreferenceFormat
from rlhfx.errors import UserError
from rlhfx.hookspecs import hookimpl
from rlhfx.rollouts import Rollout, RolloutSettings, SamplingSettings

#: The version of rlhfx (kept here only; pyproject.toml reads it).
__version__ = "0.1.0"

__all__ = [
    "AlgorithmConfig",
    "AlgorithmRef",
    "AlignmentAlgorithm",
    "AlignmentSetup",
    "Batch",
    "CleanResult",
    "CleanerRef",
    "Component",
    "ComponentConfig",
    "DataFormat",
    "DataSource",
    "EmptyConfig",
    "EngineSetup",
    "EnvStep",
    "Environment",
    "EnvironmentConfig",
    "EnvironmentRef",
    "ModelSource",
    "PreferenceFormat",
    "Ranker",
    "RankerRef",
    "Regex",
    "ResponseCleaner",
    "RewardSource",
    "RewardSourceRef",
    "Rollout",
    "RolloutEngine",
    "RolloutSettings",
    "Sample",
    "SamplingSettings",
    "Stage",
    "StageContext",
    "UserError",
    "__version__",
    "hookimpl",
]
