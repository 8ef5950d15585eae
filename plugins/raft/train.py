"""Fine-tuning on the selected samples with `transformers.Trainer` (LoRA through peft).

Trainer gives us the optimizer, scheduler, gradient accumulation, mixed precision and
data-parallel training under `torchrun` (DDP over gloo on the CPU). We tokenize the b selected
pairs ourselves (a few lines, the prompt's labels -100) and pad them with `pad_examples`: that
avoids building a `datasets.Dataset` and an SFTTrainer every iteration, which costs more than
training b tiny samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .config import RaftConfig


def completion_text(raw: str, cleaned: str, separator: str | None) -> str:
    """What the policy is trained to write after the prompt: the cleaned response, led by the
    whitespace the policy itself generated before it (the `strip` cleaner removes it for
    scoring, but the model should keep starting its answers the way it does), or by
    `separator` when the recipe sets one.
    """
    lead = raw[: len(raw) - len(raw.lstrip())] if separator is None else separator
    return lead + cleaned


def pad_examples(examples: Sequence[dict[str, list[int]]], pad_id: int,
                 trim_logits: bool = False) -> dict[str, Any]:
    """A training batch of `build_examples` rows, padded on the right: `pad_id` in the input,
    -100 in the labels (no loss), 0 in the attention mask. `trim_logits` (for a model that
    takes `logits_to_keep`): see `labelled_window`."""
    import torch

    width = max(len(example["input_ids"]) for example in examples)

    def padded(rows: list[list[int]], value: int) -> Any:
        return torch.tensor([row + [value] * (width - len(row)) for row in rows])

    ids = [list(example["input_ids"]) for example in examples]
    batch = {
        "input_ids": padded(ids, pad_id),
        "labels": padded([list(example["labels"]) for example in examples], -100),
        "attention_mask": padded([[1] * len(row) for row in ids], 0),
    }
    if trim_logits:
        batch.update(labelled_window(batch["labels"]))
    return batch


def labelled_window(labels: Any) -> dict[str, Any]:
    """The model's arguments that make logits only where a label is predicted: from the column
    before the batch's first label on (`logits_to_keep`), with the labels cut to match.

    The prompt's logits would cost a product with the whole vocabulary per token (a fifth of
    SmolLM2-135M's arithmetic) and a float32 softmax over it, for labels that are all -100.
    The loss is the same: the model shifts the cut labels by one inside the window, as it
    shifts whole ones. Nothing to cut (a label in column 0, or none) gives {}."""
    labelled = (labels != -100).any(dim=0).nonzero()
    if len(labelled) == 0 or int(labelled[0]) < 1:
        return {}
    keep = labels.shape[1] - int(labelled[0]) + 1
    return {"labels": labels[:, -keep:], "logits_to_keep": keep}


def build_examples(
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    config: RaftConfig,
    finished: Sequence[bool] | None = None,
) -> list[dict[str, list[int]]]:
    """Token ids and labels for each (prompt, completion); prompt labels are -100 by default.

    Prompt and response are tokenized apart and joined, as the policy saw them while
    generating, so the loss covers exactly the response tokens. EOS follows a response only
    when it really ended (`finished`: EOS or a stop string); one cut by the length limit gets
    none, or the policy would learn to stop wherever the limit happened to fall.
    """
    if not pairs:
        return []
    from rlhfx.rollouts import encode_prompts

    prompts = encode_prompts(tokenizer, [p for p, _ in pairs])  # BOS as in generation and SFT
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    ends = list(finished) if finished is not None else [True] * len(pairs)
    eos = tokenizer.eos_token_id
    out = []
    for p_ids, r_ids, done in zip(prompts, responses, ends, strict=True):
        tail = [eos] if config.append_eos and done and eos is not None else []
        ids = list(p_ids) + list(r_ids) + tail
        labels = list(ids) if config.train_on_prompt else [-100] * len(p_ids) + ids[len(p_ids):]
        out.append({"input_ids": ids, "labels": labels})
    return out


def episode_examples(samples: Sequence[Any], train_on_prompt: bool) -> list[dict[str, list[int]]]:
    """Token ids and labels of multi-turn episodes, from the ids the loop recorded: the model's
    tokens exactly as sampled are the targets; the environment's (`action_mask` 0) stay in
    the context with label -100, as the prompt does unless `train_on_prompt`. Nothing is
    decoded and tokenized again, and no EOS is added: each model turn already ends with the
    end-of-turn token it sampled (one cut by a limit ends without)."""
    out = []
    for s in samples:
        prompt = list(s.prompt_ids) if train_on_prompt else [-100] * len(s.prompt_ids)
        response = [t if m else -100
                    for t, m in zip(s.response_ids, s.model_token_mask(), strict=True)]
        out.append({"input_ids": list(s.prompt_ids) + list(s.response_ids),
                    "labels": prompt + response})
    return out


def end_weighted_loss(eos_id: int, weight: float) -> Any:
    """The Trainer's `compute_loss_func`: next-token cross-entropy where an EOS target counts
    `weight` times, normalised as the models' own loss is (over the label tokens of the
    accumulated batch when the Trainer counts them, else of this batch), so `weight = 1`
    gives the model's loss exactly."""
    import torch

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, 1:].to(logits.device).reshape(-1)
        per_token = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets, ignore_index=-100, reduction="none")
        weights = torch.where(targets == eos_id, weight, 1.0)
        total = (per_token * weights).sum()
        count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
        return total / count

    return loss


def _progress_callback(progress: Any, description: str) -> Any:
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """Advances a rich progress bar per optimizer step (the Trainer's tqdm is off)."""

        task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if progress is not None:
                self.task = progress.add_task(description, total=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.update(self.task, completed=state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.remove_task(self.task)

    return RichProgress()


def training_arguments(
    config: RaftConfig, output_dir: Path, seed: int, device: str, dtype: str,
    where: str = "raft", fsdp: Any = None,
) -> Any:
    """The Trainer's arguments: the recipe's `training_args` under RAFT's own settings.

    `dtype`: the precision the update computes in, "auto" already resolved
    (`AlignmentSetup.compute_dtype`).

    `where` (`<recipe>: stages.<id>.algorithm`) prefixes errors; the loop calls this once
    before loading the model, so a bad key fails fast (validation cannot import transformers).
    `fsdp`: the stage's FSDP settings under `parallelism = "fsdp"` (the precision stays
    RAFT's `dtype`).
    """
    from transformers import TrainingArguments

    from rlhfx.trainer_args import build_arguments, warmup_setting

    forced: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # Mixed precision over the fp32 weights the loop loads. The CPU autocasts to bf16
        # only; fp16 there trains in fp32.
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16" and device != "cpu",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        # The loop checkpoints, logs and shows progress itself, once per iteration.
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every trainable weight is used in each forward
        **warmup_setting(TrainingArguments, config.warmup_ratio),
    )
    if fsdp is not None:
        from rlhfx.trainer_args import fsdp_arguments

        sharding = fsdp_arguments(TrainingArguments, fsdp)
        # The policy arrives sharded (see `finetune`): nothing for accelerate to wrap.
        forced.update(fsdp=sharding["fsdp"],
                      fsdp_config={**sharding["fsdp_config"], "auto_wrap_policy": "NO_WRAP"})
    return build_arguments(TrainingArguments, where, defaults={}, extra=config.training_args,
                           forced=forced)


def finetune(
    model: Any,
    tokenizer: Any,
    examples: list[dict[str, list[int]]],
    args: Any,
    progress: Any = None,
    sharded: bool = False,
    end_of_turn_weight: float = 1.0,
) -> dict[str, Any]:
    """One pass of `args.num_train_epochs` over `examples`; returns the training loss and the
    optimiser steps (`train_steps`). `sharded`: the model is FSDP2-sharded (accelerate keeps
    an already sharded model as it is, so a fresh Trainer each iteration costs no re-wrap).
    `end_of_turn_weight`: see `end_weighted_loss` (1: the model's own loss)."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from rlhfx.models import accepts_logits_to_keep
    from rlhfx.sharding import local_parameter_bytes
    from rlhfx.trainer_args import fsdp_on_cpu

    if not examples:
        return {"train_loss": None, "train_steps": 0}
    trainer_cls = fsdp_on_cpu(Trainer) if sharded else Trainer
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=examples,  # a list is a map-style dataset; no datasets.Dataset needed
        data_collator=partial(pad_examples, pad_id=tokenizer.pad_token_id,
                              trim_logits=accepts_logits_to_keep(model)),
        callbacks=[_progress_callback(progress, "training")],
        **({"compute_loss_func": end_weighted_loss(tokenizer.eos_token_id, end_of_turn_weight)}
           if end_of_turn_weight != 1 and tokenizer.eos_token_id is not None else {}),
    )
    trainer.remove_callback(PrinterCallback)  # our summary line reports the loss
    result = trainer.train()
    model.eval()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    return {"train_loss": float(result.training_loss), "train_steps": int(result.global_step),
            "held_bytes": local_parameter_bytes(model, optimizer)}
