"""The calculator demonstration's two stages.

`calculator_data` writes arithmetic questions on 3-4 digit numbers (training and held-out sets
that share no question) and demonstrations of the tool-call format for SFT: the question as
the calculator environment shows it, the model's call, the tool's result and the final answer,
each turn rendered through the policy's chat template exactly as an episode renders it, as
prompt-completion rows (one per model turn) so that SFT trains on the model's turns only.

`tool_eval` measures held-out accuracy of several models, each with or without the
environment's tools, and compares each with the one before it (wins, losses, sign test).
"""

from __future__ import annotations

import json
import random
from typing import Any

from pydantic import Field, field_validator

from rlhfx import (
    CleanerRef,
    ComponentConfig,
    DataSource,
    EnvironmentRef,
    ModelSource,
    RewardSourceRef,
    Stage,
    StageContext,
    UserError,
)
from rlhfx.files import atomic_write_json, write_jsonl
from rlhfx.plugins.environments.calculator import calculator
from rlhfx.tools import format_tool_call

OPERATORS = ("+", "-", "*")


def questions(count: int, rng: random.Random, taken: set[str]) -> list[dict[str, str]]:
    """`count` new questions `a op b` (a, b of 3-4 digits), none of them in `taken`."""
    out: list[dict[str, str]] = []
    while len(out) < count:
        a, b = rng.randint(100, 9999), rng.randint(100, 9999)
        expression = f"{a} {rng.choice(OPERATORS)} {b}"
        if expression in taken:
            continue
        taken.add(expression)
        out.append({"prompt": f"What is {expression}?", "expression": expression,
                    "answer": calculator(expression)})
    return out


def demonstration(tokenizer: Any, row: dict[str, str]) -> list[dict[str, str]]:
    """One worked episode as SFT rows, one per model turn: the call after the opening (with
    the tool), then the final answer after the tool's result. The prompt of each row is
    context only, so the tool's tokens are never a training target, as in the RL loop."""
    from rlhfx.episode_text import TurnRenderer

    renderer = TurnRenderer(tokenizer)
    end = tokenizer.eos_token or ""
    opening = renderer.opening(row["prompt"], [calculator])
    call = format_tool_call("calculator", {"expression": row["expression"]}) + end
    call_ids = tokenizer(call, add_special_tokens=False)["input_ids"]
    result = renderer.message_text("tool", row["answer"], call_ids)
    final = f"{row['expression']} = {row['answer']}." + end
    return [{"prompt": opening, "completion": call},
            {"prompt": opening + call + result, "completion": final}]


class CalculatorDataConfig(ComponentConfig):
    #: The policy whose chat template renders the demonstrations.
    tokenizer: ModelSource
    train_questions: int = Field(default=400, ge=1)
    eval_questions: int = Field(default=100, ge=1)
    #: Demonstrations for SFT, on questions of their own (none is a training or held-out one).
    demonstrations: int = Field(default=200, ge=1)
    seed: int = 0


class CalculatorData(Stage[CalculatorDataConfig]):
    """Arithmetic questions (train / held-out, disjoint) and tool-call demonstrations."""

    name = "calculator_data"
    outputs = ("train", "eval", "demos")

    def run(self, ctx: StageContext) -> dict[str, str]:
        from rlhfx.models import load_tokenizer

        c = self.config
        paths = {name: ctx.stage_dir / f"{name}.jsonl" for name in self.outputs}
        if ctx.is_main:
            rng, taken = random.Random(c.seed), set[str]()
            held_out = questions(c.eval_questions, rng, taken)
            train = questions(c.train_questions, rng, taken)
            demos = questions(c.demonstrations, rng, taken)
            tokenizer = load_tokenizer(ctx.resolve(c.tokenizer))
            write_jsonl(paths["eval"], held_out)
            write_jsonl(paths["train"], train)
            write_jsonl(paths["demos"], (part for row in demos
                                         for part in demonstration(tokenizer, row)))
            ctx.log.info("calculator_data: %d training, %d held-out questions, %d "
                         "demonstrations", len(train), len(held_out), len(demos))
        return {name: str(path) for name, path in paths.items()}


class ToolEvalRun(ComponentConfig):
    label: str
    model: ModelSource
    #: Answer through the environment (with its tools) or with a plain chat reply.
    tools: bool = True


class ToolEvalConfig(ComponentConfig):
    #: The models to measure, in order; each is compared with the one before it.
    runs: list[ToolEvalRun] = Field(min_length=1)
    #: Held-out rows: a plain question in `prompt`, the reference in `answer`.
    prompts: DataSource
    reward: RewardSourceRef
    environment: EnvironmentRef
    cleaners: list[CleanerRef] = Field(default_factory=lambda: [CleanerRef(name="strip")])
    max_new_tokens: int = Field(default=48, ge=1)
    #: Low temperature with fixed noise (as the alignment loop's evals).
    temperature: float = Field(default=0.2, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_prompts: int | None = Field(default=None, ge=1)

    @field_validator("runs")
    @classmethod
    def _labels(cls, runs: list[ToolEvalRun]) -> list[ToolEvalRun]:
        labels = [r.label for r in runs]
        if len(set(labels)) < len(labels):
            raise ValueError(f"labels repeat: {labels}")
        return runs


class ToolEval(Stage[ToolEvalConfig]):
    """Held-out accuracy of models with and without tools, compared pairwise."""

    name = "tool_eval"
    outputs = ("results",)

    def run(self, ctx: StageContext) -> dict[str, str]:
        from rlhfx.data.prompts import read_prompt_rows
        from rlhfx.episode_text import TurnRenderer
        from rlhfx.evaluation import evaluate_policy
        from rlhfx.models import load_causal_lm, load_tokenizer
        from rlhfx.plugins.evaluate.stats import sign_test_p
        from rlhfx.rollouts import SamplingSettings

        c = self.config
        rows = read_prompt_rows(ctx.resolve(c.prompts))[: c.max_prompts]
        if any("answer" not in r for r in rows):
            raise UserError(f"{ctx.recipe_file}: stages.{ctx.stage_id}.prompts: every row "
                            "needs an `answer`")
        questions_ = [r["prompt"] for r in rows]
        fields = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
        reward, cleaners = c.reward.build(), [ref.build() for ref in c.cleaners]
        environment = c.environment.build()
        environment.config.chat_template = True
        key = f"{ctx.recipe_file}: stages.{ctx.stage_id}"
        sampling = SamplingSettings(max_new_tokens=c.max_new_tokens, temperature=c.temperature)
        results: dict[str, Any] = {"questions": len(rows), "runs": [], "comparisons": []}
        correct: dict[str, list[float]] = {}
        for run in c.runs:
            source = ctx.resolve(run.model)
            tokenizer = load_tokenizer(source)
            model = load_causal_lm(source).to(ctx.device)
            answers = ctx.stage_dir / f"{run.label}.jsonl"
            prompts = (questions_ if run.tools else
                       [TurnRenderer(tokenizer).opening(q) for q in questions_])
            figures = evaluate_policy(
                model, tokenizer, prompts, sampling, cleaners=cleaners, reward=reward,
                seed=ctx.seed, out_file=answers, prefix="", batch_size=c.batch_size,
                stop_strings=[], where=f"{key}.reward", fields=fields,
                environment=environment if run.tools else None,
                environment_key=f"{key}.environment",
            )
            del model
            correct[run.label] = [float(json.loads(line)["reward"] or 0.0) for line in
                                  answers.read_text(encoding="utf-8").splitlines()]
            results["runs"].append({"label": run.label, "model": source, "tools": run.tools,
                                    "accuracy": figures["reward_mean"]})
            ctx.log.info("tool_eval: %s (%s tools): accuracy %.3f on %d questions", run.label,
                         "with" if run.tools else "without", figures["reward_mean"] or 0.0,
                         len(rows))
        for before, after in zip(c.runs, c.runs[1:], strict=False):
            a, b = correct[after.label], correct[before.label]
            wins = sum(x > y for x, y in zip(a, b, strict=True))
            losses = sum(x < y for x, y in zip(a, b, strict=True))
            results["comparisons"].append({
                "after": after.label, "before": before.label, "wins": wins, "losses": losses,
                "sign_test_p": sign_test_p(wins, losses)})
        path = ctx.stage_dir / "results.json"
        if ctx.is_main:
            atomic_write_json(path, results)
        return {"results": str(path)}
