"""`[run] report_to` with wandb (offline), mlflow (a local file store), trackio (local) and
TensorBoard: every stage's records reach each tracker under the metrics.jsonl names and
steps, the Trainer stages included (whose own HF integrations then stay off). The real
libraries write into the test's directory; nothing goes over the network."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfx.files import read_jsonl, write_jsonl

RECIPE = """\
[run]
output_dir = "out"
name = "demo"
seed = 5
report_to = ["tensorboard", "wandb", "mlflow", "trackio"]

[stages.m]
name = "make"
count = 4

[stages.sft]
model = "builtin:tiny-gpt-neo"
data = "texts.jsonl"
method = "full"
max_steps = 2
batch_size = 4
max_length = 32
logging_steps = 1
"""


def numbers(record: dict) -> dict[str, float]:
    return {k: v for k, v in record.items() if k not in ("step", "time")
            and isinstance(v, int | float) and not isinstance(v, bool)}


def expected(metrics_file: Path) -> dict[str, list[tuple[int, float]]]:
    """What every tracker should hold: each metrics.jsonl number at its step."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(metrics_file):
        for key, value in numbers(record).items():
            out.setdefault(key, []).append((record["step"], float(value)))
    return out


def wandb_history(run_file: Path) -> dict[str, list[tuple[int, float]]]:
    """The history rows of an offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, found = 32768, 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in record.history.item}
                step = record.history.step.num
                for key, value in items.items():
                    if not key.startswith("_"):
                        found.setdefault(key, []).append((step, float(value)))
    return found


def mlflow_history(store: Path, experiment: str, run: str) -> dict[str, list[tuple[int, float]]]:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.absolute().as_uri())
    exp = client.get_experiment_by_name(experiment)
    (found,) = client.search_runs([exp.experiment_id], f"tags.`mlflow.runName` = '{run}'")
    assert found.info.status == "FINISHED"
    return {key: [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, key)]
            for key in found.data.metrics}


def trackio_history(db: Path, run: str) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    with sqlite3.connect(db) as con:
        rows = con.execute("select step, metrics from metrics where run_name = ? order by id",
                           (run,)).fetchall()
    for step, text in rows:
        for key, value in json.loads(text).items():
            found.setdefault(key, []).append((step, float(value)))
    return found


def tensorboard_history(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def one_per_step(history: dict[str, list[tuple[int, float]]]) -> dict[str, list]:
    return {key: list(dict(points).items()) for key, points in history.items()}


def close(found: dict, wanted: dict) -> bool:
    return found.keys() == wanted.keys() and all(
        [s for s, _ in found[k]] == [s for s, _ in wanted[k]]
        and all(v == pytest.approx(w, rel=1e-6) for (_, v), (_, w) in zip(found[k], wanted[k],
                                                                           strict=True))
        for k in wanted
    )


@pytest.fixture(scope="module")
def teststages_site(tmp_path_factory) -> Path:
    """tests/plugin_teststages.py as an installed distribution, for a subprocess's path."""
    from rlhfx.testing import write_plugin_distribution

    site = tmp_path_factory.mktemp("site-packages")
    source = (Path(__file__).parent / "plugin_teststages.py").read_text(encoding="utf-8")
    write_plugin_distribution(site, "rlhfx-teststages", {"rlhfx_teststages": source},
                              {"teststages": "rlhfx_teststages"})
    return site


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, teststages_site):
    """One run of a test stage and a 2-step SFT stage with all four trackers, in a process
    of its own (the trackers' directories come from its environment)."""
    for package in ("wandb", "mlflow", "trackio", "tensorboard"):
        pytest.importorskip(package)
    work = tmp_path_factory.mktemp("tracked")
    (work / "r.toml").write_text(RECIPE, encoding="utf-8")
    write_jsonl(work / "texts.jsonl", [{"text": f"###Human: hi {i} ###Assistant: hello {i}"}
                                       for i in range(12)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(teststages_site),
           "WANDB_DIR": str(work / "wandb-files"), "TRACKIO_DIR": str(work / "trackio"),
           "HF_HUB_OFFLINE": "1"}
    # No WANDB_MODE: rlhfx's default is offline (and transformers prints a line on import
    # when the variable says so).
    for name in ("MLFLOW_TRACKING_URI", "WANDB_PROJECT", "WANDB_MODE"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "rlhfx.cli", "run", "r.toml"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, done


@pytest.mark.parametrize("stage", ["m", "sft"])
def test_every_tracker_has_the_metrics_jsonl_numbers(tracked_run, stage):
    work, _ = tracked_run
    out = work / "out"
    wanted = expected(out / "stages" / stage / "metrics.jsonl")
    if stage == "sft":
        assert {"loss", "learning_rate"} <= wanted.keys()  # the Trainer's own records
        assert [s for s, _ in wanted["loss"]] == [1, 2]
    else:
        assert wanted == {"rows": [(0, 4.0), (1, 4.0)], "done": [(1, 1.0)]}
    ids = json.loads((out / "stages" / stage / "trackers.json").read_text())
    (run_file,) = (work / "wandb-files" / "wandb").glob(f"offline-run-*-{ids['wandb']}/*.wandb")
    histories = {
        "wandb": wandb_history(run_file),
        "mlflow": mlflow_history(out / "mlruns", "demo", stage),
        "trackio": trackio_history(work / "trackio" / "demo.db", stage),
        "tensorboard": tensorboard_history(out / "tensorboard" / stage),
    }
    for tracker, found in histories.items():
        # wandb keeps one row per step: two records of one step (the Trainer's last log and
        # its summary) are one row there, the later value of a key kept.
        want = one_per_step(wanted) if tracker == "wandb" else wanted
        assert close(found, want), (tracker, found, want)


def test_nothing_from_the_trackers_between_the_commands_output(tracked_run):
    _, done = tracked_run
    assert done.stdout.strip().splitlines() == ["run complete: out"]
    assert "Traceback" not in done.stderr and "cannot" not in done.stderr


def test_a_resumed_stage_continues_its_tracker_runs(tmp_path, monkeypatch):
    """The ids kept in the stage directory make the next attempt log into the same runs."""
    pytest.importorskip("mlflow")
    from rlhfx.trackers import Trackers

    log = logging.getLogger("test")
    first = Trackers(("mlflow",), tmp_path, "align", "demo", log)
    first.log_record(0, {"step": 0, "time": time.time(), "reward_mean": 1.0})
    first.close()
    again = Trackers(("mlflow",), tmp_path, "align", "demo", log)
    again.log_record(1, {"step": 1, "time": time.time(), "reward_mean": 2.0})
    again.close()
    assert mlflow_history(tmp_path / "mlruns", "demo", "align") == {
        "reward_mean": [(0, 1.0), (1, 2.0)]}


def test_a_failing_tracker_is_reported_once_and_training_goes_on(tmp_path, caplog):
    from rlhfx.trackers import Tracker, Trackers

    class Broken(Tracker):
        name = "broken"

        def open(self):
            pass

        def log(self, step, metrics, walltime):
            raise RuntimeError("disk full")

        def close(self):
            raise AssertionError("a failed tracker is not closed")

    trackers = Trackers((), tmp_path, "s", "demo", logging.getLogger("test"))
    trackers.waiting = [Broken(tmp_path, "s", "demo", {})]
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            trackers.log_record(step, {"step": step, "time": 0.0, "x": 1.0})
        trackers.close()
    assert [r.getMessage() for r in caplog.records] == [
        "broken: cannot write metrics (RuntimeError: disk full); later records go to "
        "metrics.jsonl only"]


def test_trainer_stages_leave_ours_to_the_run_context():
    from rlhfx.hf_training import trainer_report_to

    assert trainer_report_to(None, ("wandb", "mlflow", "trackio", "tensorboard",
                                    "comet_ml")) == ["comet_ml"]
    assert trainer_report_to(["wandb"], ("mlflow",)) == ["wandb"]  # the stage's own choice


@pytest.mark.parametrize("name", ["wandb", "mlflow", "trackio"])
def test_a_tracker_without_its_package_is_a_recipe_error(monkeypatch, name):
    import importlib.util

    from pydantic import ValidationError

    from rlhfx.recipe import RunSection

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == name else real(n, *a))
    with pytest.raises(ValidationError, match=rf"'{name}' needs the {name} package: pip "
                                              rf"install \"rlhfx\[{name}\]\""):
        RunSection(report_to=[name])
