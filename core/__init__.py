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
    Environment,
    EnvironmentConfig,
    EnvStep,
    Ranker,
    ResponseCleaner,
    RewardSource,
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
    RewardSourceRef,
)
from rlhfx.context import StageContext
from rlhfx.errors import UserError
from rlhfx.hookspecs import hookimpl

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
    "EnvStep",
    "Environment",
    "EnvironmentConfig",
    "EnvironmentRef",
    "ModelSource",
    "Ranker",
    "RankerRef",
    "ResponseCleaner",
    "RewardSource",
    "RewardSourceRef",
    "Sample",
    "Stage",
    "StageContext",
    "UserError",
    "__version__",
    "hookimpl",
]
