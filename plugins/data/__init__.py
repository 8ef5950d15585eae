"""HH-RLHF-style preference data: formats, the `data` stage and `rlhfx data prepare`.

Import-light on purpose (the CLI imports every plugin at start): nothing here loads torch,
transformers or datasets until a stage or command runs.
"""

from __future__ import annotations

from rlhfx import hookimpl

from .formats import BUILTIN_FORMATS
from .stage import DataStage

__all__ = ["BUILTIN_FORMATS", "DataStage"]


@hookimpl
def rlhfx_register_data_formats(register):
    for cls in BUILTIN_FORMATS:
        register(cls)


@hookimpl
def rlhfx_register_stages(register):
    register(DataStage)


@hookimpl
def rlhfx_register_commands(cli):
    from .cli import add_commands

    add_commands(cli)
