"""The built-in `ppo` algorithm: TRL's classic PPOTrainer (TRL <= 0.11) on rlhfx's shared loop,
so the reward model may use another tokenizer (rewards see text, the policy trains on its own
sampled tokens, cut where the cleaned text ends).

What is PPO's own: the value head (`value_head.py`), the step's arithmetic (`math.py`: KL
penalty, GAE, clipped losses, KL controllers, score scaling), the update (`trainer.py`) and
the step's statistics (`stats.py`). This module is imported at every CLI start: torch and
friends load only when a run starts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from rlhfx import AlignmentAlgorithm, AlignmentSetup, Batch, Sample, UserError, hookimpl

from .config import PPOConfig

__all__ = ["PPO", "PPOConfig"]

#: Why a sample is left out of the update (written in the samples file as `dropped`).
DROPPED_PREFIX = "ppo: cleaner removed text before the response"
TOO_SHORT = "ppo: too short"
DISCARDED = "discarded"
#: The value head's weights beside the final policy (safetensors: loading runs no code).
VALUE_HEAD_FILE = "value_head.safetensors"


class PPO(AlignmentAlgorithm):
    """PPO with a value head, KL penalty to a reference policy, GAE and clipped losses."""

    name = "ppo"
    Config = PPOConfig
    config: PPOConfig

    def prompts_per_iteration(self) -> int:
        return self.config.batch_size

    def setup(self, run: AlignmentSetup) -> None:
        import torch
        from trl.trainer.utils import disable_dropout_in_model

        from .trainer import PPOTrainer
        from .value_head import PolicyWithValueHead

        c = self.config
        self.run = run
        if c.lora is not None and run.sharded:
            raise UserError(f"{run.where}.lora: PPO's LoRA with parallelism = \"fsdp\" is not "
                            "supported yet (the value head reads the sharded policy's inner "
                            "modules); use parallelism = \"ddp\" or full weights")
        for key in ("batch_size", "mini_batch_size"):
            if getattr(c, key) % run.world_size:
                raise UserError(f"{run.where}.{key}: {getattr(c, key)} does not split evenly "
                                f"over {run.world_size} processes")
        policy = run.load_policy()
        self.generation_config = policy.generation_config
        reset = neutral_generation_config(policy, run.tokenizer)
        if reset:
            run.log.info("ppo: generation defaults of the policy ignored (plain sampling keeps "
                         "the KL estimate honest): %s", ", ".join(reset))
        self.policy = policy
        torch.manual_seed(run.seed)  # the same value head on every process
        self.model = PolicyWithValueHead(policy, 0.0 if c.disable_dropout else
                                         c.value_head_dropout)
        # Under fsdp the policy came sharded; the value head is sharded as a unit of its own
        # (the policy stays the root of its own forward, which generation calls directly).
        run.shard(self.model.v_head, small=True)
        if c.disable_dropout:
            # After wrapping, so LoRA's own dropout goes too; the trainer also runs the update
            # in eval mode, the rollout pass's mode, so old and new log-probs match exactly.
            disable_dropout_in_model(self.model)
        self.trainer = PPOTrainer(c, self.model, run.tokenizer.pad_token_id, run.device,
                                  sharded=run.sharded)
        self.trainer.reference = run.reference(policy)

    # ------------------------------------------------------------------ the step
    def update(self, batch: Batch) -> Mapping[str, Any]:
        from rlhfx.alignment.weights import held_mb

        from .stats import combine, payload

        run, c = self.run, self.config
        if self.trainer.model is None:
            self.trainer.prepare()  # after a checkpoint was restored: DDP under torchrun
        kept, counts = trainable(batch.mine, c)
        per_process = run.gather([r for _, r in kept])
        all_scores = [x for part in per_process for x in part]
        kl_coef = self.trainer.kl_ctl.value
        out = self.trainer.step(
            [s.prompt_ids for s, _ in kept], [s.response_ids for s, _ in kept],
            [r for _, r in kept], all_scores, max(len(p) for p in per_process), batch.seed,
        )
        for s, _ in kept:
            s.trained = True
        parts = run.gather(payload(out, [r for _, r in kept], counts,
                                   [len(s.prompt_ids) for s, _ in kept]))
        metrics = combine(parts, kl_coef, self.trainer.optimizer.param_groups[0]["lr"])
        if metrics["kept"]:
            self.trainer.kl_ctl.update(metrics["kl_mean"], int(metrics["kept"]))
        metrics["memory/params_optimizer_mb"] = held_mb(self.model, self._optimizer(), run.gather)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        from rlhfx.alignment.weights import check_in_sync, optimizer_state, trainable_state

        check_in_sync(self.model, self.run.gather)
        # Full tensors also under fsdp (gathered by every process; the main one writes).
        return {"model": trainable_state(self.model),
                "optimizer": optimizer_state(self.model, self._optimizer()),
                "trainer": self.trainer.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from rlhfx.alignment.weights import load_optimizer_state, load_trainable_state

        load_trainable_state(self.model, state["model"])
        load_optimizer_state(self.model, self._optimizer(), state["optimizer"], self.run.where)
        self.trainer.load_state(state["trainer"])

    def _optimizer(self) -> Any:
        """torch's optimizer (under accelerate's wrapper once the trainer is prepared)."""
        return getattr(self.trainer.optimizer, "optimizer", self.trainer.optimizer)

    def final_model(self) -> Any:
        from rlhfx.sharding import full_state_dict

        model = super().final_model()
        model.generation_config = self.generation_config
        self._value_head = full_state_dict(self.model.v_head)  # every process: may gather
        return model

    def save_extras(self, directory: Any) -> None:
        from rlhfx.alignment.state_files import save_tensors

        save_tensors(self._value_head, directory / VALUE_HEAD_FILE)


def trainable(samples: list[Sample], c: PPOConfig) -> tuple[list[tuple[Sample, float]],
                                                              Counter[str]]:
    """The samples PPO trains on, each with its score, and counts of what was left out
    (noted in `sample.extra["dropped"]`): discarded ones (unless `discarded_score` gives them
    a score), ones whose kept text starts after tokens a cleaner removed, too-short ones."""
    counts: Counter[str] = Counter()
    kept = []
    for s in samples:
        counts[s.token_status] += 1
        counts["discarded"] += s.discarded
        if s.token_status == "prefix":
            s.extra["dropped"] = DROPPED_PREFIX
            continue
        if len(s.response_ids) < c.min_response_tokens:
            counts["too_short"] += 1
            s.extra["dropped"] = TOO_SHORT
            continue
        reward = s.reward
        if s.discarded:
            if c.discarded_score is None or s.extra.get("nonfinite_reward") is not None:
                s.extra["dropped"] = DISCARDED
                continue
            reward = c.discarded_score
        if reward is not None:
            kept.append((s, float(reward)))
    return kept, counts


def neutral_generation_config(model: Any, tokenizer: Any) -> list[str]:
    """Replace the model's generation defaults with neutral ones; returns what was reset.

    A checkpoint's generation_config.json may carry min_length, repetition_penalty, top_k and
    the like; `generate` would apply them silently and the sampled tokens would no longer come
    from the policy's distribution (the HH example's negative KL came from min_length).
    """
    from transformers import GenerationConfig

    old = model.generation_config
    fresh = GenerationConfig(
        bos_token_id=getattr(old, "bos_token_id", None),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    changed = []
    for key in ("min_length", "min_new_tokens", "repetition_penalty", "no_repeat_ngram_size",
                "bad_words_ids", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p",
                "encoder_repetition_penalty", "suppress_tokens", "begin_suppress_tokens",
                "forced_bos_token_id", "forced_eos_token_id", "temperature", "top_p"):
        if getattr(old, key, None) != getattr(fresh, key, None):
            changed.append(f"{key}={getattr(old, key, None)!r}")
    model.generation_config = fresh
    return changed


@hookimpl
def rlhfx_register_algorithms(register):
    register(PPO)
