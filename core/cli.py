"""The `rlhfx` command line. User mistakes print one or two lines and exit with status 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rlhfx import __version__
from rlhfx.errors import UserError

err_console = Console(stderr=True)


def print_error(message: str, label: str = "[red]error:[/red]") -> None:
    """One stderr line per line of `message`; its text is never read as rich markup."""
    for line in message.splitlines() or [""]:
        err_console.print(f"{label} {escape(line)}", highlight=False, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UserError into a short red message and exit status 2, without a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            from rlhfx.faults import debug_enabled

            if debug_enabled():  # the whole chain, the plugin's own traceback included
                import traceback

                err_console.print("".join(traceback.format_exception(exc)).rstrip(),
                                  markup=False, highlight=False)
            print_error(str(exc) or type(exc).__name__)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            from rlhfx.stopping import Terminated

            if isinstance(exc, Terminated):  # SIGTERM: the message says what was kept
                print_error(str(exc), label="[yellow]stopped:[/yellow]")
                sys.exit(exc.exit_code)
            err_console.print("[yellow]interrupted[/yellow]: run the same command to resume")
            sys.exit(130)

    return wrapper


class RlhfxGroup(click.Group):
    """The top-level group: loads the plugins and their commands before parsing arguments.

    Doing it here (not only in `main`) means `CliRunner().invoke(cli, ...)` in tests behaves
    exactly like the installed `rlhfx` command.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        load_plugin_commands(self)
        return super().main(*args, **kwargs)


@click.group(cls=RlhfxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rlhfx")
@click.option(
    "--debug", is_flag=True,
    help="Print the full traceback of an error too (the same as RLHFX_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """rlhfx: align language models with human feedback, from one recipe file."""
    if debug:
        import os

        from rlhfx.faults import ENV_DEBUG

        os.environ[ENV_DEBUG] = "1"


def load_plugin_commands(group: click.Group) -> None:
    """Load plugins, add their commands, warn about failed ones; exit 2 on a fatal problem."""
    from rlhfx.registry import get_plugins

    for name in set(group.commands) - CORE_COMMANDS:  # from an earlier in-process invocation
        del group.commands[name]
    try:
        system = get_plugins()
        system.add_commands(group)
    except UserError as exc:  # strict mode or conflicting plugins
        print_error(str(exc))
        sys.exit(exc.exit_code)
    for warning in system.warnings():
        print_error(warning, label="[yellow]warning:[/yellow]")
    for info in system.failed():
        first_line = info.error.splitlines()[0] if info.error else "unknown error"
        print_error(
            f"plugin '{info.name}' ({info.distribution}) failed to load and is skipped: "
            f"{first_line} (see `rlhfx plugins list`)",
            label="[yellow]warning:[/yellow]",
        )


def main() -> None:
    """Console entry point (`rlhfx`)."""
    import warnings

    # peft asks transformers 5 for a renamed attribute on every LoRA run; a user can do
    # nothing about it, so the command line does not repeat it.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)
    cli()


# ----------------------------------------------------------------------------- plugins
@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Stable, sorted JSON instead of a table.")
@click.option(
    "--all", "show_all", is_flag=True, help="Also list plugins left out by RLHFX_PLUGINS."
)
@user_errors
def plugins_list(as_json: bool, show_all: bool) -> None:
    """List plugins with their version, origin, status and components (kind:name)."""
    from rlhfx.registry import get_plugins

    infos = get_plugins().listing(include_disabled=show_all)
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2, sort_keys=True))
        return
    table = Table(title="rlhfx plugins")
    for col in ("name", "version", "origin", "status", "components"):
        table.add_column(col, overflow="fold")
    for info in infos:
        status = {"loaded": "[green]loaded[/]", "failed": "[red]failed[/]"}.get(
            info.status, info.status
        )
        detail = ", ".join(sorted(info.components)) or (info.error or "")
        table.add_row(
            info.name, info.version, "built-in" if info.builtin else info.distribution,
            status, detail,
        )
    Console().print(table)


# ----------------------------------------------------------------------------- recipes
SET_HELP = ("Set a recipe key, e.g. --set stages.align.algorithm.batch_size=32 (a TOML value; "
            "repeatable). Checked like the file; kept in the run's recipe.toml.")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--explain", is_flag=True,
              help="Print the recipe as TOML with every default filled in.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@user_errors
def validate(recipe: str, explain: bool, settings: tuple[str, ...]) -> None:
    """Check a recipe completely (every component and its options) without loading a model:
    every check `rlhfx run` makes before its first stage."""
    from rlhfx.overrides import parse_settings
    from rlhfx.recipe import load_recipe
    from rlhfx.runner import run_recipe

    loaded = load_recipe(recipe, settings=parse_settings(settings))
    run_recipe(loaded, check_only=True)
    if explain:
        from rlhfx.config_docs import explain_recipe

        click.echo(explain_recipe(loaded), nl=False)
        return
    stages = ", ".join(f"{k} ({v.name})" for k, v in loaded.recipe.stages.items())
    n = len(loaded.recipe.stages)
    click.echo(f"{recipe}: ok ({n} stage{'' if n == 1 else 's'}: {stages})")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--output-dir", "-o", default=None, help="Overrides run.output_dir.")
@click.option(
    "--restart-from", default=None, metavar="STAGE",
    help="Redo this stage and the ones after it (their old directories are kept aside).",
)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--allow-changed-settings", is_flag=True,
    help="Resume an interrupted run although its --set values differ from this command's.",
)
@user_errors
def run(recipe: str, output_dir: str | None, restart_from: str | None,
        settings: tuple[str, ...], allow_changed_settings: bool) -> None:
    """Run a recipe's stages in order; running it again resumes where it stopped."""
    from rlhfx.overrides import parse_settings
    from rlhfx.recipe import load_recipe
    from rlhfx.runner import run_recipe

    loaded = load_recipe(recipe, settings=parse_settings(settings))
    run_dir = run_recipe(loaded, console=err_console, output_dir=output_dir,
                         restart_from=restart_from,
                         allow_changed_settings=allow_changed_settings)
    from rlhfx import distributed

    if distributed.is_main():
        click.echo(f"run complete: {run_dir}")


#: Commands rlhfx itself defines; any other command came from a plugin.
CORE_COMMANDS = frozenset(cli.commands)

if __name__ == "__main__":  # pragma: no cover
    main()
