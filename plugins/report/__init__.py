"""`rlhfx report RUN_DIR`: one self-contained HTML page (figures inlined, PNGs beside it) that
shows what a run did: its stages and their wall time, reward curves, diversity, cleaner rates,
KL (PPO), response length, time per phase, the reward model's accuracy, and the policy's
responses to the eval prompts before and after alignment. It reads only the run directory, so
it works on a run that is still going or was interrupted.

Only click is imported here: every `rlhfx` command loads this module at start-up.
"""

from __future__ import annotations

from pathlib import Path

import click

from rlhfx import UserError, hookimpl


def write_report(run_dir: str | Path, output: str | Path | None = None,
                 max_samples: int = 50) -> Path:
    """Write the report for `run_dir`; returns the HTML file's path.

    Default output: `<run_dir>/report.html`; the PNGs go to `<stem>_files/` beside it.
    """
    from rlhfx.files import atomic_write_text

    from .collect import collect_run
    from .figures import draw_all
    from .render import render

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    markers = ("run_state.json", "recipe.toml", "stages")
    if not any((run_dir / m).exists() for m in markers):
        raise UserError(
            f"{run_dir}: not a run directory (it has none of {', '.join(markers)}; "
            "give the directory `rlhfx run` wrote to)"
        )
    html_path = Path(output) if output else run_dir / "report.html"
    if html_path.is_dir():
        raise UserError(f"--output {html_path}: is a directory; give a file name (report.html)")
    run = collect_run(run_dir)
    charts = draw_all(run, html_path.parent / f"{html_path.stem}_files")
    atomic_write_text(html_path, render(run, charts, max_samples=max_samples))
    return html_path


@hookimpl
def rlhfx_register_commands(cli):
    from rlhfx.cli import user_errors

    @cli.command("report")
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option("--output", "-o", default=None, metavar="FILE",
                  help="HTML file to write (default: RUN_DIR/report.html).")
    @click.option("--max-samples", default=50, show_default=True, type=click.IntRange(min=1),
                  help="Eval prompts shown in the before/after table.")
    @user_errors
    def report_cmd(run_dir: str, output: str | None, max_samples: int) -> None:
        """Write an HTML report of a run (finished, still going or interrupted)."""
        path = write_report(run_dir, output, max_samples)
        click.echo(f"report written: {path}")
