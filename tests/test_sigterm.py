"""SIGTERM (preemption) finishes the current iteration, writes its checkpoint and exits 143; the
same command then resumes exactly. A second SIGTERM stops at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfx import stopping
from rlhfx.testing import (
    LENGTH,
    cli_command,
    final_weights,
    run_again,
    same_weights,
    subprocess_env,
)
from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records
from rlhfx.testing import write_algorithm_recipe as write_recipe


@pytest.fixture
def handler():
    restore = stopping.install()
    yield
    restore()


def test_inside_the_loop_the_first_sigterm_waits_and_a_second_stops_at_once(handler):
    with stopping.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # let the handler run
        assert stopping.stop_agreed()
        with pytest.raises(stopping.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert not stopping.stop_agreed()  # the next loop starts clean


def test_outside_the_loop_sigterm_stops_at_once_like_ctrl_c(handler):
    with pytest.raises(stopping.Terminated, match="resume with the same command"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)


@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_exits_143_and_resumes_exactly(rlhfx_cli, tmp_path):
    options = {"iterations": 6, "save_every": 3, "batch_size": 2, "k": 2, "min_new_tokens": 4,
               "max_new_tokens": 4, "learning_rate": 3e-3, "torch_threads": 1}
    recipe = write_recipe(tmp_path, "grpo", options, reward=LENGTH)
    out = tmp_path / "stopped"
    metrics = out / "stages" / "align" / "metrics.jsonl"
    proc = subprocess.Popen(cli_command("run", str(recipe), "-o", str(out)),
                            env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no iteration within 4 minutes"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    text = " ".join(stderr.split())
    assert "stopped by SIGTERM after iteration" in text and "resume with the same command" in text
    assert "Traceback" not in stderr
    done = len(records(out))
    assert 1 <= done < 6
    latest = json.loads((out / "stages" / "align" / "checkpoints" / "latest.json").read_text())
    assert latest["iteration"] == done  # the stopped iteration was checkpointed, off schedule

    run_again(recipe, out)
    assert f"resuming after iteration {done}" in (out / "run.log").read_text()
    reference = run(rlhfx_cli, recipe, tmp_path / "reference")
    got, want = records(out), records(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want, strict=True):
        for key in ("reward_mean", "kl_mean", "train_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    assert same_weights(final_weights(out), final_weights(reference))


def _rank_pid(parent: subprocess.Popen, rank: int) -> int | None:
    """The worker torchrun started for `rank` (found by its parent and environment)."""
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text()
            environ = (child / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent.pid and \
                f"RANK={rank}".encode() in environ:
            return int(child.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_under_torchrun_a_sigterm_to_one_process_stops_both_after_the_same_iteration(
    tmp_path
):
    options = {"iterations": 8, "save_every": 4, "batch_size": 2, "k": 2, "min_new_tokens": 4,
               "max_new_tokens": 4, "learning_rate": 3e-3, "torch_threads": 1}
    recipe = write_recipe(tmp_path, "grpo", options, reward=LENGTH)
    out = tmp_path / "run"
    metrics = out / "stages" / "align" / "metrics.jsonl"
    command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2",
               "--standalone", "-m", "rlhfx.cli", "run", str(recipe), "-o", str(out)]
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no iteration within 5 minutes"
            time.sleep(0.05)
        worker = _rank_pid(proc, 1)
        assert worker is not None
        os.kill(worker, signal.SIGTERM)  # the other process is not signalled
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert stderr.count("stopped by SIGTERM after iteration") == 2, stderr[-4000:]
    done = len(records(out))
    assert 1 <= done < 8
    latest = json.loads((out / "stages" / "align" / "checkpoints" / "latest.json").read_text())
    assert latest["iteration"] == done
    assert "lost contact" not in stderr
