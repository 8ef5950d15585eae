"""`rlhfx components list|show` (each component's options, types, defaults, constraints and
help, from its config model) and `rlhfx schema` (a JSON Schema for recipes, for editors).

Only click is imported here: every `rlhfx` command loads this module at start-up.
"""

from __future__ import annotations

import json
from typing import Any

import click

from rlhfx import UserError, hookimpl


def component_info(entry: Any) -> dict[str, Any]:
    from rlhfx.config_docs import option_docs

    return {
        "kind": entry.kind,
        "name": entry.name,
        "summary": entry.cls.summary(),
        "plugin": entry.plugin.name,
        "distribution": entry.plugin.distribution,
        "builtin": entry.plugin.builtin,
        "options": [o.as_dict() for o in option_docs(entry.cls.Config)],
    }


def _lookup(spec: str) -> Any:
    from rlhfx.components import KINDS
    from rlhfx.registry import UnknownComponentError, get_plugins

    kind, sep, name = spec.partition(":")
    if not sep or not name:
        raise UserError(f"'{spec}': write KIND:NAME, e.g. cleaner:discard "
                        f"(kinds: {', '.join(KINDS)})")
    if kind not in KINDS:
        raise UserError(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    try:
        return get_plugins().get(kind, name)
    except UnknownComponentError as exc:
        raise UserError(exc.short) from None


def _show(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    origin = "built-in" if info["builtin"] else info["distribution"]
    console.print(f"[bold]{info['kind']}:{escape(info['name'])}[/bold] ({origin}, plugin "
                  f"'{escape(info['plugin'])}')", highlight=False)
    if info["summary"]:
        console.print(escape(info["summary"]), highlight=False)
    if not info["options"]:
        console.print("no options")
        return
    table = Table(show_lines=True)
    for col in ("option", "type", "default", "constraints", "help"):
        table.add_column(col, overflow="fold")
    for o in info["options"]:
        default = "[red]required[/red]" if o["required"] else escape(json.dumps(o["default"]))
        table.add_row(escape(o["name"]), escape(o["type"]), default,
                      escape(", ".join(o["constraints"])), escape(o["help"]))
    console.print(table)


@hookimpl
def rlhfx_register_commands(cli):
    from rlhfx.cli import user_errors
    from rlhfx.components import KINDS

    @cli.group("components")
    def components() -> None:
        """Components (stages, algorithms, rewards, cleaners, ...) and their options."""

    @components.command("list")
    @click.option("--kind", type=click.Choice(list(KINDS)), default=None,
                  help="Only this kind.")
    @click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
    @user_errors
    def components_list(kind: str | None, as_json: bool) -> None:
        """List installed components as KIND:NAME with their one-line summary."""
        from rich.console import Console
        from rich.table import Table

        from rlhfx.registry import get_plugins

        system = get_plugins()
        rows = [
            {"kind": k, "name": n, "summary": e.cls.summary(), "plugin": e.plugin.name,
             "builtin": e.plugin.builtin}
            for k in KINDS if kind in (None, k)
            for n, e in sorted(system.components[k].items())
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="rlhfx components (rlhfx components show KIND:NAME for options)")
        for col in ("component", "origin", "summary"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(f"{r['kind']}:{r['name']}",
                          "built-in" if r["builtin"] else r["plugin"], r["summary"])
        Console().print(table)

    @components.command("show")
    @click.argument("component", metavar="KIND:NAME")
    @click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
    @user_errors
    def components_show(component: str, as_json: bool) -> None:
        """A component's options: type, default, constraints and help text."""
        info = component_info(_lookup(component))
        if as_json:
            click.echo(json.dumps(info, indent=2))
        else:
            _show(info)

    @cli.command("schema")
    @click.option("--output", "-o", default=None, metavar="FILE",
                  help="Write the schema here instead of printing it.")
    @user_errors
    def schema_cmd(output: str | None) -> None:
        """A JSON Schema for recipes from the installed components (editor completion)."""
        from pathlib import Path

        from rlhfx.files import atomic_write_text
        from rlhfx.registry import get_plugins

        from .schema import recipe_schema

        text = json.dumps(recipe_schema(get_plugins()), indent=2) + "\n"
        if output is None:
            click.echo(text, nl=False)
            return
        path = Path(output)
        if path.is_dir():
            raise UserError(f"--output {path}: is a directory; give a file name")
        atomic_write_text(path, text)
        click.echo(f"schema written: {path} (first line of a recipe: #:schema {path})")
