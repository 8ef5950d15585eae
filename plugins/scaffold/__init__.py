"""`rlhfx plugins new NAME --kind KIND`: write a complete plugin package (pyproject with the
`rlhfx` entry point, one component with a typed config, tests using rlhfx's pytest fixtures,
a README) that installs and whose tests pass as written.

Only click is imported here: every `rlhfx` command loads this module at start-up.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from rlhfx import UserError, hookimpl

KINDS = ("reward_source", "cleaner", "ranker", "algorithm", "stage", "data_format",
         "environment")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def write_plugin_package(name: str, kind: str, parent: str | Path = ".") -> Path:
    """Write the package for component `name` of `kind` into `parent/rlhfx-<name>`."""
    from string import Template

    from rlhfx.registry import REGISTER_HOOKS

    from . import templates

    name = name.removeprefix("rlhfx-").removeprefix("rlhfx_").replace("-", "_")
    if not _NAME.match(name):
        raise UserError(
            f"plugin name '{name}': use lowercase letters, digits and '_' (it is the name "
            "recipes write), starting with a letter"
        )
    if kind not in KINDS:
        raise UserError(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    dist = f"rlhfx-{name.replace('_', '-')}"
    module = f"rlhfx_{name}"
    root = Path(parent) / dist
    if root.exists():
        raise UserError(f"{root}: already exists; choose another name or directory")
    values = {
        "name": name, "kind": kind, "dist": dist, "module": module,
        "cls": "".join(part.capitalize() for part in name.split("_")),
        "hook": REGISTER_HOOKS[kind],
    }

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    files = {
        "pyproject.toml": fill(templates.PYPROJECT),
        "README.md": fill(templates.README.replace("$usage", templates.USAGE[kind])),
        f"{module}/__init__.py": fill(templates.CODE[kind] + templates.REGISTER),
        f"tests/test_{module}.py": fill(templates.TESTS[kind]),
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@hookimpl
def rlhfx_register_commands(cli):
    from rlhfx.cli import user_errors

    group = cli.commands.get("plugins")
    if not isinstance(group, click.Group):
        return

    @group.command("new")
    @click.argument("name")
    @click.option("--kind", type=click.Choice(KINDS), default="reward_source",
                  show_default=True, help="What the plugin's component is.")
    @click.option("--output-dir", "-o", default=".", show_default=True,
                  help="The package directory rlhfx-NAME is written inside this one.")
    @user_errors
    def plugins_new(name: str, kind: str, output_dir: str) -> None:
        """Write a plugin package with one component of KIND, ready to install and test."""
        root = write_plugin_package(name, kind, output_dir)
        click.echo(f"plugin package written: {root}\n"
                   f"next: pip install -e {root} && python -m pytest {root}")
