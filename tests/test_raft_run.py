"""RAFT end to end on the built-in tiny policy: the reward rises, artifacts are complete, a run
killed with SIGKILL resumes, LoRA resumes exactly and merges, and two processes under torchrun
agree on one selection while only the main one writes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from rich.console import Console

from rlhfx.recipe import load_recipe
from rlhfx.runner import run_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

SMALL = {
    "iterations": 3,
    "batch_size": 8,
    "k": 2,
    "min_new_tokens": 6,
    "max_new_tokens": 10,
    "epochs": 1,
    "learning_rate": 1e-3,
    "train_batch_size": 2,
    "eval_max_prompts": 8,
    "torch_threads": 1,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


PATTERN_REWARD = ['name = "pattern_penalty"',
                  'rules = [{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }]']


def write_recipe(path: Path, seed: int = 3, reward: list[str] | None = None,
                 **algorithm: Any) -> Path:
    settings = {**SMALL, **algorithm}
    lines = [
        "[run]", f"seed = {seed}", "",
        "[stages.align]",
        'policy = "builtin:tiny-gpt-neo"',
        'prompts = "builtin:tiny-prompts"',
        'eval_prompts = "builtin:tiny-eval-prompts"',
        "",
        "[stages.align.algorithm]",
        'name = "raft"',
        *(f"{k} = {_toml_value(v)}" for k, v in settings.items()),
        "",
        "[stages.align.reward]",
        *(reward or PATTERN_REWARD),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_in_process(recipe: Path, out: Path) -> str:
    console = Console(file=io.StringIO(), width=200)
    run_recipe(load_recipe(recipe), console=console, output_dir=out)
    return console.file.getvalue()  # type: ignore[attr-defined]


def iteration_rows(out: Path, iteration: int = 1) -> list[dict[str, Any]]:
    """Every sample the align stage wrote for one iteration."""
    folder = out / "stages" / "align" / "iterations" / f"iter-{iteration:04d}"
    return [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]


def assert_best_answers_trained(scored: list[dict[str, Any]]) -> None:
    """RAFT (the local ranker) kept an answer with the best reward of each prompt."""
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for r in scored:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for group in by_prompt.values():
        best = max(r["reward"] for r in group)
        assert any(r["trained"] for r in group if r["reward"] == best)


def metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "stages" / "align" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_loadable(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.model_type == "gpt_neo" and len(tok) == model.config.vocab_size


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhfx.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


# ------------------------------------------------------------------ the README's main job
@pytest.mark.slow
def test_tiny_recipe_reward_rises_and_leaves_every_artifact(tmp_path):
    text = (RECIPES / "tiny_raft.toml").read_text(encoding="utf-8")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(text.replace("iterations = 6", "iterations = 5"), encoding="utf-8")
    log = run_in_process(recipe, tmp_path / "run")

    records = metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5]
    first, last = records[1], records[-1]
    # the policy learns to write words: a clear rise, far beyond sampling noise (std ~2)
    assert last["reward_mean"] > first["reward_mean"] + 2.0, records
    assert last["eval_reward_mean"] > records[0]["eval_reward_mean"] + 2.0
    assert last["discarded_rate"] < first["discarded_rate"]  # it learned to avoid `#`
    for r in records[1:]:
        assert r["num_trained"] == 32 and r["num_samples"] == 256
        assert r["trained_reward_mean"] >= r["reward_mean"]
        for key in ("reward_std", "eval_reward_std", "distinct_1",
                    "distinct_2", "changed_rate", "response_tokens_mean", "train_loss",
                    "seconds_generate", "seconds_score", "seconds_update", "seconds_eval"):
            assert r[key] is not None, key

    stage = tmp_path / "run" / "stages" / "align"
    for it in range(1, 6):
        folder = stage / "iterations" / f"iter-{it:04d}"
        selected = [json.loads(x) for x in (folder / "trained.jsonl").read_text().splitlines()]
        samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        assert len(selected) == 32 and len(samples) == 256
        assert sum(s["trained"] for s in samples) == 32
        assert all(not s["discarded"] for s in samples if s["trained"])
        assert {"reward", "changed", "discarded", "raw_response", "response"} <= set(samples[0])
    assert (stage / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in (stage / "checkpoints").glob("iter-*")] == ["iter-0005"]
    assert_loadable(stage / "model")
    assert "iteration 5/5 | reward" in log


# ------------------------------------------------------------------ kill -9, then resume
@pytest.mark.slow
def test_sigkill_then_same_command_resumes(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", iterations=6)
    out = tmp_path / "run"
    stage = out / "stages" / "align"
    latest = stage / "checkpoints" / "latest.json"
    command = cli("run", str(recipe), "-o", str(out))
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and (stage / "iterations" / "iter-0002").exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9, mid iteration 2 or later
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = json.loads(latest.read_text())["iteration"]
    assert 1 <= done_before < 6
    before = {r["step"]: r for r in metrics(out) if r["step"] <= done_before}
    state = json.loads((out / "run_state.json").read_text())
    assert state["stages"]["align"]["status"] == "running"

    result = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"resuming after iteration {done_before}" in result.stderr
    records = metrics(out)
    assert [r["step"] for r in records] == list(range(7))  # each step once, none lost
    for step, record in before.items():
        assert records[step] == record  # completed iterations were kept, not redone
    for it in range(1, 7):
        assert (stage / "iterations" / f"iter-{it:04d}" / "trained.jsonl").exists()
    assert not [p for p in (stage / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_loadable(stage / "model")
    state = json.loads((out / "run_state.json").read_text())
    assert state["stages"]["align"]["status"] == "completed"


# ------------------------------------------------------------------ LoRA: exact resume, merge
@pytest.mark.slow
def test_lora_resumes_exactly_and_saves_a_merged_model(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", iterations=2, keep_checkpoints=2,
                          lora={"r": 4, "alpha": 8, "dropout": 0.0}, learning_rate=1e-2)
    out = tmp_path / "run"
    run_in_process(recipe, out)
    stage = out / "stages" / "align"
    original = metrics(out)
    from rlhfx.alignment.checkpoints import Checkpoints

    saved = Checkpoints(stage / "checkpoints").load_algorithm_state(
        stage / "checkpoints" / "iter-0001")
    assert saved["policy"] and all("lora_" in name for name in saved["policy"])  # adapters only
    assert not (stage / "model" / "adapter_config.json").exists()  # merged
    assert_loadable(stage / "model")

    # Pretend the run died after iteration 1: point latest.json back, mark the stage running.
    (stage / "checkpoints" / "latest.json").write_text(
        json.dumps({"iteration": 1, "dir": "iter-0001"}))
    state_file = out / "run_state.json"
    state = json.loads(state_file.read_text())
    state["stages"]["align"]["status"] = "running"
    state_file.write_text(json.dumps(state))
    log = run_in_process(recipe, out)
    assert "resuming after iteration 1" in log
    resumed = metrics(out)
    assert [r["step"] for r in resumed] == [0, 1, 2]
    assert resumed[1] == original[1]

    def same(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if not k.startswith("seconds") and k != "time"}

    assert same(resumed[2]) == same(original[2])  # the redone iteration is the same one


# ------------------------------------------------------------------ two processes
@pytest.mark.slow
def test_two_processes_under_torchrun(tmp_path):
    # The reward z-scores with running statistics: they must cover both processes' samples.
    running = ['name = "weighted"', 'terms = [{ source = { name = "pattern_penalty", rules = '
               '[{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }] }, normalize = "running" }]']
    recipe = write_recipe(tmp_path / "r.toml", iterations=2, k=2, batch_size=8, reward=running)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "rlhfx.cli", "run", str(recipe), "-o", str(out)]
    result = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es)" in result.stderr
    assert result.stdout.count("run complete") == 1  # only the main process reports
    records = metrics(out)
    assert [r["step"] for r in records] == [0, 1, 2]  # written once, by the main process
    stage = out / "stages" / "align"
    for it in (1, 2):
        samples = (stage / "iterations" / f"iter-{it:04d}" / "samples.jsonl").read_text()
        rows = [json.loads(x) for x in samples.splitlines()]
        # both shards gathered: every prompt of the batch with its k samples
        assert sorted((r["prompt_id"], r["sample"]) for r in rows) == [
            (p, s) for p in range(8) for s in range(2)
        ]
        selected = (stage / "iterations" / f"iter-{it:04d}" / "trained.jsonl").read_text()
        assert len(selected.splitlines()) == records[it]["num_trained"]
        # 8 selected, micro-batch 2, 1 epoch: 4 steps alone, 2 per process data-parallel
        assert records[it]["raft/train_steps"] == 2
    assert_loadable(stage / "model")

    import re
    import statistics

    raw = [float(len(re.findall("[A-Za-z]{3,}", r["response"])))  # penalty -1 per word
           for it in (1, 2)
           for r in map(json.loads, (stage / "iterations" / f"iter-{it:04d}" / "samples.jsonl")
                        .read_text().splitlines())
           if not r["discarded"]]
    latest = json.loads((stage / "checkpoints" / "latest.json").read_text())
    state = json.loads((stage / "checkpoints" / latest["dir"] / "loop.json").read_text())
    n, mean, m2 = state["reward_state"]["running"][0]
    assert n == len(raw)  # not just the main process's half
    assert mean == pytest.approx(statistics.fmean(raw))
    assert m2 / (n - 1) == pytest.approx(statistics.variance(raw))


# ------------------------------------------------------------------ top ranker, empty selections
def test_top_ranker_samples_b_times_k_prompts_once_each(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", iterations=1, batch_size=4, k=3, ranker="top",
                          eval_every=0, max_prompt_tokens=15)
    log = run_in_process(recipe, tmp_path / "run")
    assert "skipped" in log and "prompts over 15 tokens" in log
    folder = tmp_path / "run" / "stages" / "align" / "iterations" / "iter-0001"
    rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in rows) == list(range(12))  # 12 prompts, 1 sample each
    assert len((folder / "trained.jsonl").read_text().splitlines()) == 4  # the top 1/k
    top = sorted((r["reward"] for r in rows if r["reward"] is not None), reverse=True)[:4]
    chosen = sorted(r["reward"] for r in rows if r["trained"])
    assert chosen == sorted(top)
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1]  # no eval: no step 0
    from rlhfx.models import load_tokenizer

    tok = load_tokenizer("builtin:tiny-gpt-neo")
    assert max(len(tok(r["prompt"])["input_ids"]) for r in rows) <= 15


def test_iteration_where_everything_is_discarded_trains_on_nothing(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", iterations=1, batch_size=4, k=2)
    text = recipe.read_text().replace(
        "[stages.align.algorithm]",
        'cleaners = [{ name = "discard", patterns = ["."], min_chars = 0 }]\n\n'
        "[stages.align.algorithm]",
    )
    recipe.write_text(text)
    log = run_in_process(recipe, tmp_path / "run")
    record = metrics(tmp_path / "run")[-1]
    assert record["discarded_rate"] == 1.0 and record["num_trained"] == 0
    assert record["raft/train_steps"] == 0 and record["train_loss"] is None
    assert record["reward_mean"] is None
    assert "nothing to train on" in log
    assert_loadable(tmp_path / "run" / "stages" / "align" / "model")


def test_end_of_turn_weight_reaches_the_update(tmp_path):
    """The same samples (same seed, first iteration) trained with `end_of_turn_weight = 5`:
    the answers kept that ended (at the stop string "k", EOS appended) weigh more in the
    loss, so it is higher than with the plain loss; the samples themselves do not change."""
    losses, kept = [], []
    for weight in (1.0, 5.0):
        out = tmp_path / f"w{weight:g}"
        recipe = write_recipe(tmp_path / f"w{weight:g}.toml", iterations=1, eval_every=0,
                              end_of_turn_weight=weight, stop_strings=["k"])
        run_in_process(recipe, out)
        losses.append(metrics(out)[-1]["train_loss"])
        kept.append([r for r in iteration_rows(out) if r["trained"]])
    assert kept[0] == kept[1]
    assert any(r["finished"] for r in kept[0])  # EOS targets to weigh
    assert losses[1] > losses[0] * 1.05


def test_unfinished_answers_lose_the_penalty_and_finished_ones_keep_their_reward(tmp_path):
    """`unfinished_penalty` lowers the training reward of answers cut at the length limit (a
    stop string at "k" makes about half of the tiny policy's answers end by themselves)."""
    import re

    recipe = write_recipe(tmp_path / "r.toml", iterations=1, min_new_tokens=1,
                          max_new_tokens=8, unfinished_penalty=5.0, eval_every=0,
                          stop_strings=["k"])
    run_in_process(recipe, tmp_path / "run")
    scored = [s for s in iteration_rows(tmp_path / "run") if s["reward"] is not None]
    assert {s["finished"] for s in scored} == {True, False}
    for s in scored:
        words = len(re.findall(r"[A-Za-z]{3,}", s["response"]))
        assert s["reward"] == words - (0 if s["finished"] else 5.0), s
        assert ("unfinished_penalty" in s) == (not s["finished"])
    # the ranker saw the penalised rewards: RAFT keeps finished answers wherever it can
    trained = [s for s in scored if s["trained"]]
    assert sum(s["finished"] for s in trained) / len(trained) > (
        sum(s["finished"] for s in scored) / len(scored))
