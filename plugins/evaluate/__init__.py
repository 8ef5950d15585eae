"""`rlhfx eval`: answer a prompt set with one or more models, judge the answers with any reward
source, and with two or more models say how often one beats another (win rate, a bootstrap
interval, an exact sign test). Writes `eval.json` and a side-by-side `eval.html`.

Only click is imported here: every `rlhfx` command loads this module at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rlhfx import UserError, hookimpl

DEFAULT_PROMPTS = "builtin:tiny-eval-prompts"


def run_eval(
    models: list[str], prompts_source: str, judge_table: dict[str, Any], output_dir: Path,
    settings: Any, max_prompts: int | None = None,
) -> dict[str, Any] | None:
    """Evaluate and write the files; returns the summary on the main process, else None."""
    from rlhfx import distributed
    from rlhfx.data.prompts import read_prompt_rows, read_prompt_set
    from rlhfx.loading import loading
    from rlhfx.runner import pick_device

    from .run import evaluate
    from .sources import build_judge, labels_for, resolve_model, resolve_prompts

    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output-dir {output_dir}: exists and is not a directory")
    sources = [resolve_model(m) for m in models]
    with loading("the judge"):
        judge = build_judge(judge_table, "judge")
    if settings.environment is not None:
        rows = read_prompt_rows(resolve_prompts(prompts_source))[:max_prompts]
        prompts = [r["prompt"] for r in rows]
        settings.fields = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    else:
        prompts = read_prompt_set(resolve_prompts(prompts_source))
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    settings.device = pick_device(settings.device, "--device")
    distributed.init()
    result = evaluate(sources, labels_for(models), prompts, judge, settings)
    if result is None:
        return None
    result = write_result(result, prompts_source, judge_table, settings, output_dir)
    return {k: v for k, v in result.items() if k != "rows"}


def write_result(
    result: dict[str, Any], prompts_source: str, judge_table: dict[str, Any], settings: Any,
    output_dir: Path,
) -> dict[str, Any]:
    """`eval.json` and `eval.html` in `output_dir` (shared by the command and the stage)."""
    from rlhfx.files import atomic_write_text

    from .page import render

    result = {
        "prompts": prompts_source,
        "judge": judge_table,
        "sampling": {"max_new_tokens": settings.max_new_tokens,
                     "temperature": settings.temperature, "top_p": settings.top_p,
                     "seed": settings.seed, "apply_chat_template": settings.apply_chat_template},
        "statistics": {"interval": "paired bootstrap over prompts, percentile",
                       "resamples": settings.resamples, "level": settings.level,
                       "ties": "half a win", "discarded": "loses to any scored answer"},
        **result,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "eval.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(output_dir / "eval.html", render(result))
    return result


def _print_summary(summary: dict[str, Any], output_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from .stats import length_controlled_phrase

    console = Console()
    table = Table(title=f"{summary['num_prompts']} prompts, judge {summary['judge']['name']}")
    for col in ("model", "mean reward", "scored", "discarded", "ended by itself"):
        table.add_column(col)
    for m in summary["models"]:
        mean = "—" if m["mean_reward"] is None else f"{m['mean_reward']:.4g}"
        ended = "—" if m.get("finished_rate") is None else f"{m['finished_rate']:.2f}"
        table.add_row(m["label"], mean, str(m["scored"]), str(m["discarded"]), ended)
    console.print(table)
    for c in summary["comparisons"]:
        console.print(
            f"{c['a']} over {c['b']}: win rate {c['win_rate']:.3f} "
            f"({round(100 * c['ci_level'])}% interval {c['ci_low']:.3f}–{c['ci_high']:.3f}; "
            f"{c['wins']} wins, {c['losses']} losses, {c['ties']} ties; "
            f"sign test p = {c['sign_test_p']:.3g})",
            highlight=False, soft_wrap=True,
        )
        if lc := length_controlled_phrase(c):
            console.print(f"  {lc}", highlight=False, soft_wrap=True)
    console.print(f"written: {output_dir / 'eval.json'}, {output_dir / 'eval.html'}",
                  highlight=False, soft_wrap=True)


@hookimpl
def rlhfx_register_commands(cli):
    from rlhfx.cli import user_errors

    @cli.command("eval")
    @click.argument("models", nargs=-1, required=True)
    @click.option("--prompts", "-p", default=DEFAULT_PROMPTS, show_default=True,
                  help="Prompt set: a file (.txt one a line, JSONL, ...), a hub dataset, builtin:.")
    @click.option("--judge", "-j", default=None, metavar="TOML",
                  help="Reward source as judge: a name, or an inline table such as "
                       "'{ name = \"length\", unit = \"chars\" }'.")
    @click.option("--judge-from", default=None, metavar="RUN_OR_RECIPE",
                  help="Take the judge from a run directory or recipe (its first stage's "
                       "`reward`; `@stage.output` resolves to that run's outputs).")
    @click.option("--judge-key", default=None, metavar="KEY",
                  help="Dotted key of the reward table with --judge-from "
                       "(e.g. stages.align.reward).")
    @click.option("--max-prompts", type=click.IntRange(min=1), default=None,
                  help="Use only the first N prompts.")
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
    @click.option("--temperature", type=click.FloatRange(min=0), default=0.1, show_default=True,
                  help="0 = greedy.")
    @click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0,
                  show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="Seeds sampling and the bootstrap.")
    @click.option("--chat-template/--no-chat-template", default=False, show_default=True,
                  help="Wrap each prompt in the model's chat template (plain-text prompts).")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                  show_default=True)
    @click.option("--engine", default="hf", show_default=True, metavar="NAME_OR_TOML",
                  help="The rollout engine that answers: hf (transformers' generate), vllm "
                       "(rlhfx[vllm]), any installed one, or an inline table with its options "
                       "such as '{ engine = \"vllm\", dtype = \"float32\" }'.")
    @click.option("--output-dir", "-o", default="eval", show_default=True,
                  help="Where eval.json and eval.html go.")
    @click.option("--environment", "environment_table", default=None, metavar="TOML",
                  help="Play each prompt as an episode: an environment name or inline table, "
                       "e.g. '{ name = \"calculator\", chat_template = true }'.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @user_errors
    def eval_cmd(models: tuple[str, ...], prompts: str, judge: str | None,
                 judge_from: str | None, judge_key: str | None, max_prompts: int | None,
                 max_new_tokens: int, temperature: float, top_p: float, batch_size: int,
                 seed: int, chat_template: bool, device: str, engine: str, output_dir: str,
                 environment_table: str | None, as_json: bool) -> None:
        """Answer PROMPTS with each MODEL and judge the answers; two models: who wins.

        MODEL is a run directory (its aligned model), a stage directory, a model directory or
        file, a hub id, pkg:... or builtin:tiny-gpt-neo.
        """
        from rlhfx.loading import silence_library_progress
        from rlhfx.rollouts import RolloutSettings, check_engine

        from .run import EvalSettings
        from .sources import build_environment, parse_inline_engine, parse_inline_judge
        from .sources import judge_from as judge_from_recipe

        silence_library_progress()  # the judge's model too; ours shows while models load
        if (judge is None) == (judge_from is None):
            raise UserError("give exactly one of --judge TOML or --judge-from RUN_OR_RECIPE")
        if judge_key and not judge_from:
            raise UserError("--judge-key goes with --judge-from")
        table = (parse_inline_judge(judge) if judge is not None
                 else judge_from_recipe(judge_from or "", judge_key))
        rollouts = RolloutSettings.model_validate(parse_inline_engine(engine))
        check_engine(rollouts, "--engine")
        settings = EvalSettings(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            batch_size=batch_size, seed=seed, apply_chat_template=chat_template, device=device,
            rollouts=rollouts,
            environment=(build_environment(environment_table) if environment_table else None),
        )
        out = Path(output_dir)
        summary = run_eval(list(models), prompts, table, out, settings, max_prompts)
        if summary is None:
            return
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            _print_summary(summary, out)


@hookimpl
def rlhfx_register_stages(register):
    from .stage import EvaluateStage

    register(EvaluateStage)
