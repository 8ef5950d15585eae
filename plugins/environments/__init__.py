"""Built-in environments (`calculator`, `guess_number`, `openenv`), the `none` reward source
for recipes whose environment gives every reward, and the calculator demonstration's stages
(`calculator_data`, `tool_eval`)."""

from __future__ import annotations

from collections.abc import Sequence

from rlhfx import EmptyConfig, RewardSource, hookimpl
from rlhfx.plugins.environments.calculator import CalculatorEnvironment
from rlhfx.plugins.environments.calculator_task import CalculatorData, ToolEval
from rlhfx.plugins.environments.guess import GuessNumber
from rlhfx.plugins.environments.openenv_client import OpenEnv


class NoReward(RewardSource[EmptyConfig]):
    """Scores every response 0: the environment's rewards are the episode's reward."""

    name = "none"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [0.0] * len(responses)


@hookimpl
def rlhfx_register_environments(register):
    register(CalculatorEnvironment)
    register(GuessNumber)
    register(OpenEnv)


@hookimpl
def rlhfx_register_reward_sources(register):
    register(NoReward)


@hookimpl
def rlhfx_register_stages(register):
    register(CalculatorData)
    register(ToolEval)
