"""The `sft` stage (TRL's SFTTrainer, full or LoRA) and `rlhfx merge-lora`.

What every Trainer stage shares (options, arguments, resume, progress, saving) is in
`rlhfx.trainer_stage` and `rlhfx.hf_training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import Field

from rlhfx import StageContext, UserError, hookimpl
from rlhfx.hf_training import (
    TrainingOptions,
    hold_out,
    save_atomically,
    trainer_arguments,
)
from rlhfx.trainer_stage import Outcome, TrainerJob, TrainerStage


class SFTOptions(TrainingOptions):
    #: Column of `data` that holds the training text. Rows with `prompt` and `completion`
    #: strings instead (TRL's prompt-completion layout) train on the completion only.
    text_field: str = "text"
    #: Hold out the last N% of rows to report an eval loss (0: none).
    eval_split_percentage: float = Field(default=0.0, ge=0, lt=100)
    #: Also keep the LoRA adapter on its own (`adapter` output) besides the merged model.
    save_adapter: bool = True


@dataclass
class SFTJob(TrainerJob):
    held: list[Any]


class SFTStage(TrainerStage[SFTOptions, SFTJob]):
    """Supervised fine-tuning of a causal LM on dialogues (TRL SFTTrainer; full or LoRA)."""

    name = "sft"
    outputs = ("model", "adapter")
    progress_label = "SFT"

    def prepare(self, ctx: StageContext, resume: Any) -> SFTJob:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from rlhfx.data.sets import (
            has_completions,
            read_column,
            read_prompt_completions,
            read_texts,
        )
        from rlhfx.models import load_causal_lm, load_tokenizer

        c = self.config
        source = ctx.resolve(c.data)
        rows: list[Any]
        completions = c.text_field == "text" and has_completions(source, c.data_split)
        if completions:
            rows = read_prompt_completions(source, c.data_split, c.skip_bad_rows)
        elif c.text_field == "text":
            rows = read_texts(source, c.data_split, c.skip_bad_rows)
        else:
            rows = read_column(source, c.text_field, c.data_split, c.skip_bad_rows)
        if c.max_rows:
            rows = rows[: c.max_rows]
        train, held = hold_out(rows, c.eval_split_percentage)
        model_source = ctx.resolve(c.model)
        tokenizer = load_tokenizer(model_source)
        model = load_causal_lm(model_source, dtype=c.dtype)
        args = trainer_arguments(
            SFTConfig, c, ctx,
            dataset_text_field="text",
            packing=False,
            eval_strategy="no",
        )
        ctx.log.info("sft: %d training %s, %d held out; %s", len(train),
                     "prompt-completions (loss on completions)" if completions else "texts",
                     len(held), "LoRA" if c.method == "lora" else "full fine-tuning")

        def dataset(part: list[Any]) -> Any:
            if completions:  # TRL masks the prompt out of the loss in this layout
                return Dataset.from_dict({"prompt": [p for p, _ in part],
                                          "completion": [x for _, x in part]})
            return Dataset.from_dict({"text": part})

        return SFTJob(SFTTrainer, dict(
            model=model,
            args=args,
            train_dataset=dataset(train),
            eval_dataset=dataset(held) if held else None,
            processing_class=tokenizer,
            peft_config=c.lora.peft_config("CAUSAL_LM") if c.method == "lora" else None,
        ), tokenizer, model_source, held)

    def finish(self, ctx: StageContext, trainer: Any, job: SFTJob) -> Outcome:
        if job.held:
            metrics = trainer.evaluate()  # logged to metrics.jsonl by the callback
            ctx.log.info("sft: eval loss %.4f on %d held-out texts",
                         metrics.get("eval_loss", float("nan")), len(job.held))
        return Outcome(model=trainer.model)

    def keeps_adapter(self) -> bool:
        return self.config.method == "lora" and self.config.save_adapter


# ------------------------------------------------------------------------------ merge-lora


def merge_lora(adapter: str, out: str, base: str | None = None, dtype: str = "float32") -> Path:
    """Merge a peft LoRA adapter into its base model and save a full HF model (+ tokenizer)."""
    from peft import PeftConfig, PeftModel

    from rlhfx.models import load_causal_lm, load_sequence_classifier, load_tokenizer

    adapter_path = Path(adapter).expanduser()
    if not (adapter_path / "adapter_config.json").exists():
        raise UserError(f"{adapter_path}: no adapter_config.json (not a peft adapter directory)")
    peft_config = PeftConfig.from_pretrained(str(adapter_path))
    base = base or peft_config.base_model_name_or_path
    if not base:
        raise UserError(f"{adapter_path}: the adapter does not name its base model; pass --base")
    task = str(getattr(peft_config, "task_type", "") or "")
    if task.endswith("SEQ_CLS"):
        model = load_sequence_classifier(base, dtype=dtype, num_labels=1)
    else:
        model = load_causal_lm(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    tok_source = str(adapter_path) if (adapter_path / "tokenizer_config.json").exists() else base
    tokenizer = load_tokenizer(tok_source)
    if task.endswith("SEQ_CLS") and merged.config.pad_token_id is None:
        merged.config.pad_token_id = tokenizer.pad_token_id
    return save_atomically(merged, tokenizer, Path(out).expanduser(),
                           {"base": base, "adapter": str(adapter_path)})


@hookimpl
def rlhfx_register_stages(register):
    register(SFTStage)


@hookimpl
def rlhfx_register_commands(cli):
    from rlhfx.cli import user_errors

    @cli.command("merge-lora")
    @click.argument("adapter", type=click.Path(file_okay=False))
    @click.option("--out", "-o", required=True, help="Directory for the merged model.")
    @click.option("--base", default=None,
                  help="Base model (default: the one recorded in the adapter).")
    @click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
                  default="float32", show_default=True)
    @user_errors
    def merge_lora_cmd(adapter: str, out: str, base: str | None, dtype: str) -> None:
        """Merge a LoRA ADAPTER directory into its base model; save a full model in --out."""
        path = merge_lora(adapter, out, base, dtype)
        click.echo(f"merged model: {path}")
