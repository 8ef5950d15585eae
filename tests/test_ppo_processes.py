"""PPO as real processes: resumed after kill -9, and run by torchrun with two CPU workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.runs import kill_after_records, records, run_again, subprocess_env

RESUMABLE = dict(iterations=6, batch_size=8, mini_batch_size=4, ppo_epochs=2, learning_rate=1e-3,
                 min_new_tokens=8, max_new_tokens=11, save_every=1)


def write_recipe(tmp_path: Path, algorithm: dict) -> Path:
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in algorithm.items())
    path = tmp_path / "recipe.toml"
    path.write_text(
        '[run]\nseed = 3\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
        'prompts = "builtin:tiny-prompts"\n'
        'reward = { name = "length", unit = "chars" }\n'
        f'algorithm = {{ name = "ppo", {options} }}\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(rlhfx_cli, tmp_path):
    recipe = write_recipe(tmp_path, RESUMABLE)
    killed = tmp_path / "killed"
    done_before = kill_after_records(recipe, killed, after_records=3)
    assert 3 <= done_before < 6
    assert not (killed / "stages" / "align" / "model").exists()

    run_again(recipe, killed)
    assert "resuming after iteration" in (killed / "run.log").read_text()

    # The same recipe without a kill, in this process: identical numbers step by step,
    # because every step reseeds from (seed, step) and the checkpoint holds the rest.
    reference = tmp_path / "reference"
    result = rlhfx_cli("run", str(recipe), "-o", str(reference))
    assert result.exit_code == 0, result.output
    got, want = records(killed), records(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want, strict=True):
        for key in ("reward_mean", "kl_mean", "ppo/loss/total", "ppo/kl_coef"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert (killed / "stages" / "align" / "model" / "config.json").exists()
    assert len(list((killed / "stages" / "align" / "checkpoints").glob("iter-*"))) == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_two_processes_under_torchrun(tmp_path):
    """Two CPU workers; responses of 1-4 tokens with a 3-token minimum, so some steps leave one
    worker with nothing to train on while the other trains (DDP must not hang)."""
    recipe = write_recipe(tmp_path, {
        **RESUMABLE, "iterations": 4, "batch_size": 4, "mini_batch_size": 2, "save_every": 2,
        "min_new_tokens": 1, "max_new_tokens": 4, "min_response_tokens": 3,
    })
    out = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "rlhfx.cli",
         "run", str(recipe), "-o", str(out)],
        env=subprocess_env(), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    log = (out / "run.log").read_text()
    assert "2 process(es)" in log
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]  # one record per step: the main process
    assert all(r["num_samples"] == 4 for r in recs)
    assert any(r["ppo/idle_minibatches"] > 0 and r["ppo/kept"] > 0 for r in recs)
    rows = (out / "stages" / "align" / "iterations" / "iter-0001" / "samples.jsonl"
            ).read_text().splitlines()
    assert len(rows) == 4 and len({json.loads(r)["prompt"] for r in rows}) == 4
    assert (out / "stages" / "align" / "model" / "config.json").exists()
