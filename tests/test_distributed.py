"""core/distributed.py: the process-group timeout and its one-line message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfx import distributed
from rlhfx.errors import UserError

HERE = Path(__file__).resolve().parent


def test_timeout_comes_from_the_environment_then_the_recipe(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S == 1800
    assert distributed.timeout_seconds(120) == 120
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7.5")
    assert distributed.timeout_seconds(120) == 7.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(UserError, match=distributed.TIMEOUT_ENV):
            distributed.timeout_seconds()


def test_lost_contact_names_the_process_and_drops_gloo_source_locations(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    exc = RuntimeError("[/src/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                       "[127.0.0.1]:123. This is typically caused by a remote worker crashing.")
    message = str(distributed.lost_contact(exc))
    assert message.startswith("process 2 of 4 lost contact with the others")
    assert "Connection closed by peer [127.0.0.1]:123;" in message and "pair.cc" not in message
    assert message.endswith("run the same command again to resume")
    assert distributed.lost_contact(ValueError("bad row")) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.lost_contact(exc) is None  # one process: nothing to lose


@pytest.mark.slow
def test_a_process_that_stops_answering_fails_the_others_after_the_timeout():
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(HERE / "timeout_worker.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "4"}
    start = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    line = next(x for x in result.stdout.splitlines() if x.startswith("after "))
    waited = float(line.split()[1])
    assert 3.5 <= waited < 30  # the 4 s timeout, not the default half hour
    assert "lost contact with the others" in line
    assert time.time() - start < 100  # torchrun then stops the sleeping process too
