"""`rlhfx data prepare`: the data stage without a recipe, printing what was kept and dropped."""

from __future__ import annotations

from typing import Any

import click


def add_commands(cli: Any) -> None:
    from rlhfx.cli import user_errors

    @cli.group("data")
    def data() -> None:
        """Prepare preference data (HH-RLHF and LMFlow layouts)."""

    @data.command("prepare")
    @click.argument("source")
    @click.option("--out", "-o", "out_dir", default="data_prepared", show_default=True,
                  help="Directory for sft.jsonl, rm.jsonl, prompts.jsonl, eval_prompts.jsonl, "
                       "eval_rm.jsonl.")
    @click.option("--format", "fmt", default=None,
                  help="anthropic_hh, dahoas_hh, lmflow_pairs, lmflow_text (default: detect).")
    @click.option("--split", default="train", show_default=True, help="Split of a hub dataset.")
    @click.option("--max-rows", type=int, default=None, help="Read at most this many rows.")
    @click.option("--eval-source", default=None, help="Eval prompts from here (e.g. a test file).")
    @click.option("--eval-split", default="test", show_default=True)
    @click.option("--eval-size", type=int, default=2000, show_default=True)
    @click.option("--tokenizer", default=None,
                  help="Policy tokenizer (dir or hub id) to measure prompts in tokens.")
    @click.option("--max-prompt-tokens", type=int, default=256, show_default=True)
    @click.option("--template", type=click.Choice(["markers", "chat"]), default="markers",
                  show_default=True)
    @click.option("--lmflow", is_flag=True, help="Also write LMFlow json layouts.")
    @click.option("--skip-bad-rows", is_flag=True,
                  help="Drop (and count) rows that are not JSON or lack a field, not stop.")
    @click.option("--seed", type=int, default=42, show_default=True)
    @user_errors
    def prepare_cmd(source: str, out_dir: str, fmt: str | None, split: str,
                    max_rows: int | None, eval_source: str | None, eval_split: str,
                    eval_size: int, tokenizer: str | None, max_prompt_tokens: int,
                    template: str, lmflow: bool, skip_bad_rows: bool, seed: int) -> None:
        """Prepare SOURCE (hub id or .jsonl/.jsonl.gz/.json/.parquet) and print the counts."""
        from pydantic import ValidationError

        from rlhfx import UserError
        from rlhfx.registry import get_plugins

        from .config import DataConfig
        from .prepare import prepare

        raw: dict[str, Any] = dict(
            source=source, split=split, max_rows=max_rows, eval_source=eval_source,
            eval_split=eval_split, eval_size=eval_size, tokenizer=tokenizer,
            max_prompt_tokens=max_prompt_tokens, template=template, lmflow_json=lmflow,
            skip_bad_rows=skip_bad_rows,
        )
        if fmt:
            raw["format"] = fmt
        try:
            config = DataConfig.model_validate({k: v for k, v in raw.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise UserError(f"data prepare: --{key.replace('_', '-')}: {err['msg']}") from None
        from rlhfx.recipe import output_dir_problem

        problem = output_dir_problem(out_dir)
        if problem:
            raise UserError(f"data prepare: --out: {problem}")
        tok = None
        if tokenizer:
            from rlhfx.models import load_tokenizer
            from rlhfx.preflight import check_source

            problem = check_source(tokenizer, tokenizer_only=True)
            if problem:
                raise UserError(f"data prepare: --tokenizer: {problem}")
            tok = load_tokenizer(tokenizer)
        paths, report = prepare(config, out_dir, seed, plugins=get_plugins(), tokenizer=tok)
        for line in report.lines():
            click.echo(line)
        for name, path in paths.items():
            click.echo(f"{name}: {path}")
