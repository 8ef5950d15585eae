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
    ModelSource,
    RankerRef,
    RewardSourceRef,
)
from rlhfx.context import StageContext
from rlhfx.errors import UserError
from rlhfx.hookspecs import hookimpl

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
