"""What a running stage gets from the core: its directory, seed, earlier outputs, logging."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rlhfx import distributed
from rlhfx.config import PKG_PREFIX, ComponentRef, SourceStr
from rlhfx.errors import UserError
from rlhfx.files import append_jsonl
from rlhfx.registry import PluginSystem, call_impl
from rlhfx.sharding import Parallelism


@dataclass
class StageContext:
    run_dir: Path
    stage_id: str
    seed: int
    device: str  # "cpu" or "cuda"
    console: Console
    plugins: PluginSystem
    recipe_file: str
    #: outputs of the stages that ran before this one: {stage_id: {output: path}}
    earlier_outputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("rlhfx"))
    #: `[run] report_to`: trackers that also receive the metrics. The context itself writes
    #: tensorboard, wandb, mlflow and trackio (rlhfx.trackers); HF-Trainer stages pass the
    #: other names on to their trainers.
    report_to: tuple[str, ...] = ()
    #: `[run] name` (the trackers' project); empty: the run directory's name.
    run_name: str = ""
    #: `ddp` or `fsdp` (with its settings) for this stage: `[run] parallelism` and
    #: `[run.fsdp]`, overridden by the stage table's own `parallelism` and `fsdp` keys.
    parallelism: Parallelism = field(default_factory=Parallelism)
    _failed_loggers: set[str] = field(default_factory=set, init=False, repr=False)
    _trackers: Any = field(default=None, init=False, repr=False)

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / "stages" / self.stage_id

    @property
    def metrics_file(self) -> Path:
        return self.stage_dir / "metrics.jsonl"

    @property
    def is_main(self) -> bool:
        return distributed.is_main()

    def resolve(self, source: str) -> str:
        """Turn `@stage.output` into that output's path; other sources pass through."""
        if source.startswith(PKG_PREFIX):
            from rlhfx.model_sources import package_path

            return str(package_path(source))
        ref = SourceStr(source).stage_ref
        if ref is None:
            return str(Path(source).expanduser()) if SourceStr(source).looks_local else source
        stage, output = ref
        outputs = self.earlier_outputs.get(stage)
        if outputs is None:
            raise UserError(f"{self.recipe_file}: '@{stage}' has not run before '{self.stage_id}'")
        if output is None:
            if not outputs:
                raise UserError(f"{self.recipe_file}: stage '{stage}' produced no output")
            output = next(iter(outputs))
        if output not in outputs:
            raise UserError(
                f"{self.recipe_file}: stage '{stage}' has no output '{output}' "
                f"(it produced: {', '.join(outputs)})"
            )
        return outputs[output]

    def resolve_sources(self, value: Any) -> Any:
        """Resolve every `@stage.output` and `pkg:` source inside a config tree, in place.

        The runner does this for each stage's config before building the stage, so a component
        nested anywhere (a reward model inside a weighted reward, say) receives real paths.
        """
        if isinstance(value, SourceStr):
            resolved = self.resolve(value)
            return value if resolved == value else type(value)(resolved)
        if isinstance(value, ComponentRef):
            if value.resolved:
                value.bind(value._entry, self.resolve_sources(value.config))
            return value
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                current = getattr(value, name)
                new = self.resolve_sources(current)
                if new is not current:
                    object.__setattr__(value, name, new)
            return value
        if isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = self.resolve_sources(item)
            return value
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = self.resolve_sources(item)
            return value
        return value

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one record to the stage's metrics.jsonl and pass it to plugins (main only)."""
        if not self.is_main:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        append_jsonl(self.metrics_file, record)
        if self.report_to:
            self._to_trackers(step, record)
        # Each plugin separately: a failing tracker must not stop training or the others.
        for impl in self.plugins.pm.hook.rlhfx_log_metrics.get_hookimpls():
            try:
                call_impl(
                    impl, run_dir=str(self.run_dir), stage=self.stage_id, step=step,
                    metrics=dict(metrics),
                )
            except Exception as exc:
                if impl.plugin_name not in self._failed_loggers:
                    self._failed_loggers.add(impl.plugin_name)
                    self.log.warning(
                        "%s: rlhfx_log_metrics failed (%s: %s)%s; its later errors are not "
                        "shown", self._provider(impl.plugin_name), type(exc).__name__,
                        _first_line(exc), _at(exc, impl),
                    )

    def _to_trackers(self, step: int, record: Mapping[str, Any]) -> None:
        """The record to each `report_to` tracker rlhfx writes (opened on first use)."""
        if self._trackers is None:
            from rlhfx.trackers import Trackers

            self._trackers = Trackers(self.report_to, self.run_dir, self.stage_id,
                                      self.run_name or self.run_dir.name, self.log)
        self._trackers.log_record(step, record)

    def _provider(self, plugin_name: str) -> str:
        info = self.plugins.plugins.get(plugin_name)
        return info.provider() if info is not None else f"plugin '{plugin_name}'"

    def close(self) -> None:
        """Flush and close what the stage opened (the runner calls it when the stage ends)."""
        trackers, self._trackers = self._trackers, None
        if trackers is not None:
            trackers.close()

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        """A rich progress display (silent on processes other than the main one)."""
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.is_main,
            transient=True,
        ) as progress:
            yield progress


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _at(exc: BaseException, impl: Any) -> str:
    """` at plugin.py:12 in rlhfx_log_metrics`: the hook's own line that failed."""
    from rlhfx.faults import plugin_frame

    where = plugin_frame(exc, module=getattr(impl.function, "__module__", None))
    return f" at {where}" if where else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
