"""One run per output directory: a second real process is refused at once naming the first;
reading the directory still works; the lock goes with the process, kill -9 included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from rlhfx.errors import UserError
from rlhfx.run_lock import LOCK_FILE, RunLock
from rlhfx.testing import LENGTH, cli_command, subprocess_env
from rlhfx.testing import write_algorithm_recipe as write_recipe


def test_a_held_directory_is_refused_naming_the_holder_and_freed_on_release(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(UserError) as refused:
        RunLock(tmp_path).acquire()
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"pid {os.getpid()} on {socket.gethostname()}, started " in message
    first.release()
    RunLock(tmp_path).acquire().release()  # nothing stale left


@pytest.mark.slow
def test_a_second_process_on_a_running_directory_is_refused_and_reading_it_works(
    rlhfx_cli, tmp_path
):
    options = {"iterations": 40, "batch_size": 2, "k": 2, "min_new_tokens": 4,
               "max_new_tokens": 4, "torch_threads": 1}
    recipe = write_recipe(tmp_path, "grpo", options, reward=LENGTH)
    out = tmp_path / "run"
    metrics = out / "stages" / "align" / "metrics.jsonl"
    first = subprocess.Popen(cli_command("run", str(recipe), "-o", str(out)),
                             env=subprocess_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert first.poll() is None, "the first run ended early"
            assert time.time() < deadline, "the first run wrote no metrics"
            time.sleep(0.1)
        started = time.time()
        second = subprocess.run(cli_command("run", str(recipe), "-o", str(out)),
                                env=subprocess_env(), capture_output=True, text=True,
                                timeout=120)
        assert time.time() - started < 30  # refused before any model is loaded
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        text = lines[0]
        assert "another run is using this directory" in text
        assert f"pid {first.pid} on {socket.gethostname()}, started " in text
        assert first.poll() is None  # the first run goes on
        # reading the directory in use still works
        result = rlhfx_cli("report", str(out))
        assert result.exit_code == 0, result.output
        assert (out / "report.html").exists()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    holder = json.loads((out / LOCK_FILE).read_text())
    assert holder["pid"] == first.pid
    RunLock(out).acquire().release()  # kill -9 left no stale lock
