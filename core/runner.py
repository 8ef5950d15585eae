"""Running a recipe: output directory, seeding, logging, and stages in order, resumably.

`run_state.json` in the output directory records each stage's status, outputs and the
fingerprint of the recipe table it ran with. Running the same recipe again skips completed
stages and lets an interrupted stage resume from its own checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from rlhfx import distributed, preflight, stopping
from rlhfx.context import StageContext
from rlhfx.errors import UserError
from rlhfx.faults import PluginFault, call_plugin
from rlhfx.files import atomic_write_json, atomic_write_text
from rlhfx.recipe import LoadedRecipe, output_dir_problem
from rlhfx.registry import PluginSystem, get_plugins
from rlhfx.run_lock import RunLock
from rlhfx.write_faults import write_failure

STATE_FILE = "run_state.json"
INTERRUPTED = "interrupted by the user (Ctrl-C); run the same command to resume"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy comes with torch
        pass
    import torch

    torch.manual_seed(seed)


def pick_device(requested: str, recipe_file: str = "recipe") -> str:
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        # DeepSpeed (imported by transformers and accelerate) otherwise warns on every run that
        # it "was unable to detect" a GPU; on the CPU that is what the recipe asked for.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{recipe_file}: run.device: 'cuda' asked for, but no CUDA device is available "
            "(use 'auto' or 'cpu')"
        )
    return requested


class RunState:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"stages": {}}
        if path.exists():
            import json

            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(self.data.get("stages"), dict):
                    raise ValueError("no 'stages' table")
            except (ValueError, AttributeError) as exc:  # JSONDecodeError is a ValueError
                raise UserError(
                    f"{path}: unreadable run state ({exc}); fix or delete it (every stage then "
                    "runs again), or set another run.output_dir"
                ) from None

    def stage(self, stage_id: str) -> dict[str, Any]:
        return self.data["stages"].get(stage_id, {})

    def set_stage(self, stage_id: str, **fields: Any) -> None:
        self.data["stages"].setdefault(stage_id, {}).update(fields)
        if distributed.is_main():
            atomic_write_json(self.path, self.data)


class _QuietFileHandler(logging.FileHandler):
    """run.log on a full disk loses the line; the run's own error says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _setup_logging(run_dir: Path, level: str, console: Console) -> logging.Logger:
    log = logging.getLogger("rlhfx")
    log.setLevel(level.upper())
    for handler in list(log.handlers):  # an earlier run in this process
        handler.close()
        log.removeHandler(handler)
    log.propagate = False
    if distributed.is_main():
        screen = RichHandler(console=console, show_path=False, markup=False)
        # Records marked `extra={"screen": False}` go to run.log only (the CLI prints them).
        screen.addFilter(lambda record: getattr(record, "screen", True))
        log.addHandler(screen)
        file_handler = _QuietFileHandler(run_dir / "run.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(file_handler)
    else:
        log.addHandler(logging.NullHandler())
    return log


def _keep_recipe_copy(run_dir: Path, loaded: LoadedRecipe) -> None:
    """Copy the recipe into the run; an earlier, different copy is kept beside it, not lost."""
    target = run_dir / "recipe.toml"
    if target.exists() and target.read_text(encoding="utf-8") != loaded.text:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(target.stat().st_mtime))
        target.rename(_unused(run_dir / f"recipe.{stamp}", ".toml"))
    if not target.exists():
        atomic_write_text(target, loaded.text)


def run_recipe(
    loaded: LoadedRecipe,
    console: Console | None = None,
    output_dir: str | Path | None = None,
    restart_from: str | None = None,
    plugins: PluginSystem | None = None,
    check_only: bool = False,
    allow_changed_settings: bool = False,
) -> Path:
    """Run every stage of a validated recipe; returns the run directory.

    The main process holds the directory's lock (run_lock.py) throughout: a second run on it
    is refused at once.

    `check_only`: make every check a run makes before its first stage (the output directory,
    a changed recipe against the run's state, the device, local models and tokenizers) and
    return without touching anything (`rlhfx validate`).

    `allow_changed_settings` lets an interrupted run resume with other `--set` values than
    it was started with (by default that is refused, naming what changed)."""
    # The recipe's own output_dir was checked when it was validated; an existing file is
    # refused below.
    if output_dir is not None and not Path(output_dir).expanduser().exists():
        problem = output_dir_problem(str(output_dir))
        if problem:
            raise UserError(f"--output-dir: {problem}")
    run_dir = Path(output_dir).expanduser() if output_dir else loaded.output_dir
    if check_only:
        return _run_recipe(loaded, run_dir, console or Console(stderr=True), restart_from,
                           plugins or get_plugins(), check_only=True,
                           allow_changed_settings=allow_changed_settings)
    restore_sigterm = stopping.install()
    try:
        with contextlib.ExitStack() as held:
            return _run_recipe(loaded, run_dir, console or Console(stderr=True),
                               restart_from, plugins or get_plugins(),
                               allow_changed_settings=allow_changed_settings, held=held)
    finally:
        restore_sigterm()


def _run_recipe(loaded: LoadedRecipe, run_dir: Path, console: Console,
                restart_from: str | None, plugins: PluginSystem,
                check_only: bool = False, allow_changed_settings: bool = False,
                held: contextlib.ExitStack | None = None) -> Path:
    """The checks, then (unless `check_only`) the stages. The run directory is created and
    locked only once every check passed, so a refused recipe writes nothing; the lock is
    released when `held` closes."""
    recipe = loaded.recipe
    stage_ids = list(recipe.stages)
    if restart_from is not None and restart_from not in stage_ids:
        raise UserError(
            f"--restart-from: no stage '{restart_from}' in {loaded.path} "
            f"(stages: {', '.join(stage_ids)})"
        )

    retire = stage_ids[stage_ids.index(restart_from):] if restart_from is not None else []
    # A stage's fingerprint covers its own table and every earlier one, so a change upstream
    # makes every later stage stale, not only the next.
    # `fingerprints` leave out resume-neutral keys (e.g. RAFT's `iterations`, which may grow);
    # `exact` covers them too: a completed stage whose exact print changed is re-entered (it
    # resumes from its checkpoints) instead of skipped.
    fingerprints: dict[str, str] = {}
    exact: dict[str, str] = {}
    upstream = upstream_exact = ""
    for stage_id in stage_ids:
        upstream = fingerprints[stage_id] = _chain(upstream, loaded.stage_fingerprint(stage_id))
        upstream_exact = exact[stage_id] = _chain(
            upstream_exact, loaded.stage_fingerprint(stage_id, exact=True)
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: the output directory is an existing file; name another")
    state = RunState(run_dir / STATE_FILE)
    changes = check_settings(loaded, state.data, stage_ids, run_dir, allow_changed_settings)
    # Refuse a changed recipe before anything in the run directory is touched.
    for stage_id in stage_ids:
        previous = state.stage(stage_id)
        if stage_id in retire or previous.get("fingerprint") in (None, fingerprints[stage_id]):
            continue
        what = "completed" if previous.get("status") == "completed" else "started"
        raise UserError(
            f"{loaded.path}: stages.{stage_id}: this stage {what} in {run_dir} with a "
            f"different recipe (or an earlier stage changed); rerun with "
            f"--restart-from {stage_id} to redo it, or set another run.output_dir"
            + "".join(f"\n  --set {line}" for line in changes)
        )
    state.data["settings"] = loaded.settings
    # A check leaves "auto" and "cpu" (always usable) alone rather than import torch for them.
    device = (pick_device(recipe.run.device, str(loaded.path))
              if not check_only or recipe.run.device == "cuda" else recipe.run.device)
    # Every local model and tokenizer the stages still to run will load, checked in seconds
    # now rather than found broken after the first stages spent minutes.
    to_run = [
        (stage_id, recipe.stages[stage_id]) for stage_id in stage_ids
        if stage_id in retire or state.stage(stage_id).get("status") != "completed"
        or state.stage(stage_id).get("exact_fingerprint") != exact[stage_id]
    ]
    finished = {
        stage_id: _in_declared_order(
            _absolute(run_dir, state.stage(stage_id).get("outputs", {})),
            _declared_outputs(recipe.stages[stage_id]),
        )
        for stage_id in stage_ids
        if stage_id not in retire and state.stage(stage_id).get("status") == "completed"
    }
    preflight.check_recipe(str(loaded.path), to_run, finished)
    if check_only:
        return run_dir

    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
        if held is not None:
            held.callback(lock.release)
    distributed.init(recipe.run.timeout_s)
    if distributed.is_main():
        _keep_recipe_copy(run_dir, loaded)
    distributed.barrier()
    log = _setup_logging(run_dir, recipe.run.log_level, console)
    for stage_id in retire:
        _retire_stage(run_dir, state, stage_id)

    outputs: dict[str, dict[str, str]] = {}
    for index, stage_id in enumerate(stage_ids):
        ref = recipe.stages[stage_id]
        fingerprint = fingerprints[stage_id]
        previous = state.stage(stage_id)
        if previous.get("status") == "completed" and (
            previous.get("exact_fingerprint") != exact[stage_id]
        ):
            log.info("stage %s: resume-neutral options changed; continuing it", stage_id)
        elif previous.get("status") == "completed":
            log.info("stage %s: completed earlier, skipped", stage_id)
            outputs[stage_id] = _in_declared_order(
                _absolute(run_dir, previous.get("outputs", {})), _declared_outputs(ref)
            )
            continue
        seed_everything(recipe.run.seed + index)
        ctx = StageContext(
            run_dir=run_dir,
            stage_id=stage_id,
            seed=recipe.run.seed + index,
            device=device,
            console=console,
            plugins=plugins,
            recipe_file=str(loaded.path),
            earlier_outputs=dict(outputs),
            log=log,
            report_to=tuple(recipe.run.report_to),
            run_name=recipe.run.name or "",
            parallelism=loaded.parallelism(stage_id),
        )
        if distributed.is_main():
            ctx.stage_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        resumed = previous.get("status") in ("running", "completed")
        log.info("stage %s (%s): %s", stage_id, ref.name, "resuming" if resumed else "starting")
        state.set_stage(
            stage_id, status="running", fingerprint=fingerprint,
            exact_fingerprint=exact[stage_id], started=time.time(),
        )
        started = time.time()
        try:
            ctx.resolve_sources(ref)  # `@stage.output` and `pkg:` anywhere in the stage's table
            stage = ref.build()
            produced = _run_stage(stage, ref, ctx) or {}
        except BaseException as exc:
            # The state stays "running": the next `rlhfx run` resumes this stage.
            quiet = {"screen": False}
            lost = distributed.lost_contact(exc)
            if lost is not None:
                log.error("stage %s stopped: %s", stage_id, lost, extra=quiet)
                raise lost from None
            failure = write_failure(exc, ctx.stage_dir) if isinstance(exc, Exception) else None
            if failure is not None:
                log.error("stage %s stopped: %s", stage_id, failure, extra=quiet)
                raise failure from None
            if isinstance(exc, stopping.Terminated):
                log.error("stage %s stopped: %s", stage_id, exc, extra=quiet)
            elif isinstance(exc, KeyboardInterrupt):
                log.error("stage %s stopped: %s", stage_id, INTERRUPTED, extra=quiet)
            elif isinstance(exc, UserError):
                # A plugin's fault keeps its traceback in run.log (the screen shows one line).
                log.error("stage %s stopped: %s", stage_id, exc or type(exc).__name__,
                          extra=quiet, exc_info=isinstance(exc, PluginFault))
            else:
                log.exception("stage %s failed", stage_id, extra=quiet)
            raise
        finally:
            ctx.close()
        distributed.barrier()
        outputs[stage_id] = _in_declared_order(
            {k: str(v) for k, v in produced.items()}, _declared_outputs(ref)
        )
        state.set_stage(
            stage_id,
            status="completed",
            outputs=_relative(run_dir, outputs[stage_id]),
            seconds=round(time.time() - started, 2),
        )
        log.info("stage %s: completed in %.1f s", stage_id, time.time() - started)
        if distributed.is_main():
            _write_model_cards(run_dir, loaded, state, log)
    return run_dir


def _write_model_cards(
    run_dir: Path, loaded: LoadedRecipe, state: RunState, log: logging.Logger
) -> None:
    """A card beside each finished model, rewritten as later stages add what they measured."""
    from rlhfx.model_card import write_model_cards

    try:
        for card in write_model_cards(run_dir, loaded.data, state.data["stages"],
                                      str(loaded.path)):
            log.debug("model card written: %s", card)
    except OSError as exc:
        log.warning("model card: cannot write it (%s); the model is saved", exc)


def check_settings(
    loaded: LoadedRecipe, state: dict[str, Any], stage_ids: list[str], run_dir: Path,
    allow: bool,
) -> list[str]:
    """The `--set` values that differ from those the run in `run_dir` was started with.

    Resuming an interrupted run with other settings is refused unless `allow`: a run half
    made with one value and half with another is rarely what was meant.
    """
    from rlhfx.overrides import changed_settings

    stages = state.get("stages", {})
    changes = changed_settings(state.get("settings") or {}, loaded.settings) if stages else []
    interrupted = any(stages.get(s, {}).get("status") != "completed" for s in stage_ids)
    if changes and interrupted and not allow:
        raise UserError(
            f"{run_dir}: this interrupted run was started with other --set values; "
            "rerun with --allow-changed-settings to resume with these, or set another "
            "run.output_dir:" + "".join(f"\n  {line}" for line in changes)
        )
    return changes


def _run_stage(stage: Any, ref: Any, ctx: StageContext) -> Any:
    """Run a stage; a third-party stage's fault names its plugin and the recipe key (a
    built-in's is a bug in rlhfx and keeps its traceback)."""
    entry = getattr(ref, "_entry", None)
    if entry is None or entry.plugin.builtin:
        return stage.run(ctx)
    key = f"{ctx.recipe_file}: stages.{ctx.stage_id}"
    return call_plugin(stage, key, stage.run, ctx)


def _retire_stage(run_dir: Path, state: RunState, stage_id: str) -> None:
    """Move a stage's directory aside (never delete work) and forget its status."""
    stage_dir = run_dir / "stages" / stage_id
    if distributed.is_main() and stage_dir.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        stage_dir.rename(_unused(stage_dir.with_name(f"{stage_id}.old-{stamp}")))
    state.data["stages"].pop(stage_id, None)
    if distributed.is_main():
        atomic_write_json(state.path, state.data)


def _unused(stem: Path, suffix: str = "") -> Path:
    """`stem + suffix`, or `stem-2 + suffix`, ...: a name nothing has yet (never overwrite)."""
    target, n = stem.with_name(stem.name + suffix), 1
    while target.exists():  # e.g. two restarts within one second
        n += 1
        target = stem.with_name(f"{stem.name}-{n}{suffix}")
    return target


def _chain(upstream: str, own: str) -> str:
    return hashlib.sha256(f"{upstream}:{own}".encode()).hexdigest()[:16] if upstream else own


def _declared_outputs(ref: Any) -> tuple[str, ...]:
    return tuple(getattr(ref.component_class, "outputs", ()))


def _in_declared_order(produced: dict[str, str], declared: tuple[str, ...]) -> dict[str, str]:
    """Declared outputs first, so `@stage` (no output name) means the first declared one."""
    first = {k: produced[k] for k in declared if k in produced}
    return {**first, **{k: v for k, v in produced.items() if k not in first}}


def _relative(run_dir: Path, outputs: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in outputs.items():
        p = Path(value)
        try:
            out[key] = str(p.resolve().relative_to(run_dir.resolve()))
        except ValueError:
            out[key] = value
    return out


def _absolute(run_dir: Path, outputs: dict[str, str]) -> dict[str, str]:
    return {
        k: (str(run_dir / v) if not Path(v).is_absolute() and (run_dir / v).exists() else v)
        for k, v in outputs.items()
    }
