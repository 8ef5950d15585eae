"""Episode runs on the built-in tiny policy: the guess game's reward rises under every
algorithm, each trains on episodes, samples and eval files show the turns, a run
killed with SIGKILL resumes exactly, two processes agree, and an algorithm that does not
declare `trains_episodes` is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfx import hookimpl
from rlhfx.plugins.report import write_report
from rlhfx.testing import (
    final_weights,
    kill_after_records,
    rising,
    run_again,
    same_weights,
    subprocess_env,
    toml_value,
)
from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

GAME = {"name": "guess_number", "choices": ["bike", "book", "cook", "desk"],
        "valid_guess_reward": 0.2, "max_turns": 2, "max_episode_tokens": 40}
PROMPTS = "pkg:rlhfx.plugins.environments/data/guess_words.jsonl"


def episode_recipe(tmp_path: Path, algorithm: dict, environment: dict | None = None,
                   extra: str = "") -> Path:
    env = toml_value(environment or GAME)
    options = {"iterations": 2, "batch_size": 2, "k": 2, "max_new_tokens": 6,
               "torch_threads": 1, **algorithm}
    algo = toml_value({k: v for k, v in options.items() if v is not None})  # None: leave out
    path = tmp_path / "recipe.toml"
    path.write_text(
        f'[run]\nseed = 5\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
        f'prompts = "{PROMPTS}"\nreward = "none"\ncleaners = [{{ name = "strip" }}]\n'
        f"environment = {env}\nalgorithm = {algo}\n{extra}", encoding="utf-8")
    return path


def samples(out: Path, iteration: int, name: str = "samples.jsonl") -> list[dict]:
    folder = out / "stages" / "align" / "iterations" / f"iter-{iteration:04d}"
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


@pytest.mark.slow
def test_tiny_guess_recipe_raises_the_reward(rlhfx_cli, tmp_path):
    out = run(rlhfx_cli, RECIPES / "tiny_guess.toml", tmp_path / "run")
    recs = [r for r in records(out) if r["step"] > 0]
    assert len(recs) == 20
    first, last = rising([r["reward_mean"] for r in recs])
    assert last > first + 0.15, (first, last)
    done_first, done_last = rising([r["episode_done_rate"] for r in recs])
    assert done_last > done_first, (done_first, done_last)
    rows = samples(out, 20)
    assert len(rows) == 32 and all(r["turns"][0]["role"] == "assistant" for r in rows)
    assert {r["episode_end"] for r in rows} <= {"done", "max_turns", "max_tokens"}


#: Every other algorithm on the same game (20 iterations, 32 episodes each), each with the
#: learning rate (and PPO its KL) that the game needs. Measured, seed 3, mean reward of
#: iterations 1-5 -> 16-20: RAFT 0.04 -> 0.55, RLOO 0.09 -> 0.27, REINFORCE++ 0.10 -> 0.43,
#: online DPO 0.10 -> 0.46, PPO 0.11 -> 0.48 (GRPO, the recipe itself: above).
SHARED_GUESS = "iterations = 20, max_new_tokens = 10, inference_batch_size = 32"
GUESS_ALGORITHMS = {
    "raft": "batch_size = 4, k = 8, epochs = 2, learning_rate = 3e-3, train_batch_size = 4, "
            "min_new_tokens = 1",
    "rloo": "batch_size = 4, k = 8, mini_batch_size = 16, epochs = 2, learning_rate = 1.5e-3",
    "reinforce_pp": "batch_size = 4, k = 8, mini_batch_size = 16, epochs = 2, "
                    "learning_rate = 3e-3",
    "online_dpo": "batch_size = 4, k = 8, learning_rate = 5e-3",
    "ppo": "batch_size = 32, mini_batch_size = 8, ppo_epochs = 4, learning_rate = 1e-2, "
           "init_kl_coef = 0.0, adap_kl_ctrl = false, min_new_tokens = 1",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GUESS_ALGORITHMS))
def test_each_algorithm_raises_the_reward_of_the_guess_game(rlhfx_cli, tmp_path, name):
    out = tmp_path / "run"
    algorithm = f'{{ name = "{name}", {SHARED_GUESS}, {GUESS_ALGORITHMS[name]} }}'
    result = rlhfx_cli("run", str(RECIPES / "tiny_guess.toml"), "-o", str(out),
                       "--set", f"stages.align.algorithm={algorithm}")
    assert result.exit_code == 0, result.output
    recs = [r for r in records(out) if r["step"] > 0]
    first, last = rising([r["reward_mean"] for r in recs])
    assert len(recs) == 20 and last > first + 0.1, (first, last)
    trained = [r for r in samples(out, 20) if r["trained"]]
    assert trained and all(r["turns"] for r in trained)


@pytest.mark.parametrize("algorithm", [
    {"name": "grpo", "beta": 0.04},
    {"name": "rloo"},
    {"name": "reinforce_pp"},
    {"name": "online_dpo", "beta": 0.1},
    {"name": "ppo", "k": None, "batch_size": 4, "mini_batch_size": 2, "min_new_tokens": 2},
    {"name": "raft", "batch_size": 2, "k": 2, "train_batch_size": 2, "min_new_tokens": 2},
])
def test_each_episode_algorithm_trains_on_episodes(rlhfx_cli, tmp_path, algorithm):
    recipe = episode_recipe(tmp_path, {**algorithm, "iterations": 1},
                            extra=f'eval_prompts = "{PROMPTS}"\n')
    out = run(rlhfx_cli, recipe, tmp_path / "run")
    rec = next(r for r in records(out) if r["step"] == 1)
    assert rec["num_samples"] == 4 and 1 <= rec["episode_turns_mean"] <= 2
    assert "tool_calls" in rec and "eval_reward_mean" in rec
    for row in samples(out, 1):
        assert row["turns"] and row["response_tokens"] <= GAME["max_episode_tokens"]
        model_turns = [t for t in row["turns"] if t["role"] == "assistant"]
        assert len(model_turns) == row["episode_model_turns"]
    evals = samples(out, 1, "eval.jsonl")
    assert len(evals) == 4 and all(e["turns"] for e in evals)
    # the report shows each episode turn by turn: the model's replies and the game's answers
    html = write_report(out).read_text(encoding="utf-8")
    assert html.count('class="turn role-assistant"') >= len(samples(out, 1))
    assert 'class="turn role-user"' in html and "episode ended:" in html


class TextOnlyPlugin:
    """A plugin (a class works as one) whose algorithm fine-tunes on text and does not declare
    `trains_episodes`."""

    @staticmethod
    @hookimpl
    def rlhfx_register_algorithms(register):
        from rlhfx.plugins.raft import Raft

        register(type("TextOnly", (Raft,), {"name": "text_only", "trains_episodes": False}))


def test_an_algorithm_without_episodes_is_refused(rlhfx_plugins, rlhfx_cli, tmp_path):
    rlhfx_plugins(TextOnlyPlugin)
    recipe = episode_recipe(tmp_path, {"name": "text_only", "min_new_tokens": 6})
    for command in (("validate", str(recipe)), ("run", str(recipe), "-o", str(tmp_path))):
        result = rlhfx_cli(*command)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "stages.align: the algorithm 'text_only' does not train on multi-turn " in text
        assert "use one that does: grpo, online_dpo, ppo, raft, reinforce_pp, rloo" in text
        assert "Traceback" not in result.output


@pytest.mark.slow
def test_episode_run_resumes_exactly_after_kill(rlhfx_cli, tmp_path):
    recipe = episode_recipe(tmp_path, {"name": "grpo", "iterations": 6, "beta": 0.04,
                                       "save_every": 1})
    killed = tmp_path / "killed"
    assert 3 <= kill_after_records(recipe, killed) < 6
    run_again(recipe, killed)
    assert "resuming after iteration" in (killed / "run.log").read_text()
    reference = run(rlhfx_cli, recipe, tmp_path / "reference")
    got, want = records(killed), records(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want, strict=True):
        for key in ("reward_mean", "kl_mean", "train_loss", "episode_turns_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    for it in (4, 6):
        assert [r["turns"] for r in samples(killed, it)] == [
            r["turns"] for r in samples(reference, it)]
    assert same_weights(final_weights(killed), final_weights(reference))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
@pytest.mark.parametrize("algorithm", [
    {"name": "grpo", "batch_size": 3, "mini_batch_size": 2},
    {"name": "raft", "batch_size": 3, "train_batch_size": 1, "min_new_tokens": 6},
])
def test_episodes_on_two_processes(tmp_path, algorithm):
    """Three prompts x 2 episodes on two workers (one holds 4 episodes, the other 2): the
    samples file holds all six, and both workers stay in step through the updates (RAFT's
    selection, made on the main process, reaches the other with the episodes' token ids)."""
    recipe = episode_recipe(tmp_path, algorithm)
    out = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--standalone", "-m", "rlhfx.cli",
         "run", str(recipe), "-o", str(out)],
        env=subprocess_env(), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in (out / "run.log").read_text()
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    rows = samples(out, 2)
    assert sorted((r["prompt_id"], r["sample"]) for r in rows) == [
        (p, j) for p in range(3) for j in range(2)]
    assert all(r["turns"] for r in rows) and any(r["trained"] for r in rows)


def test_rlhfx_eval_plays_episodes_and_keeps_their_turns(rlhfx_cli, tmp_path):
    game = ('{ name = "guess_number", choices = ["bike", "book", "cook", "desk"], '
            'valid_guess_reward = 0.2, max_turns = 2, max_episode_tokens = 40 }')
    result = rlhfx_cli("eval", "builtin:tiny-gpt-neo", "--prompts", PROMPTS, "--judge", "none",
                       "--environment", game, "--max-new-tokens", "6", "-o", str(tmp_path),
                       "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (model,) = summary["models"]
    assert model["scored"] == 4 and 0.0 <= model["mean_reward"] <= 2 * 0.2 + 1.0
    saved = json.loads((tmp_path / "eval.json").read_text())
    for row in saved["rows"]:
        (answer,) = row["answers"].values()
        assert answer["turns"][0]["role"] == "assistant"
        assert answer["episode_end"] in {"done", "max_turns", "max_tokens"}
    # the side-by-side page shows each answer turn by turn, and how its episode ended
    page = (tmp_path / "eval.html").read_text(encoding="utf-8")
    assert page.count('class="turn role-assistant"') >= 4 and "episode ended:" in page
    bad = rlhfx_cli("eval", "builtin:tiny-gpt-neo", "--judge", "none", "--environment",
                    "guess_numbr", "-o", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "--environment: unknown environment 'guess_numbr'" in (
        bad.output)
