"""The `dpo` stage: Direct Preference Optimization on preference pairs (TRL's DPOTrainer).

Offline alignment without a reward model: it trains the policy (usually `@sft.model`) on the
same pairs a reward model would learn from (`@data.rm`), against a frozen copy of where it
started, full or LoRA, and saves a merged model, so `data -> sft -> dpo` is a whole recipe.
The data stage writes each pair as two whole texts (prompt and answer joined); the prompt is
their common beginning, cut back to a word boundary.

Besides TRL's training logs (rewards/margins, rewards/accuracies per step), the stage measures
the pairs it holds out before and after training: how often the policy gives the chosen
answer the higher log-probability, and the implicit reward margin
beta * ((logp_w - logp_l) after - (logp_w - logp_l) before) that DPO raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from rlhfx import DataSource, StageContext, UserError, hookimpl
from rlhfx.hf_training import TrainingOptions, hold_out, trainer_arguments
from rlhfx.lora import LoraSettings
from rlhfx.trainer_stage import Outcome, TrainerJob, TrainerStage

Triple = tuple[str, str, str]  # (prompt, chosen answer, rejected answer)


class DPOOptions(TrainingOptions):
    lora: LoraSettings = Field(default_factory=LoraSettings)
    #: DPO's beta: how far the policy may move from the reference (higher: less far).
    beta: float = Field(default=0.1, gt=0)
    #: TRL's loss type(s): "sigmoid" (DPO), "ipo", "hinge", "robust", "apo_zero", ... ; a list
    #: combines several (weights via training_args.loss_weights).
    loss_type: str | list[str] = "sigmoid"
    #: DPO moves a model fast; TRL's default rate is 1e-6.
    learning_rate: float = Field(default=1e-6, gt=0)
    #: Hold out the last N% of the pairs to measure preference accuracy before and after.
    validation_split_percentage: float = Field(default=0.0, ge=0, lt=100)
    #: Held-out pairs from their own set instead (`@data.eval_rm`); every pair of `data` trains.
    eval_data: DataSource | None = None
    eval_data_split: str = "test"
    eval_batch_size: int = Field(default=8, ge=1)
    #: Also keep the LoRA adapter on its own (`adapter` output) besides the merged model.
    save_adapter: bool = True

    @model_validator(mode="after")
    def _one_validation_set(self) -> DPOOptions:
        if self.eval_data is not None and self.validation_split_percentage > 0:
            raise ValueError("eval_data and validation_split_percentage both name held-out "
                             "pairs; set one of them")
        return self


def split_pair(chosen: str, rejected: str) -> Triple:
    """(prompt, chosen answer, rejected answer) from two whole texts with a common prompt.

    The prompt is their longest common beginning, cut back to where its last run of
    whitespace starts: the answers then begin with that whitespace (" Sure", "\nSure"), so
    the prompt's tokens are the same alone and with an answer after it (BPE tokenizers join a
    space to the word after it). Words both answers start with may stay in the prompt: their
    log-probabilities would cancel in the DPO loss anyway.
    """
    n = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        n += 1
    cut = n
    while cut > 0 and not chosen[cut - 1].isspace():
        cut -= 1
    while cut > 0 and chosen[cut - 1].isspace():
        cut -= 1
    if cut == 0:  # no whitespace in the shared part: keep it whole
        cut = n
    return chosen[:cut], chosen[cut:], rejected[cut:]


def to_triples(pairs: Sequence[tuple[str, str]], source: str) -> list[Triple]:
    triples = [split_pair(c, r) for c, r in pairs]
    usable = [t for t in triples if t[0] and t[1].strip() and t[2].strip()]
    if not usable:
        raise UserError(f"{source}: no pair has a common prompt and two different answers "
                        "(dpo needs prompt + answer texts, as the data stage writes them)")
    return usable


def check_loss_types(config_cls: Any, names: Sequence[str], where: str) -> None:
    """Refuse loss types the installed TRL does not know, before any model is loaded.

    TRL itself only notices at the first training step; its config's help text lists them.
    """
    import re

    field = config_cls.__dataclass_fields__.get("loss_type")
    known = re.findall(r"`'(\w+)'`", field.metadata.get("help", "")) if field else []
    unknown = [n for n in names if n not in known]
    if known and unknown:
        raise UserError(f"{where}.loss_type: unknown loss type '{unknown[0]}' "
                        f"(TRL's: {', '.join(known)})")


def sequence_logprobs(
    model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int,
    max_length: int,
) -> list[float]:
    """Sum of log p(answer tokens | prompt) per pair, the answer closed with EOS as TRL does."""
    import torch

    eos = tokenizer.eos_token or ""
    out: list[float] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        ids, starts = [], []
        for prompt, answer in zip(prompts[start : start + batch_size],
                                  answers[start : start + batch_size], strict=True):
            text = answer if answer.endswith(eos) else answer + eos
            prompt_ids = tokenizer(prompt)["input_ids"]
            full = tokenizer(prompt + text)["input_ids"][:max_length]
            shared = 0
            while (shared < min(len(prompt_ids), len(full))
                   and prompt_ids[shared] == full[shared]):
                shared += 1
            ids.append(full)
            starts.append(max(shared, 1))
        width = max(len(x) for x in ids)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device),
                           attention_mask=attention.to(model.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logp = logp.gather(-1, input_ids[:, 1:, None].to(logp.device)).squeeze(-1)
        for row, (x, first) in enumerate(zip(ids, starts, strict=True)):
            out.append(float(token_logp[row, first - 1 : len(x) - 1].sum()))
    return out


def preference_margins(
    model: Any, tokenizer: Any, triples: Sequence[Triple], batch_size: int, max_length: int
) -> list[float]:
    """logp(chosen | prompt) - logp(rejected | prompt) for each pair."""
    prompts = [p for p, _, _ in triples]
    chosen = sequence_logprobs(model, tokenizer, prompts, [c for _, c, _ in triples],
                               batch_size, max_length)
    rejected = sequence_logprobs(model, tokenizer, prompts, [r for _, _, r in triples],
                                 batch_size, max_length)
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


def held_out_report(before: Sequence[float], after: Sequence[float], beta: float
                    ) -> dict[str, float]:
    """Preference accuracy before/after, and the implicit reward margin DPO raises."""
    n = len(before)
    rewards = [beta * (a - b) for a, b in zip(after, before, strict=True)]
    return {
        "pairs": float(n),
        "accuracy_before": sum(m > 0 for m in before) / n,
        "accuracy_after": sum(m > 0 for m in after) / n,
        "reward_margin": sum(rewards) / n,
        "reward_accuracy": sum(r > 0 for r in rewards) / n,
    }


@dataclass
class DPOJob(TrainerJob):
    held: list[Triple]
    before: list[float]
    results: dict[str, Any]


class DPOStage(TrainerStage[DPOOptions, DPOJob]):
    """Direct Preference Optimization of a causal LM on preference pairs (TRL DPOTrainer)."""

    name = "dpo"
    outputs = ("model", "adapter")
    progress_label = "DPO"

    def prepare(self, ctx: StageContext, resume: Any) -> DPOJob:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        from rlhfx.data.sets import read_pairs
        from rlhfx.models import load_causal_lm, load_tokenizer

        c = self.config
        loss_type = [c.loss_type] if isinstance(c.loss_type, str) else list(c.loss_type)
        check_loss_types(DPOConfig, loss_type, f"{ctx.recipe_file}: stages.{ctx.stage_id}")
        source = ctx.resolve(c.data)
        pairs = read_pairs(source, c.data_split)
        if c.max_rows:
            pairs = pairs[: c.max_rows]
        if c.eval_data is not None:
            eval_source = ctx.resolve(c.eval_data)
            train_pairs, held_pairs = pairs, read_pairs(eval_source, c.eval_data_split)
        else:
            train_pairs, held_pairs = hold_out(pairs, c.validation_split_percentage)
        train = to_triples(train_pairs, source)
        held = to_triples(held_pairs, source) if held_pairs else []
        model_source = ctx.resolve(c.model)
        tokenizer = load_tokenizer(model_source)
        model = load_causal_lm(model_source, dtype=c.dtype)
        # The reference: the starting model, frozen. With LoRA, TRL disables the adapters
        # instead; a full run gets its own copy (TRL would reload it by name, which fails
        # for models that are not plain checkpoints).
        ref_model = load_causal_lm(model_source, dtype=c.dtype) if c.method == "full" else None
        results: dict[str, Any] = {"train_pairs": len(train), "validation_pairs": len(held)}
        before: list[float] = []
        if held:
            before = preference_margins(model, tokenizer, held, c.eval_batch_size, c.max_length)
        args = trainer_arguments(DPOConfig, c, ctx, beta=c.beta, loss_type=loss_type)
        ctx.log.info("dpo: %d training pairs, %d held out; %s, beta %g, loss %s", len(train),
                     len(held), "LoRA" if c.method == "lora" else "full fine-tuning", c.beta,
                     "+".join(loss_type))
        columns = {name: [t[i] for t in train]
                   for i, name in enumerate(("prompt", "chosen", "rejected"))}
        return DPOJob(DPOTrainer, dict(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_dict(columns),
            processing_class=tokenizer,
            peft_config=c.lora.peft_config("CAUSAL_LM") if c.method == "lora" else None,
        ), tokenizer, model_source, held, before, results)

    def finish(self, ctx: StageContext, trainer: Any, job: DPOJob) -> Outcome:
        c = self.config
        trained = trainer.model
        if job.held:
            after = preference_margins(trained, job.tokenizer, job.held, c.eval_batch_size,
                                       c.max_length)
            report = held_out_report(job.before, after, c.beta)
            job.results["held_out"] = report
            ctx.log_metrics(trainer.state.global_step,
                            {f"eval/{k}": v for k, v in report.items()})
            ctx.log.info(
                "dpo: held-out preference accuracy %.3f -> %.3f on %d pairs (implicit reward "
                "margin %.4f, positive for %.0f%%)", report["accuracy_before"],
                report["accuracy_after"], len(job.held), report["reward_margin"],
                100 * report["reward_accuracy"],
            )
        return Outcome(model=trained, results=job.results, info={"beta": c.beta})

    def keeps_adapter(self) -> bool:
        return self.config.method == "lora" and self.config.save_adapter


@hookimpl
def rlhfx_register_stages(register):
    register(DPOStage)
