"""RAFT (Reward rAnked FineTuning, Dong et al. 2023) as the built-in `raft` algorithm.

Each iteration the shared loop samples k responses per prompt and scores them; RAFT keeps the
best with the recipe's ranker and fine-tunes on those (`train.py`, through the HF Trainer).
Multi-turn episodes train on their recorded token ids, the environment's tokens masked.
This module is imported at every CLI start: torch and friends load only when a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhfx import AlignmentAlgorithm, AlignmentSetup, Batch, Ranker, Sample, hookimpl

from .config import RaftConfig

__all__ = ["Raft", "RaftConfig"]


class Raft(AlignmentAlgorithm[RaftConfig]):
    """Reward rAnked FineTuning: fine-tune on the best of k samples, iteration after iteration."""

    name = "raft"
    #: an episode's environment tokens are context, never targets (`episode_examples`)
    trains_episodes = True

    def __init__(self, config: RaftConfig | None = None):
        super().__init__(config)
        self.ranker: Ranker = self.config.ranker.build()
        self.ranker.keep = self.config.batch_size
        self._warned_ranker = False

    # ------------------------------------------------------------------ what the loop samples
    def samples_per_prompt(self) -> int:
        return self.ranker.samples_per_prompt(self.config.k)

    def prompts_per_iteration(self) -> int:
        c = self.config
        return c.batch_size * c.k // self.samples_per_prompt()

    # ------------------------------------------------------------------ the algorithm
    def setup(self, setup: AlignmentSetup) -> None:
        self.run = setup
        # Check `training_args` before the model loads (validation cannot import transformers).
        self._arguments(0)
        # float32 weights, LoRA base included: the Trainer's mixed precision keeps an fp32
        # master copy, and generation runs under the loop's autocast. Under fsdp the policy
        # is sharded once, here: each iteration's Trainer finds it sharded and keeps it so.
        self.policy = setup.load_policy(frozen_base_dtype="float32")

    def _arguments(self, seed: int) -> Any:
        from .train import training_arguments

        run = self.run
        return training_arguments(self.config, run.stage_dir / "trainer", seed, run.device,
                                  run.compute_dtype, run.where,
                                  run.parallelism.fsdp if run.sharded else None)

    def update(self, batch: Batch) -> Mapping[str, Any]:
        from .train import build_examples, completion_text, episode_examples, finetune

        c, run = self.config, self.run
        # One selection for everyone: the main process ranks, the others receive it.
        chosen = run.broadcast(self._select(batch.samples) if run.is_main else None)
        selected = [batch.samples[i] for i in chosen]
        for s in selected:
            s.trained = True
            s.extra["text"] = s.prompt + completion_text(s.raw_response, s.response,
                                                         c.response_separator)
        if not selected:
            self._say_why_nothing_to_train(batch)
        if run.environment is not None:
            examples = episode_examples(selected, c.train_on_prompt)
        else:
            examples = build_examples(
                run.tokenizer, [(s.prompt, s.extra["text"][len(s.prompt):]) for s in selected],
                c, finished=[s.finished for s in selected],
            )
        out = finetune(self.policy, run.tokenizer, examples, self._arguments(batch.shared_seed),
                       sharded=run.sharded, end_of_turn_weight=c.end_of_turn_weight)
        # Parameters plus the optimizer state while training (the Trainer's fresh optimizer;
        # the most any process held): under fsdp each process holds its shards only.
        held = max(run.gather(out.pop("held_bytes", 0)))
        if held:
            out["memory/params_optimizer_mb"] = held / 2**20
        return out

    def _select(self, samples: list[Sample]) -> list[int]:
        """The ranker's choice, less anything unusable (discarded, unscored, out of range):
        a plugin ranker must never make RAFT train on a discarded sample."""
        from rlhfx.faults import call_plugin, check_selection

        where = f"{self.run.where}.ranker"
        picked = sorted(set(check_selection(
            call_plugin(self.ranker, where, self.ranker.select, samples), len(samples),
            self.ranker, where,
        )))
        kept = [i for i in picked if Batch.usable(samples[i])]
        if len(kept) < len(picked) and not self._warned_ranker:
            self._warned_ranker = True
            self.run.log.warning(
                "raft: ranker '%s' returned %d discarded (or invalid) samples; they are left "
                "out (warned once)", self.config.ranker.name, len(picked) - len(kept),
            )
        return kept

    def _say_why_nothing_to_train(self, batch: Batch) -> None:
        usable = sum(1 for s in batch.samples if Batch.usable(s))
        if usable:
            name = self.config.ranker.name
            reason = f"ranker '{name}' selected none of the {usable} usable samples"
        else:
            nonfinite = sum(1 for s in batch.samples if s.extra.get("nonfinite_reward"))
            reason = (f"every sample was discarded ({len(batch.samples) - nonfinite} by the "
                      f"cleaners, {nonfinite} for a non-finite reward)")
        self.run.log.warning("raft: iteration %d: %s; nothing to train on", batch.iteration,
                             reason)


@hookimpl
def rlhfx_register_algorithms(register):
    register(Raft)
