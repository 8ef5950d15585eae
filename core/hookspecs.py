"""The hooks a plugin may implement. Each is documented in `docs/hooks.md` (tests/test_docs.py
fails when a hook here is undocumented there or its arguments drift).

A plugin is a module (or object) with functions decorated by `rlhfx.hookimpl` whose names are
the hook names below. Registration hooks receive a `register` callback and call it once per
component class; the core builds the name -> component tables itself and rejects duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

PROJECT = "rlhfx"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a plugin module's functions as implementations of the hooks in this module:
#: `@hookimpl` over `def rlhfx_register_reward_sources(register)` and so on (docs/hooks.md).
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def rlhfx_register_stages(register: Register) -> None:
    """Register pipeline stage classes (subclasses of `rlhfx.Stage`).

    :param register: call `register(StageClass)` once for each stage the plugin provides.

    Called once per process when the plugin system loads (at the start of every `rlhfx`
    command), before any recipe is read.
    """


@hookspec
def rlhfx_register_algorithms(register: Register) -> None:
    """Register alignment algorithms (subclasses of `rlhfx.AlignmentAlgorithm`).

    :param register: call `register(AlgorithmClass)` once for each algorithm.

    Called once per process when the plugin system loads. The `align` stage looks the
    recipe's `algorithm.name` up in the table this builds and runs the algorithm.
    """


@hookspec
def rlhfx_register_reward_sources(register: Register) -> None:
    """Register reward sources (subclasses of `rlhfx.RewardSource`).

    :param register: call `register(RewardSourceClass)` once for each reward source.

    Called once per process when the plugin system loads. `score` is called later on batches
    of (prompt, cleaned response) text, only for responses that no cleaner discarded.
    """


@hookspec
def rlhfx_register_cleaners(register: Register) -> None:
    """Register response cleaners (subclasses of `rlhfx.ResponseCleaner`).

    :param register: call `register(CleanerClass)` once for each cleaner.

    Called once per process when the plugin system loads. `clean` is called later for each
    response, in the recipe's order; a cleaner that discards stops the chain.
    """


@hookspec
def rlhfx_register_rankers(register: Register) -> None:
    """Register rankers (subclasses of `rlhfx.Ranker`) that choose RAFT's training samples.

    :param register: call `register(RankerClass)` once for each ranker.

    Called once per process when the plugin system loads. `select` is called later, once per
    RAFT iteration, with all of that iteration's samples.
    """


@hookspec
def rlhfx_register_data_formats(register: Register) -> None:
    """Register data formats (subclasses of `rlhfx.DataFormat`) that read preference data.

    :param register: call `register(DataFormatClass)` once for each format.

    Called once per process when the plugin system loads. The data stage calls `sniff` on a
    source's first record when the recipe names no format.
    """


@hookspec
def rlhfx_register_rollout_engines(register: Register) -> None:
    """Register rollout engines (subclasses of `rlhfx.RolloutEngine`) that sample responses.

    :param register: call `register(EngineClass)` once for each engine.

    Called once per process when the plugin system loads. The align and evaluate stages look
    the recipe's `rollouts.engine` up in the table this builds and start that engine.
    """


@hookspec
def rlhfx_register_environments(register: Register) -> None:
    """Register environments (subclasses of `rlhfx.Environment`) for multi-turn episodes.

    :param register: call `register(EnvironmentClass)` once for each environment.

    Called once per process when the plugin system loads. The `align` stage looks its
    `environment.name` up in the table this builds; `reset` then starts each episode and
    `step` answers each model turn.
    """


@hookspec
def rlhfx_register_commands(cli: Any) -> None:
    """Add commands to the `rlhfx` command line.

    :param cli: the top-level `click.Group`; call `cli.add_command(cmd)` or use `@cli.command()`.

    Called at the start of every `rlhfx` command, after the plugins load and before the command
    line is parsed. A plugin whose hook raises is reported as failed by `rlhfx plugins list`,
    and the other commands keep working.
    """


@hookspec
def rlhfx_log_metrics(
    run_dir: str, stage: str, step: int, metrics: Mapping[str, Any]
) -> None:
    """Receive one metrics record (e.g. to forward it to an experiment tracker).

    :param run_dir: the run's output directory.
    :param stage: the id of the stage that logged the record (the key in `[stages.ID]`).
    :param step: the iteration or optimisation step the record belongs to.
    :param metrics: flat mapping of metric name to value (numbers, mostly); a copy.

    Called on the main process only, each time a stage calls `ctx.log_metrics`, after the
    record has been appended to `stages/<stage>/metrics.jsonl`. Return values are ignored; an
    exception is logged once as a warning and does not stop the run.
    """
