"""The `data` stage: prepares the SFT, reward-model, prompt and eval-prompt sets of a run."""

from __future__ import annotations

from rlhfx import Stage, StageContext, distributed

from .config import DataConfig


class DataStage(Stage[DataConfig]):
    """Preference data -> SFT, reward-model, prompt and held-out eval-prompt and pair sets."""

    name = "data"
    #: `rm_judge` only with `judge_fraction` (pairs for an independent judge reward model).
    outputs = ("sft", "rm", "prompts", "eval_prompts", "eval_rm", "rm_judge")

    def run(self, ctx: StageContext) -> dict[str, str]:
        # Cheap to redo, so an interrupted data stage simply runs again; files are written
        # atomically, so a kill never leaves a half-written set behind.
        from rlhfx.models import load_tokenizer

        from .prepare import JUDGE_OUTPUT, OUTPUTS, prepare

        c = self.config
        if not ctx.is_main:  # under torchrun one process writes the sets, the others wait
            distributed.barrier()
            names = OUTPUTS + ((JUDGE_OUTPUT,) if c.judge_fraction is not None else ())
            return {name: str(ctx.stage_dir / f"{name}.jsonl") for name in names}
        tokenizer = load_tokenizer(ctx.resolve(c.tokenizer)) if c.tokenizer else None
        with ctx.progress() as progress:
            paths, report = prepare(
                c,
                ctx.stage_dir,
                ctx.seed,
                plugins=ctx.plugins,
                tokenizer=tokenizer,
                source=ctx.resolve(c.source),
                eval_source=ctx.resolve(c.eval_source) if c.eval_source else None,
                progress=progress,
                prompts_source=ctx.resolve(c.prompts_source) if c.prompts_source else None,
                eval_prompts_source=(
                    ctx.resolve(c.eval_prompts_source) if c.eval_prompts_source else None
                ),
                where=f"{ctx.recipe_file}: stages.{ctx.stage_id}",
            )
        for line in report.lines():
            ctx.log.info("data: %s", line)
        metrics = {f"written/{k}": v for k, v in report.written.items()}
        metrics.update({"rows": report.train.rows, "kept": report.train.kept})
        metrics.update({f"dropped/{k}": v for k, v in report.train.dropped.items()})
        ctx.log_metrics(0, metrics)
        distributed.barrier()
        return paths
