"""The `openenv` environment against a real OpenEnv server started here on 127.0.0.1 (skipped
when OpenEnv is not installed: `pip install 'rlhfx[openenv]'`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fixtures.tiny import train_tokenizer

pytest.importorskip("openenv")

from rlhfx.episodes import DONE, MAX_TURNS, run_episodes
from rlhfx.plugins.environments.openenv_client import OpenEnv, OpenEnvConfig
from rlhfx.rollouts import Rollout, RolloutEngine, SamplingSettings

SERVER = Path(__file__).parent / "openenv_server.py"


@pytest.fixture(scope="module")
def server():
    with socket.socket() as s:  # a free port on the loopback address
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"the OpenEnv server did not start: {proc.stderr.read()[-2000:]}"
                                if proc.poll() is not None else "the server did not start")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class Replies(RolloutEngine):
    """Replies with the next text of each episode's own script."""

    def __init__(self, tokenizer, scripts):
        self.tokenizer, self.scripts, self.turn = tokenizer, scripts, 0

    def generate(self, prompts, sampling, num_samples=1, stop_strings=(), rng=None,
                 progress=None, description="", prompt_ids=None):
        out = []
        live = [i for i, s in enumerate(self.scripts) if len(s) > self.turn]
        for row, episode in enumerate(live if self.turn else range(len(self.scripts))):
            text = self.scripts[episode][self.turn]
            ids = [*self.tokenizer(text, add_special_tokens=False)["input_ids"],
                   self.tokenizer.eos_token_id]
            out.append(Rollout(row, prompts[min(row, len(prompts) - 1)], [], ids, text))
        self.turn += 1
        return out


def test_episodes_against_a_local_server(server):
    tokenizer = train_tokenizer(["count down 3 2 1 good wrong"], vocab_size=270)
    env = OpenEnv(OpenEnvConfig(url=server, observation_field="text", reset_fields=["start"],
                                max_turns=3))
    scripts = [["2", "1"], ["3", "5", "1"]]
    engine = Replies(tokenizer, scripts)
    episodes = run_episodes(engine, tokenizer, env, ["go", "go"], [{"start": 2}, {"start": 3}],
                            SamplingSettings(max_new_tokens=4), where="stages.align.environment")
    first, second = episodes
    assert [t["text"] for t in first.turns] == ["2", "good", "1", "good"]
    assert first.env_reward == 2.0 and first.end == DONE
    assert [t["text"] for t in second.turns] == ["3", "good", "5", "wrong: 5"]
    assert second.env_reward == 1.0 and second.end == DONE
    assert "client" not in first.state and "client" not in second.state  # sessions closed
    # a turn limit closes the session too
    limited = OpenEnv(OpenEnvConfig(url=server, observation_field="text",
                                    reset_fields=["start"], max_turns=1))
    (cut,) = run_episodes(Replies(tokenizer, [["3"]]), tokenizer, limited, ["go"],
                          [{"start": 3}], SamplingSettings(max_new_tokens=4))
    assert cut.end == MAX_TURNS and "client" not in cut.state


def test_a_server_that_is_not_there_is_a_user_error():
    from rlhfx import UserError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = OpenEnv(OpenEnvConfig(url=f"http://127.0.0.1:{port}"))
    with pytest.raises(UserError, match="cannot reach the server"):
        env.reset("p", {}, seed=1)
