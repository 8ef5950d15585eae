"""The `sft` stage (TRL's SFTTrainer, full or LoRA) and `rlhfx merge-lora`.

What every Trainer stage shares (options, arguments, resume, progress, saving) is in
`rlhfx.hf_training`.
"""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import Field

from rlhfx import (
    Stage,
    StageContext,
    UserError,
    distributed,
    hookimpl,
)
from rlhfx.hf_training import (
    DONE,
    TrainingOptions,
    drop_checkpoints,
    finished_model,
    hold_out,
    make_progress_callback,
    merge_if_lora,
    prepare_resume,
    quiet_libraries,
    quiet_trainer,
    run_trainer,
    save_atomically,
    trained_model,
    trainer_arguments,
    trainer_class,
)


class SFTOptions(TrainingOptions):
    #: Column of `data` that holds the training text.
    text_field: str = "text"
    #: Hold out the last N% of rows to report an eval loss (0: none).
    eval_split_percentage: float = Field(default=0.0, ge=0, lt=100)
    #: Also keep the LoRA adapter on its own (`adapter` output) besides the merged model.
    save_adapter: bool = True


class SFTStage(Stage):
    """Supervised fine-tuning of a causal LM on dialogues (TRL SFTTrainer; full or LoRA)."""

    name = "sft"
    Config = SFTOptions
    config: SFTOptions
    outputs = ("model", "adapter")

    def run(self, ctx: StageContext) -> dict[str, str]:
        done = finished_model(ctx)
        if done is not None:
            ctx.log.info("sft: model already saved in %s (an earlier attempt)", done)
            return self._outputs(ctx)
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from rlhfx.models import load_causal_lm, load_tokenizer
        from rlhfx.plugins.data.sets import read_column, read_texts

        c = self.config
        quiet_libraries()
        resume = prepare_resume(ctx)
        source = ctx.resolve(c.data)
        texts = (read_texts(source, c.data_split, c.skip_bad_rows) if c.text_field == "text"
                 else read_column(source, c.text_field, c.data_split, c.skip_bad_rows))
        if c.max_rows:
            texts = texts[: c.max_rows]
        train, held = hold_out(texts, c.eval_split_percentage)
        model_source = ctx.resolve(c.model)
        tokenizer = load_tokenizer(model_source)
        model = load_causal_lm(model_source, dtype=c.dtype)
        args = trainer_arguments(
            SFTConfig, c, ctx,
            dataset_text_field="text",
            packing=False,
            eval_strategy="no",
        )
        ctx.log.info("sft: %d training texts, %d held out; %s", len(train), len(held),
                     "LoRA" if c.method == "lora" else "full fine-tuning")
        with ctx.progress() as progress:
            trainer = trainer_class(SFTTrainer, ctx)(
                model=model,
                args=args,
                train_dataset=Dataset.from_dict({"text": train}),
                eval_dataset=Dataset.from_dict({"text": held}) if held else None,
                processing_class=tokenizer,
                peft_config=c.lora.peft_config("CAUSAL_LM") if c.method == "lora" else None,
                callbacks=[make_progress_callback(ctx, progress, "SFT", resume)],
            )
            quiet_trainer(trainer)
            run_trainer(trainer, ctx, resume)
            if held:
                metrics = trainer.evaluate()  # logged to metrics.jsonl by the callback
                ctx.log.info("sft: eval loss %.4f on %d held-out texts",
                             metrics.get("eval_loss", float("nan")), len(held))
        trained, full = trained_model(trainer.model)  # under fsdp every process takes part
        if ctx.is_main:
            if c.method == "lora" and c.save_adapter:
                adapter = ctx.stage_dir / "adapter"
                save_atomically(trained, tokenizer, adapter, {"base": model_source})
            save_atomically(merge_if_lora(trained), tokenizer, ctx.stage_dir / "model",
                            {"base": model_source, "method": c.method}, state_dict=full)
            drop_checkpoints(ctx, c)
        distributed.barrier()  # the other processes report outputs only once main has saved
        return self._outputs(ctx)

    def _outputs(self, ctx: StageContext) -> dict[str, str]:
        out = {"model": str(ctx.stage_dir / "model")}
        if (ctx.stage_dir / "adapter" / DONE).exists():
            out["adapter"] = str(ctx.stage_dir / "adapter")
        return out


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
