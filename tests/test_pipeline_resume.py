"""recipes/hh_pipeline_tiny.toml end to end, killed with SIGKILL mid-run and started again.

The first run is killed once the reward-model stage has written a Trainer checkpoint (data and
SFT completed, reward model half done). The second run must skip data and SFT (their outputs
untouched), resume the reward model from its checkpoint rather than from step 0, and finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "hh_pipeline_tiny.toml"

pytest.importorskip("trl")


def start(run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = (run_dir.parent / f"log-{time.time_ns()}.txt").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "rlhfx.cli", "run", str(RECIPE), "--output-dir", str(run_dir)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )


def state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run_state.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return {}


def rm_checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "stages" / "reward_model" / "checkpoints"
    return sorted(folder.glob("checkpoint-*/trainer_state.json")) if folder.is_dir() else []


@pytest.mark.slow
def test_killed_pipeline_resumes_where_it_stopped(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    logs = tmp_path
    first = start(run_dir)
    deadline = time.time() + 240
    while not rm_checkpoints(run_dir):
        assert first.poll() is None, "the run ended before it could be killed:\n" + _logs(logs)
        assert time.time() < deadline, "no reward-model checkpoint in time:\n" + _logs(logs)
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    stages = state(run_dir)
    assert stages["data"]["status"] == stages["sft"]["status"] == "completed"
    assert stages["reward_model"]["status"] == "running"
    assert "align" not in stages
    assert not (run_dir / "stages" / "reward_model" / "model").exists()
    killed_at = max(int(p.parent.name.split("-")[1]) for p in rm_checkpoints(run_dir))
    sft_model = run_dir / "stages" / "sft" / "model" / "model.safetensors"
    sft_stamp = sft_model.stat().st_mtime_ns
    data_stamp = (run_dir / "stages" / "data" / "sft.jsonl").stat().st_mtime_ns

    second = start(run_dir)
    code = second.wait(timeout=400)
    out = _logs(logs)
    log = (run_dir / "run.log").read_text()  # unwrapped, one line per record, both runs
    second_run = log[log.rindex("stage data"):]
    assert "stage data: completed earlier, skipped" in second_run
    assert "stage sft: completed earlier, skipped" in second_run
    assert "stage reward_model (reward_model): resuming" in second_run
    checkpoint = run_dir / "stages" / "reward_model" / "checkpoints" / f"checkpoint-{killed_at}"
    assert f"reward_model: resuming from {checkpoint}" in second_run
    assert sft_model.stat().st_mtime_ns == sft_stamp  # not trained again
    assert (run_dir / "stages" / "data" / "sft.jsonl").stat().st_mtime_ns == data_stamp
    stages = state(run_dir)
    assert stages["reward_model"]["status"] == "completed"
    results = json.loads((run_dir / "stages" / "reward_model" / "eval.json").read_text())
    print(f"tiny pipeline: reward-model held-out accuracy {results['after']['accuracy']:.3f} "
          f"on {results['validation_pairs']} pairs")
    assert results["after"]["accuracy"] >= 0.8

    assert code == 0, out
    assert stages["align"]["status"] == "completed"
    align = [json.loads(x) for x in
             (run_dir / "stages" / "align" / "metrics.jsonl").read_text().splitlines()]
    evals = [m["eval_reward_mean"] for m in align if "eval_reward_mean" in m]
    print("tiny pipeline: RAFT eval reward by iteration", [round(e, 3) for e in evals])
    assert len(evals) >= 2 and evals[-1] > evals[0]


def _logs(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.glob("log-*.txt")))
