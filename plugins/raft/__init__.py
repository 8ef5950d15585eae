"""RAFT (Reward rAnked FineTuning, Dong et al. 2023) as the built-in `raft` algorithm.

Each iteration samples k responses per prompt, cleans and scores them with the recipe's
cleaners and reward, keeps the best with the recipe's ranker, and fine-tunes on those.
The loop lives in `loop.py`; it is imported only when a run starts, so the CLI stays fast.
"""

from __future__ import annotations

from typing import Any

from rlhfx import AlignmentAlgorithm, StageContext, hookimpl

from .config import RESUME_NEUTRAL, RaftConfig

__all__ = ["Raft", "RaftConfig"]


class Raft(AlignmentAlgorithm):
    """Reward rAnked FineTuning: fine-tune on the best of k samples, iteration after iteration."""

    name = "raft"
    Config = RaftConfig
    config: RaftConfig
    resume_neutral = RESUME_NEUTRAL

    def build_ranker(self) -> Any:
        """The recipe's ranker; `top` without a `fraction` keeps 1/k (b of b*k samples)."""
        ref = self.config.ranker
        if ref.name == "top" and "fraction" not in ref.options:
            cls = ref.component_class
            return cls(cls.Config.model_validate({"fraction": 1 / self.config.k}))
        return ref.build()

    def run(self, ctx: StageContext, setup: Any) -> dict[str, str]:
        from .loop import RaftLoop

        return RaftLoop(ctx, setup, self.config, self.build_ranker()).run()


@hookimpl
def rlhfx_register_algorithms(register):
    register(Raft)
