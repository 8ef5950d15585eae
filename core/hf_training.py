"""What every Hugging Face Trainer stage shares (sft, reward_model, dpo, and any plugin's):
the training options, Trainer arguments, the sharded Trainer under `fsdp`, resuming from the
last intact checkpoint with figures continuous with an uninterrupted run
(`rlhfx.trainer_resume`), a callback that turns Trainer logs into rlhfx metrics and a rich
progress bar, and saving a model atomically (LoRA merged, sharded weights gathered).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rlhfx import distributed
from rlhfx.components import ComponentConfig
from rlhfx.config import DataSource, ModelSource
from rlhfx.context import StageContext
from rlhfx.lora import LoraSettings

# ------------------------------------------------------------------------------ options


class TrainingOptions(ComponentConfig):
    """What every Trainer-based stage takes (the names follow `transformers.TrainingArguments`)."""

    #: The model to start from: a directory, a hub id, `builtin:tiny-gpt-neo`, or `@stage.model`.
    model: ModelSource
    #: The training set: a file, a hub dataset id, or an earlier stage's output (`@data.sft`).
    data: DataSource
    #: Split to read when `data` is a hub id.
    data_split: str = "train"
    #: Drop rows of `data` that are not JSON or lack the text field (counted and warned)
    #: instead of stopping at the first with its file and line.
    skip_bad_rows: bool = False
    #: Use at most this many rows (all when unset).
    max_rows: int | None = Field(default=None, ge=1)
    #: `full` fine-tuning or `lora` adapters (merged into the saved model).
    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float = Field(default=1.0, gt=0)
    #: Stop after this many optimizer steps (overrides `epochs` when > 0).
    max_steps: int = -1
    learning_rate: float = Field(default=2e-5, gt=0)
    #: Per-device micro-batch; effective batch = this x accumulation x processes.
    batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    #: Sequences are truncated (SFT) or filtered (reward model) at this many tokens.
    max_length: int = Field(default=512, ge=8)
    lr_scheduler: str = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    logging_steps: int = Field(default=10, ge=1)
    #: A checkpoint every N optimizer steps; a killed stage resumes from the last one.
    save_steps: int = Field(default=200, ge=1)
    save_total_limit: int = Field(default=2, ge=1)
    #: Weights dtype while training.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: Mixed precision over float32 weights: `auto` = bf16 where the device computes it
    #: natively (a GPU that supports it; a CPU with AVX512-BF16 or AMX, where it trains about
    #: 1.4x as fast), none elsewhere (emulated bf16 would be slower than float32).
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    #: Trackers the Trainer itself reports to, with its own metric names. Unset: the run's
    #: `[run] report_to` less the trackers rlhfx writes for every stage (tensorboard, wandb,
    #: mlflow, trackio), which get the metrics.jsonl names from the run context.
    report_to: list[str] | None = None
    #: Keep the Trainer checkpoints after the final model is saved (they hold optimizer state,
    #: about three times the model's size, and are only needed to resume an unfinished stage).
    keep_checkpoints: bool = False
    #: Extra `TrainingArguments` / TRL config fields, checked when the stage starts. They
    #: override the options above, but not what the stage relies on (output dir, dataset
    #: fields).
    training_args: dict[str, Any] = Field(default_factory=dict)


# ------------------------------------------------------------------------------ shared helpers

CHECKPOINTS = "checkpoints"
DONE = "rlhfx_done.json"


def trainer_report_to(own: list[str] | None, run: tuple[str, ...]) -> list[str]:
    """What the HF Trainer reports to: the stage's own list, or the run's that rlhfx does not
    write itself (so a tracker never gets a stage's metrics twice under two names)."""
    from rlhfx.trackers import OURS

    return list(own) if own is not None else [t for t in run if t not in OURS]


def trainer_arguments(config_cls: Any, opts: TrainingOptions, ctx: StageContext, **ours: Any):
    """Build a TRL config (SFTConfig, RewardConfig) from our options; unknown extras fail."""
    from rlhfx.hardware import has_native_bf16
    from rlhfx.trainer_args import build_arguments

    on_gpu = ctx.device == "cuda"
    precision = opts.precision
    if precision == "auto":
        precision = "bf16" if has_native_bf16(ctx.device) else "no"
    args: dict[str, Any] = dict(
        output_dir=str(ctx.stage_dir / CHECKPOINTS),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        learning_rate=opts.learning_rate,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        lr_scheduler_type=opts.lr_scheduler,
        weight_decay=opts.weight_decay,
        logging_steps=opts.logging_steps,
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to=trainer_report_to(opts.report_to, ctx.report_to),
        use_cpu=not on_gpu,
        seed=ctx.seed,
        data_seed=ctx.seed,
        disable_tqdm=True,  # rich progress instead (ProgressAndMetrics)
        max_length=opts.max_length,
        dataloader_num_workers=0,
    )
    if ctx.parallelism.sharded:
        from rlhfx.trainer_args import fsdp_arguments

        args.update(fsdp_arguments(config_cls, ctx.parallelism.fsdp))
    return build_arguments(
        config_cls, f"{ctx.recipe_file}: stages.{ctx.stage_id}", defaults=args,
        extra=opts.training_args, forced=ours, warmup_ratio=opts.warmup_ratio,
        activation_checkpointing=opts.gradient_checkpointing,
    )


def trainer_class(trainer_cls: Any, ctx: StageContext) -> Any:
    """The Trainer class to use: under `fsdp`, one that shards on the CPU too."""
    if not ctx.parallelism.sharded:
        return trainer_cls
    from rlhfx.trainer_args import fsdp_on_cpu

    return fsdp_on_cpu(trainer_cls)


def prepare_resume(ctx: StageContext) -> Any:
    """Where this stage resumes (`rlhfx.trainer_resume.Resume`): the newest intact checkpoint,
    with metrics.jsonl cut back to it. Call before the stage logs anything."""
    from rlhfx.trainer_resume import prepare_resume as prepare

    where = f"{ctx.recipe_file}: stages.{ctx.stage_id}"
    folder = ctx.stage_dir / CHECKPOINTS
    if ctx.is_main:
        resume = prepare(folder, ctx.metrics_file, where, ctx.log, is_main=True)
    distributed.barrier()  # the others look once damaged checkpoints are out of the way
    if not ctx.is_main:
        resume = prepare(folder, ctx.metrics_file, where, ctx.log, is_main=False)
    return resume


def finished_model(ctx: StageContext, name: str = "model") -> Path | None:
    """The stage's final model when an earlier attempt already saved it completely."""
    path = ctx.stage_dir / name
    return path if (path / DONE).exists() else None


def save_atomically(
    model: Any, tokenizer: Any, target: Path, info: dict[str, Any],
    extra: dict[str, Any] | None = None, state_dict: dict[str, Any] | None = None,
) -> Path:
    """Save to a temporary folder, then rename: a kill mid-save never leaves a half model.

    `extra` maps file names to JSON written beside the model; `state_dict`: the weights to
    save instead of the model's own (the gathered ones of a sharded model).
    """
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, state_dict=state_dict)
    if state_dict is not None:
        from rlhfx.sharding import name_plain_class

        name_plain_class(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, data in (extra or {}).items():
        (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (tmp / DONE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def drop_checkpoints(ctx: StageContext, opts: TrainingOptions) -> None:
    """Remove the resume checkpoints once the final model is safely saved (unless kept)."""
    folder = ctx.stage_dir / CHECKPOINTS
    if not opts.keep_checkpoints and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def quiet_libraries() -> None:
    """Our rich progress bar replaces the per-map and per-shard tqdm bars of datasets/hf."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def hold_out(rows: list[Any], percentage: float) -> tuple[list[Any], list[Any]]:
    """The last `percentage`% of rows (at least one when asked for any) as the eval part."""
    if percentage <= 0 or len(rows) < 2:
        return rows, []
    n = max(1, int(len(rows) * percentage / 100))
    n = min(n, len(rows) - 1)
    return rows[:-n], rows[-n:]


def make_progress_callback(
    ctx: StageContext, progress: Any, description: str, resume: Any = None
) -> Any:
    """A TrainerCallback: a rich progress bar over optimizer steps, logs -> metrics.jsonl.

    It also keeps the figures of a resumed run continuous with an uninterrupted one: the running
    loss total and TRL's token count are saved into every checkpoint (an `ExportableState` is
    written into `trainer_state.json`) and put back when training resumes from it.
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    from rlhfx.trainer_resume import TOTALS_KEY

    class ProgressAndMetrics(TrainerCallback, ExportableState):
        task: Any = None
        trainer: Any = None  # set by run_trainer
        measured = False

        def state(self) -> dict[str, Any]:
            trainer = self.trainer
            unlogged = getattr(trainer, "_tr_loss", None)
            attributes = {
                "total_loss": getattr(trainer, "_total_loss_scalar", None),
                "unlogged_loss": float(unlogged) if unlogged is not None else None,
                "last_logged_step": getattr(trainer, "_globalstep_last_logged", None),
                "num_tokens": getattr(trainer, "_total_train_tokens", None),
                # TRL's per-step figures (entropy, accuracy) waiting for the next log's mean
                "pending": _pending_metrics(trainer),
            }
            return {"args": {}, "attributes": attributes}

        def on_train_begin(self, args, state, control, **kwargs):
            self.task = progress.add_task(description, total=state.max_steps,
                                          completed=state.global_step)
            trainer = self.trainer
            if resume is None or resume.checkpoint is None or trainer is None:
                return
            # The Trainer has just zeroed its running totals: put the checkpoint's back.
            if resume.total_loss is not None and hasattr(trainer, "_total_loss_scalar"):
                trainer._total_loss_scalar = float(resume.total_loss)
            if resume.unlogged_loss is not None and hasattr(trainer, "_tr_loss"):
                trainer._tr_loss += resume.unlogged_loss
                if resume.last_logged_step is not None:
                    trainer._globalstep_last_logged = int(resume.last_logged_step)
            pending = getattr(trainer, "_metrics", {}).get("train")
            if resume.pending and isinstance(pending, dict):
                for key, values in resume.pending.items():
                    pending[key] = list(values)

        def on_step_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.update(self.task, completed=state.global_step)
            if (not self.measured and state.global_step == 1
                    and kwargs.get("optimizer") is not None):
                # What this process holds once the optimizer state exists (shards under fsdp);
                # logged at step 1 only, so a resumed run's metrics equal an uninterrupted one's.
                self.measured = True
                from rlhfx.sharding import local_parameter_bytes

                optimizer = getattr(kwargs["optimizer"], "optimizer", kwargs["optimizer"])
                held = local_parameter_bytes(kwargs["model"], optimizer)
                ctx.log_metrics(state.global_step, {"memory/params_optimizer_mb": held / 2**20})

        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if not numbers:
                return
            trainer = self.trainer
            resumed = resume is not None and resume.checkpoint is not None
            if resumed and "train_loss" in numbers and trainer is not None:
                # The Trainer averages over this call's steps only; the total is the whole run's.
                total = getattr(trainer, "_total_loss_scalar", None)
                if total is not None and state.global_step:
                    numbers["train_loss"] = total / state.global_step
            ctx.log_metrics(state.global_step, numbers)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()
                              if k in ("loss", "eval_loss", "accuracy", "eval_accuracy",
                                       "learning_rate"))
            if shown:
                ctx.log.info("%s step %d: %s", ctx.stage_id, state.global_step, shown)

    assert ProgressAndMetrics.__name__ == TOTALS_KEY
    return ProgressAndMetrics()


def _pending_metrics(trainer: Any) -> dict[str, list[float]] | None:
    pending = getattr(trainer, "_metrics", {}).get("train") if trainer is not None else None
    if not isinstance(pending, dict):
        return None
    return {k: [float(v) for v in values] for k, values in pending.items()
            if isinstance(values, list) and all(isinstance(v, int | float) for v in values)}


def quiet_trainer(trainer: Any) -> None:
    """Drop the Trainer's own printing of log dicts (our callback logs them)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def run_trainer(trainer: Any, ctx: StageContext, resume: Any = None) -> None:
    """Train, resuming from `resume` (what `prepare_resume` found) when it names a checkpoint.
    Dropout draws its masks with `BitsDropout` (LoRA's, added by the Trainer, included)."""
    from rlhfx.dropout import use_bits_dropout
    from rlhfx.hardware import cpu_training_attention

    use_bits_dropout(trainer.model)
    if resume is None:
        resume = prepare_resume(ctx)
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "ProgressAndMetrics":
            callback.trainer = trainer
    checkpoint = str(resume.checkpoint) if resume.checkpoint is not None else None
    if checkpoint:
        ctx.log.info("%s: resuming from %s", ctx.stage_id, checkpoint)
        if resume.num_tokens is not None and hasattr(trainer, "_total_train_tokens"):
            trainer._total_train_tokens = resume.num_tokens  # TRL counts from zero otherwise
    with cpu_training_attention(trainer.model, trainer.args.use_cpu, trainer.args.bf16):
        trainer.train(resume_from_checkpoint=checkpoint)


def gathered_state(model: Any) -> dict[str, Any] | None:
    """A sharded (FSDP) model's full weights on the main process, else None.

    Every process must call it (the weights are gathered from all of them).
    """
    from rlhfx.sharding import full_state_dict, is_sharded, without_tied_copies

    return without_tied_copies(model, full_state_dict(model)) if is_sharded(model) else None


def trained_model(model: Any) -> tuple[Any, dict[str, Any] | None]:
    """What a stage saves: the model and the weights to save (None: its own).

    Every process must call it. A sharded model's weights are gathered onto the main process;
    a sharded LoRA model comes back there as a plain copy holding them, which can save its
    adapter and merge (a sharded one cannot: each process holds a slice of every weight).
    """
    from rlhfx.sharding import full_state_dict, is_sharded, plain_lora_copy

    if not is_sharded(model):
        return model, None
    if not hasattr(model, "merge_and_unload"):
        return model, gathered_state(model)
    state = full_state_dict(model)
    return (plain_lora_copy(model, state) if distributed.is_main() else model), None


def merge_if_lora(model: Any) -> Any:
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


# ------------------------------------------------------------------------------ the stage
