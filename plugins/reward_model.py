"""The `reward_model` stage: a pairwise-loss reward model with TRL's RewardTrainer.

As in the seed pipeline: LoRA by default (r=16, alpha=32, dropout 0.1) with full training as an
option, lr 3e-5, one epoch, validation on the last `validation_split_percentage`% of the pairs
(the data stage has shuffled them already), or on a set of its own (`eval_data`), with pairwise
accuracy as the metric; the adapter is merged and a full sequence-classification model is saved
(output `model`), ready for the `reward_model` / `gpt-neo-rm` reward sources.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhfx import DataSource, StageContext, UserError, distributed, hookimpl
from rlhfx.hf_training import TrainingOptions, hold_out, merge_if_lora, trainer_arguments
from rlhfx.lora import LoraSettings
from rlhfx.trainer_stage import Outcome, TrainerJob, TrainerStage

EVAL_FILE = "eval.json"
#: Level of the interval given with the held-out pairwise accuracy.
ACCURACY_LEVEL = 0.95


class RewardModelOptions(TrainingOptions):
    method: Literal["full", "lora"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(default=3e-5, gt=0)
    #: The last N% of the pairs are held out for validation (pairwise accuracy).
    validation_split_percentage: float = Field(default=10.0, ge=0, lt=100)
    #: Validation pairs from their own set instead (`@data.eval_rm`: pairs on held-out
    #: prompts); every pair of `data` is then trained on.
    eval_data: DataSource | None = None
    eval_data_split: str = "test"
    #: Also measure validation accuracy before training (one extra pass over the held-out set).
    eval_before_training: bool = False
    #: Validate every N steps during training too (unset: only at the end).
    eval_steps: int | None = Field(default=None, ge=1)
    #: TRL's pull of the rewards towards zero mean (0.01 is its recommendation); unset: off.
    center_rewards_coefficient: float | None = Field(default=None, ge=0)
    #: Batch size when scoring the held-out pairs for accuracy.
    eval_batch_size: int = Field(default=16, ge=1)
    #: Batch pairs of similar length together (the batches in a seeded random order, the
    #: same each epoch): far less padding when lengths vary, e.g. 35% fewer tokens to run on
    #: the quickstart's pairs. Off: the Trainer's random batches.
    group_by_length: bool = False

    @model_validator(mode="after")
    def _one_validation_set(self) -> RewardModelOptions:
        split_asked = "validation_split_percentage" in self.model_fields_set
        if self.eval_data is not None and split_asked and self.validation_split_percentage > 0:
            raise ValueError(
                "eval_data and validation_split_percentage both name validation pairs; "
                "set one of them"
            )
        return self


def pairwise_accuracy(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], batch_size: int,
    max_length: int | None, append_eos: bool,
) -> dict[str, float]:
    """Share of pairs where the chosen text outscores the rejected one (ties count as wrong).

    Texts are cut the way the reward sources cut them (from the left, at the model's limit
    unless `max_length`), so this is the accuracy the trained model will have in alignment.
    """
    from .evaluate.stats import wilson_interval
    from .rewards.reward_model import score_texts

    tokenizer.truncation_side = "left"

    chosen = score_texts(model, tokenizer, [c for c, _ in pairs], batch_size, max_length,
                         append_eos)
    rejected = score_texts(model, tokenizer, [r for _, r in pairs], batch_size, max_length,
                           append_eos)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = len(margins)
    right = sum(m > 0 for m in margins)
    low, high = wilson_interval(right, n, ACCURACY_LEVEL)
    return {
        "accuracy": right / n if n else float("nan"),
        "mean_margin": sum(margins) / n if n else float("nan"),
        "pairs": float(n),
        # a 95% Wilson interval: how far the accuracy on this many pairs could be from luck
        "ci_low": low if n else float("nan"),
        "ci_high": high if n else float("nan"),
    }


def tokenized_pairs(
    tokenizer: Any, pairs: list[tuple[str, str]], max_length: int, append_eos: bool
) -> tuple[Any, int]:
    """Token ids for RewardTrainer (`chosen_ids`/`rejected_ids`), and how many were too long.

    We tokenize rather than let the trainer do it so that texts are encoded exactly as the
    reward sources encode them when scoring (EOS appended as text, the tokenizer's own special
    tokens) and so that pairs over `max_length` are counted, not dropped silently.
    """
    from datasets import Dataset

    eos = tokenizer.eos_token if append_eos else None

    def encode(texts: list[str]) -> list[list[int]]:
        if eos:
            texts = [t if t.endswith(eos) else t + eos for t in texts]
        if not texts:
            return []
        # Cut at max_length + 1: enough to tell which are too long, and no long-input warning.
        enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length + 1)
        return enc["input_ids"]

    chosen = encode([a for a, _ in pairs])
    rejected = encode([b for _, b in pairs])
    keep = [i for i in range(len(pairs))
            if len(chosen[i]) <= max_length and len(rejected[i]) <= max_length]
    data = Dataset.from_dict({"chosen_ids": [chosen[i] for i in keep],
                              "rejected_ids": [rejected[i] for i in keep]})
    return data, len(pairs) - len(keep)


def length_grouped(data: Any, batch_size: int, seed: int) -> Any:
    """The pairs reordered into batches of similar length, the batches in a seeded order.

    transformers' own `group_by_length` sampler puts one dataset this small into a single
    length-sorted run (longest batches first), a curriculum we do not want; this keeps the
    batch order random.
    """
    import random

    lengths = [max(len(a), len(b)) for a, b in zip(data["chosen_ids"], data["rejected_ids"],
                                                   strict=True)]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return data.select([i for batch in batches for i in batch])


@dataclass
class RewardModelJob(TrainerJob):
    held: list[tuple[str, str]]
    append_eos: bool
    results: dict[str, Any]


class RewardModelStage(TrainerStage[RewardModelOptions, RewardModelJob]):
    """Train a reward model on preference pairs (TRL RewardTrainer; LoRA or full)."""

    name = "reward_model"
    outputs = ("model",)
    progress_label = "reward model"

    def prepare(self, ctx: StageContext, resume: Any) -> RewardModelJob:
        from trl import RewardConfig, RewardTrainer

        from rlhfx.data.sets import read_pairs
        from rlhfx.models import load_sequence_classifier, load_tokenizer

        from .rewards.reward_model import prepare_for_scoring

        c = self.config
        pairs = read_pairs(ctx.resolve(c.data), c.data_split, c.skip_bad_rows)
        if c.max_rows:
            pairs = pairs[: c.max_rows]
        if c.eval_data is not None:
            train, held = pairs, read_pairs(ctx.resolve(c.eval_data), c.eval_data_split,
                                          c.skip_bad_rows)
        else:
            train, held = hold_out(pairs, c.validation_split_percentage)
        model_source = ctx.resolve(c.model)
        tokenizer = load_tokenizer(model_source)
        with _quiet_fresh_head():
            model = load_sequence_classifier(model_source, dtype=c.dtype, num_labels=1)
        prepare_for_scoring(model, tokenizer)
        ctx.log.info("reward_model: %d training pairs, %d held out; %s", len(train), len(held),
                     "LoRA" if c.method == "lora" else "full training")
        results: dict[str, Any] = {"train_pairs": len(train), "validation_pairs": len(held)}
        earlier = _logged_before(ctx) if resume.checkpoint is not None else None
        if held and c.eval_before_training and earlier is not None:
            results["before"] = earlier  # measured by the attempt this one resumes
        elif held and c.eval_before_training:
            before = pairwise_accuracy(model, tokenizer, held, c.eval_batch_size, None,
                                       tokenizer.eos_token is not None)
            results["before"] = before
            ctx.log_metrics(0, {f"eval_before/{k}": v for k, v in before.items()})
            ctx.log.info("reward_model: validation accuracy before training %.3f",
                         before["accuracy"])

        append_eos = tokenizer.eos_token is not None  # BERT-like tokenizers have none
        train_set, too_long = tokenized_pairs(tokenizer, train, c.max_length, append_eos)
        if too_long:
            ctx.log.warning("reward_model: %d of %d training pairs are over max_length = %d "
                            "tokens and are left out", too_long, len(train), c.max_length)
        if not len(train_set):
            raise UserError(f"{ctx.recipe_file}: stages.{ctx.stage_id}.max_length: every "
                            f"training pair is over {c.max_length} tokens")
        eval_set, _ = tokenized_pairs(tokenizer, held, c.max_length, append_eos)
        results["train_pairs_over_max_length"] = too_long

        eval_every = c.eval_steps is not None and bool(held)
        grouping: dict[str, Any] = {}
        if c.group_by_length:
            per_step = c.batch_size * distributed.world_size()
            train_set = length_grouped(train_set, per_step, ctx.seed)
            # Keep the grouped order (transformers 5; 4.x samples at random, grouping lost).
            if "train_sampling_strategy" in RewardConfig.__dataclass_fields__:
                grouping["train_sampling_strategy"] = "sequential"
        args = trainer_arguments(
            RewardConfig, c, ctx,
            eval_strategy="steps" if eval_every else "no",
            eval_steps=c.eval_steps,
            center_rewards_coefficient=c.center_rewards_coefficient,
            **grouping,
        )
        return RewardModelJob(RewardTrainer, dict(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set if len(eval_set) else None,
            processing_class=tokenizer,
            peft_config=c.lora.peft_config("SEQ_CLS") if c.method == "lora" else None,
        ), tokenizer, model_source, held, append_eos, results)

    def finish(self, ctx: StageContext, trainer: Any, job: RewardModelJob) -> Outcome:
        from rlhfx.sharding import is_sharded

        from .rewards.reward_model import REWARD_INFO

        # A sharded LoRA model cannot merge (each process holds a slice of every weight): its
        # held-out accuracy runs on the adapters, every process taking part in each forward;
        # the main process merges a gathered copy when it saves.
        model = trainer.model if is_sharded(trainer.model) else merge_if_lora(trainer.model)
        results = job.results
        if job.held:
            after = pairwise_accuracy(model, job.tokenizer, job.held,
                                      self.config.eval_batch_size, None, job.append_eos)
            results["after"] = after
            ctx.log_metrics(trainer.state.global_step,
                            {f"eval/{k}": v for k, v in after.items()})
            ctx.log.info(
                "reward_model: validation pairwise accuracy %.3f (95%% interval %.3f-%.3f) on "
                "%d held-out pairs (mean margin %.3f)", after["accuracy"], after["ci_low"],
                after["ci_high"], len(job.held), after["mean_margin"],
            )
        # REWARD_INFO: how the trainer saw its texts, so the reward source scores the same.
        return Outcome(model=model, results=results, info=_short(results),
                       extra_files={REWARD_INFO: {"append_eos": job.append_eos}})


@contextmanager
def _quiet_fresh_head() -> Iterator[None]:
    """Starting from a causal LM, the scoring head is new by design: skip the load report."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _logged_before(ctx: StageContext) -> dict[str, Any] | None:
    """The accuracy before training that an earlier attempt of this stage logged, if any."""
    from rlhfx.files import read_jsonl

    if not ctx.metrics_file.exists():
        return None
    prefix = "eval_before/"
    for record in read_jsonl(ctx.metrics_file):
        found = {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
        if found:
            return found
    return None


def _short(results: dict[str, Any]) -> dict[str, Any]:
    after = results.get("after") or {}
    return {"validation_accuracy": after.get("accuracy")} if after else {}


@hookimpl
def rlhfx_register_stages(register):
    register(RewardModelStage)
