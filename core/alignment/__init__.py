"""The shared alignment loop and the contract an alignment algorithm implements.

Path of data through one iteration (each step a module here or beside it):
`schedule` picks the prompts -> `rlhfx.rollouts` samples k responses per prompt ->
`rlhfx.scoring` cleans and scores them (`tokens` cuts the sampled tokens to the cleaned
text) -> the algorithm's `update(batch)` turns them into a training signal and trains ->
`schema` and `guards` turn the iteration into one metrics record -> `checkpoints` saves.
`loop` runs that; `setup` is what an algorithm is given, `batch` what it is handed.
"""

from rlhfx.alignment.batch import Batch
from rlhfx.alignment.config import AlgorithmConfig
from rlhfx.alignment.setup import AlignmentSetup

__all__ = ["AlgorithmConfig", "AlignmentSetup", "Batch"]
