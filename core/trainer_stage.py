"""One skeleton for the stages that train with a (TRL) Trainer: SFT, reward model, DPO.

The skeleton is what must not drift between them: skip a stage whose model an earlier attempt
saved, prepare the resume before anything is logged (a damaged checkpoint set aside, the
metrics cut back to the one resumed), the progress bar and metrics callback, the run, the
held-out results, and the outputs written once, on the main process, after the sharded weights
are gathered. A stage says only how it reads its data and builds its trainer (`prepare`) and
what it measures afterwards (`finish`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from rlhfx import distributed
from rlhfx.components import Stage
from rlhfx.context import StageContext
from rlhfx.errors import UserError
from rlhfx.files import atomic_write_json
from rlhfx.hf_training import (
    DONE,
    TrainingOptions,
    drop_checkpoints,
    finished_model,
    make_progress_callback,
    merge_if_lora,
    prepare_resume,
    quiet_libraries,
    quiet_trainer,
    run_trainer,
    save_atomically,
    trained_model,
    trainer_class,
)

#: Held-out results of a stage that measures any (`Outcome.results`), beside its outputs.
EVAL_FILE = "eval.json"


@dataclass
class TrainerJob:
    """What `prepare` built: the Trainer class and its arguments (all but `callbacks`), and
    the tokenizer and model source the outputs are saved with. Stages add their own fields."""

    trainer_cls: Any
    trainer_kwargs: dict[str, Any]
    tokenizer: Any
    model_source: str


@dataclass
class Outcome:
    """What `finish` hands back to be saved."""

    #: the trained model (a peft model is saved as the adapter, then merged)
    model: Any
    #: written to eval.json when not None
    results: dict[str, Any] | None = None
    #: recorded in the saved model's info file besides `base` and `method`
    info: dict[str, Any] = field(default_factory=dict)
    #: file name -> JSON written beside the saved model
    extra_files: dict[str, Any] | None = None


JobT = TypeVar("JobT", bound=TrainerJob)
OptionsT = TypeVar("OptionsT", bound=TrainingOptions)


class TrainerStage(Stage[OptionsT], Generic[OptionsT, JobT]):
    """A stage that trains one model with a Trainer and saves it (merged) as `model`; with
    `adapter` among its outputs, a LoRA adapter on its own too (`keeps_adapter`)."""

    #: What the progress bar calls the training ("SFT", "DPO", ...).
    progress_label: ClassVar[str] = ""

    def prepare(self, ctx: StageContext, resume: Any) -> JobT:
        """Read the data, load the model and build the Trainer's arguments. `resume` is where
        training resumes (`rlhfx.trainer_resume.Resume`; its `checkpoint` is None on a fresh
        start)."""
        raise NotImplementedError

    def finish(self, ctx: StageContext, trainer: Any, job: JobT) -> Outcome:
        """After training (every process): measure what the stage measures, say what to save."""
        return Outcome(model=trainer.model)

    def keeps_adapter(self) -> bool:
        """Whether to save the LoRA adapter on its own as the `adapter` output."""
        return False

    def run(self, ctx: StageContext) -> dict[str, str]:
        done = finished_model(ctx)
        if done is not None:
            ctx.log.info("%s: model already saved in %s (an earlier attempt)", self.name, done)
            return self.output_paths(ctx)
        quiet_libraries()
        resume = prepare_resume(ctx)
        job = self.prepare(ctx, resume)
        with ctx.progress() as progress:
            callback = make_progress_callback(ctx, progress, self.progress_label, resume)
            try:
                trainer = trainer_class(job.trainer_cls, ctx)(**job.trainer_kwargs,
                                                              callbacks=[callback])
            except ValueError as exc:  # TRL's checks of option combinations (loss types...)
                raise UserError(f"{ctx.recipe_file}: stages.{ctx.stage_id}: "
                                f"{' '.join(str(exc).split())}") from None
            quiet_trainer(trainer)
            run_trainer(trainer, ctx, resume)
            outcome = self.finish(ctx, trainer, job)
        self._save(ctx, job, outcome)
        distributed.barrier()  # the other processes report outputs only once main has saved
        return self.output_paths(ctx)

    def _save(self, ctx: StageContext, job: JobT, outcome: Outcome) -> None:
        # Under fsdp every process takes part; a sharded LoRA model comes back on the main
        # process as a plain copy that can save its adapter and merge.
        model, full = trained_model(outcome.model)
        if not ctx.is_main:
            return
        if outcome.results is not None:
            atomic_write_json(ctx.stage_dir / EVAL_FILE, outcome.results)
        if self.keeps_adapter():
            save_atomically(model, job.tokenizer, ctx.stage_dir / "adapter",
                            {"base": job.model_source})
        info = {"base": job.model_source, "method": self.config.method, **outcome.info}
        save_atomically(merge_if_lora(model), job.tokenizer, ctx.stage_dir / "model",
                        info, extra=outcome.extra_files, state_dict=full)
        drop_checkpoints(ctx, self.config)

    def output_paths(self, ctx: StageContext) -> dict[str, str]:
        out = {"model": str(ctx.stage_dir / "model")}
        if "adapter" in self.outputs and (ctx.stage_dir / "adapter" / DONE).exists():
            out["adapter"] = str(ctx.stage_dir / "adapter")
        return out
