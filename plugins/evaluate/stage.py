"""The `evaluate` stage: what `rlhfx eval` does, as a step of a recipe.

Typical use: judge the policy before and after alignment with a reward model it was not
trained against (`models = [policy, "@align.model"]`, `judge = { name = "reward_model",
model = "@judge.model" }`). The first model is the baseline: each later one is compared with
it (its win rate over the baseline, with a paired-bootstrap interval and a sign test). The stage
writes `eval.json` and `eval.html` into its directory, as the command does, and logs the
verdict as metrics.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from rlhfx import (
    ComponentConfig,
    DataSource,
    ModelSource,
    RewardSourceRef,
    Stage,
    StageContext,
    UserError,
)
from rlhfx.rollouts import RolloutSettings


class EvaluateConfig(ComponentConfig):
    #: The models to answer the prompts: the first is the baseline, each later one is compared
    #: with it (`["<policy>", "@align.model"]`: the aligned policy against its start).
    models: list[ModelSource] = Field(min_length=1)
    #: Names for the models in tables and metrics (as many as `models`); unset: `model_1`, ...
    labels: list[str] | None = None
    #: The reward source that scores every answer (any `reward` table).
    judge: RewardSourceRef
    #: Prompts to answer: `@data.eval_prompts`, a file, a hub dataset or `builtin:...`.
    prompts: DataSource
    #: Use only the first N prompts.
    max_prompts: int | None = Field(default=None, ge=1)
    skip_bad_rows: bool = False
    max_new_tokens: int = Field(default=64, ge=1)
    #: 0 = greedy.
    temperature: float = Field(default=0.1, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    batch_size: int = Field(default=8, ge=1)
    #: Seeds sampling and the bootstrap; unset: the stage's seed from `[run] seed`.
    seed: int | None = None
    #: Wrap each prompt in the model's chat template (for plain-text prompts; the data
    #: stage's `template = "chat"` prompts are already wrapped).
    apply_chat_template: bool = False
    #: Bootstrap resamples and the interval's level.
    resamples: int = Field(default=2000, ge=100)
    level: float = Field(default=0.95, gt=0, lt=1)
    #: Which engine answers: `{ engine = "hf" }` (rlhfx's decode loop, the default; its
    #: `dtype = "auto"` samples in bf16 where the hardware has it natively) or
    #: `{ engine = "vllm", ... }` (the align stage's table; one engine serves every model of
    #: the same architecture, given each one's weights in turn).
    rollouts: RolloutSettings = Field(default_factory=RolloutSettings)

    @model_validator(mode="after")
    def _labels_match(self) -> EvaluateConfig:
        if self.labels is not None:
            if len(self.labels) != len(self.models):
                raise ValueError(
                    f"labels: {len(self.labels)} names for {len(self.models)} models"
                )
            if len(set(self.labels)) != len(self.labels) or not all(
                label.strip() for label in self.labels
            ):
                raise ValueError("labels: give each model a distinct, non-empty name")
        return self

    def model_labels(self) -> list[str]:
        return list(self.labels) if self.labels else [
            f"model_{i + 1}" for i in range(len(self.models))
        ]


def verdict_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth a metric: each model's mean reward and discards, and each
    comparison's win rate, interval, wins, losses, ties and sign-test p."""
    metrics: dict[str, Any] = {"prompts": result["num_prompts"]}
    for m in result["models"]:
        if m["mean_reward"] is not None:
            metrics[f"{m['label']}/mean_reward"] = m["mean_reward"]
        metrics[f"{m['label']}/discarded"] = m["discarded"]
        if m.get("finished_rate") is not None:
            metrics[f"{m['label']}/finished_rate"] = m["finished_rate"]
    for c in result["comparisons"]:
        key = f"{c['a']}_over_{c['b']}"
        for name in ("win_rate", "ci_low", "ci_high", "wins", "losses", "ties", "sign_test_p",
                     "lc_win_rate", "lc_ci_low", "lc_ci_high"):
            if c.get(name) is not None:
                metrics[f"{key}/{name}"] = c[name]
    return metrics


class EvaluateStage(Stage[EvaluateConfig]):
    """Answer a prompt set with each model and judge the answers (win rate over the first)."""

    name = "evaluate"
    outputs = ("eval",)

    def run(self, ctx: StageContext) -> dict[str, str]:
        import os

        from rlhfx.data.prompts import read_prompt_set

        from . import write_result
        from .run import EvalSettings, evaluate
        from .stats import length_controlled_phrase

        c = self.config
        out = {"eval": str(ctx.stage_dir / "eval.json")}
        prompts = read_prompt_set(ctx.resolve(c.prompts), c.skip_bad_rows)
        if c.max_prompts is not None:
            prompts = prompts[: c.max_prompts]
        if not prompts:
            raise UserError(f"{ctx.recipe_file}: stages.{ctx.stage_id}.prompts: no prompts")
        device = ctx.device
        if device == "cuda":
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        settings = EvalSettings(
            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
            batch_size=c.batch_size, seed=c.seed if c.seed is not None else ctx.seed,
            apply_chat_template=c.apply_chat_template, device=device,
            resamples=c.resamples, level=c.level, rollouts=c.rollouts,
            work_dir=str(ctx.stage_dir / "engine"),
        )
        labels = c.model_labels()
        ctx.log.info("evaluate: %d prompts, %d models, judge %s", len(prompts), len(c.models),
                     c.judge.name)
        result = evaluate([ctx.resolve(m) for m in c.models], labels, prompts, c.judge.build(),
                          settings, against_first=True)
        if result is None:  # another process: the main one writes the files
            return out
        # The judge as the recipe wrote it, with `@stage.output` sources replaced by paths.
        options = c.judge.config.model_dump(mode="json")
        judge_table = {"name": c.judge.name,
                       **{k: options.get(k, v) for k, v in c.judge.options.items()}}
        write_result(result, c.prompts, judge_table, settings, ctx.stage_dir)
        ctx.log_metrics(0, verdict_metrics(result))
        for m in result["models"]:
            mean = "—" if m["mean_reward"] is None else f"{m['mean_reward']:.4g}"
            ctx.log.info("evaluate: %s: mean reward %s (%d discarded; %d of %d answers ended "
                         "by themselves, not at max_new_tokens)", m["label"], mean,
                         m["discarded"], m["finished"], len(prompts))
        for cmp in result["comparisons"]:
            ctx.log.info(
                "evaluate: %s over %s: win rate %.3f (%d%% interval %.3f-%.3f; %d wins, "
                "%d losses, %d ties; sign test p = %.3g)", cmp["a"], cmp["b"], cmp["win_rate"],
                round(100 * cmp["ci_level"]), cmp["ci_low"], cmp["ci_high"], cmp["wins"],
                cmp["losses"], cmp["ties"], cmp["sign_test_p"],
            )
            if lc := length_controlled_phrase(cmp):
                ctx.log.info("evaluate: %s over %s: %s", cmp["a"], cmp["b"], lc)
        return out
