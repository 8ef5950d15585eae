"""Experiment trackers for every stage: `[run] report_to = ["wandb", "mlflow", ...]`.

Every record a stage logs (`ctx.log_metrics`, so every name in `metrics.jsonl`, at the same
step) also goes to each tracker named here. All of them write locally unless told otherwise,
so a run works offline:

- `tensorboard`: event files in `<run dir>/tensorboard/<stage>`;
- `wandb`: offline mode (`WANDB_MODE` overrides; `wandb sync` uploads later), files under
  `WANDB_DIR` or the run directory;
- `mlflow`: a file store in `<run dir>/mlruns` (`MLFLOW_TRACKING_URI` overrides);
- `trackio`: its local database (`TRACKIO_DIR`, default ~/.cache/huggingface/trackio).

The project (wandb project, mlflow experiment, trackio project) is the run's name, `[run]
name` or the run directory's; each stage is one run in it, named after the stage, and a
resumed stage continues its run where the tracker can (wandb, mlflow).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Trackers rlhfx writes itself, for every stage; other `report_to` names are passed to the
#: Hugging Face Trainer of the Trainer stages only.
OURS = ("tensorboard", "wandb", "mlflow", "trackio")
#: The package each needs, and the extra that installs it.
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
            "trackio": "trackio"}
#: Tracker run ids of a stage, so a resumed stage continues the same run.
IDS_FILE = "trackers.json"


def missing_package(name: str) -> str | None:
    """Why tracker `name` cannot work here (its package is absent), found without importing."""
    import importlib.util

    package = PACKAGES.get(name)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"'{name}' needs the {package} package: pip install \"rlhfx[{name}]\""


class Tracker:
    """One tracker for one stage: opened on the first record, closed when the stage ends."""

    name = ""

    def __init__(self, run_dir: Path, stage_id: str, project: str, ids: dict[str, str]):
        self.run_dir, self.stage_id, self.project, self.ids = run_dir, stage_id, project, ids

    def open(self) -> None:
        raise NotImplementedError

    def log(self, step: int, metrics: Mapping[str, float], walltime: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoard(Tracker):
    name = "tensorboard"

    def open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard" / self.stage_id))

    def log(self, step: int, metrics: Mapping[str, float], walltime: float) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step, walltime=walltime)
        # A record is written every iteration or few steps: flushing each keeps a killed
        # run's curves complete at little cost.
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Wandb(Tracker):
    name = "wandb"

    def open(self) -> None:
        import secrets

        import wandb

        run_id = self.ids.get("wandb") or secrets.token_hex(4)
        self.ids["wandb"] = run_id
        mode: Any = os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            project=self.project, group=self.project, name=self.stage_id, id=run_id,
            resume="allow", dir=os.environ.get("WANDB_DIR") or str(self.run_dir),
            mode=mode,
            settings=wandb.Settings(silent=True, console="off", disable_git=True),
        )

    def log(self, step: int, metrics: Mapping[str, float], walltime: float) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class Mlflow(Tracker):
    name = "mlflow"

    def open(self) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (self.run_dir / "mlruns").absolute().as_uri()
            # MLflow 3 keeps the file store for those who ask for it; a database would need
            # the full mlflow package and a server-like setup for a local, offline run.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.project)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(self.project))
        run_id = self.ids.get("mlflow")
        if run_id is None or not self._exists(run_id):
            run_id = self.client.create_run(experiment_id, run_name=self.stage_id).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.ids["mlflow"] = self.run_id = run_id

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except Exception:  # a store made afresh: the old run is gone
            return False
        return True

    def log(self, step: int, metrics: Mapping[str, float], walltime: float) -> None:
        from mlflow.entities import Metric

        stamp = int(walltime * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, float(value), stamp, step) for key, value in metrics.items()
        ])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackio(Tracker):
    name = "trackio"

    def open(self) -> None:
        import trackio

        with _quiet():
            self.run = trackio.init(project=self.project, name=self.stage_id, resume="allow",
                                    auto_log_gpu=False, auto_log_cpu=False)

    def log(self, step: int, metrics: Mapping[str, float], walltime: float) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        import trackio

        with _quiet():
            trackio.finish()  # the module's: it also forgets the run, so exit does not redo it


KINDS: dict[str, type[Tracker]] = {t.name: t for t in (TensorBoard, Wandb, Mlflow, Trackio)}


class Trackers:
    """The trackers of one stage. A tracker that fails is reported once and left out: a
    tracker never stops training, and metrics.jsonl is always complete."""

    def __init__(self, names: tuple[str, ...], run_dir: Path, stage_id: str, project: str,
                 log: logging.Logger):
        self.run_dir, self.stage_id, self.log = run_dir, stage_id, log
        self.ids_file = run_dir / "stages" / stage_id / IDS_FILE
        self.ids: dict[str, str] = _read_ids(self.ids_file)
        self.waiting = [KINDS[n](run_dir, stage_id, project, self.ids) for n in names
                        if n in KINDS]
        self.open: list[Tracker] = []

    def log_record(self, step: int, record: Mapping[str, Any]) -> None:
        numbers = {k: v for k, v in record.items()
                   if k not in ("step", "time") and _is_number(v)}
        if not numbers:
            return
        for tracker in list(self.waiting):
            self.waiting.remove(tracker)
            if self._safely(tracker, "open", tracker.open):
                self.open.append(tracker)
                self._save_ids()
        for tracker in list(self.open):
            self._safely(tracker, "write", tracker.log, step, numbers, record["time"])

    def close(self) -> None:
        for tracker in self.open:
            self._safely(tracker, "close", tracker.close)
        self.open = []

    def _safely(self, tracker: Tracker, what: str, fn: Any, *args: Any) -> bool:
        try:
            fn(*args)
        except Exception as exc:
            if tracker in self.open:
                self.open.remove(tracker)
            text = str(exc).strip().splitlines()
            self.log.warning("%s: cannot %s metrics (%s: %s); later records go to "
                             "metrics.jsonl only", tracker.name, what, type(exc).__name__,
                             text[0] if text else "")
            return False
        return True

    def _save_ids(self) -> None:
        if self.ids:
            from rlhfx.files import atomic_write_json

            atomic_write_json(self.ids_file, self.ids)


def _read_ids(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


@contextlib.contextmanager
def _quiet() -> Any:
    """trackio prints to stdout on init and finish, between the command's own output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
