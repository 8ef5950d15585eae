"""`rlhfx eval` on tiny models with a rule judge whose verdict is known in advance."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = "builtin:tiny-gpt-neo"
LENGTH_JUDGE = '{ name = "length", unit = "chars" }'


@pytest.fixture(scope="module")
def policy_and_tokenizer():
    from rlhfx.models import load_causal_lm, load_tokenizer

    return load_causal_lm(TINY), load_tokenizer(TINY)


@pytest.fixture(scope="module")
def silent_model(tmp_path_factory) -> Path:
    """The tiny model changed so that its first token is always EOS: every answer is empty,
    so the default cleaners discard it and it can never beat a scored answer."""
    import torch

    from rlhfx.models import load_causal_lm, load_tokenizer

    out = tmp_path_factory.mktemp("silent")
    model, tokenizer = load_causal_lm(TINY), load_tokenizer(TINY)
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        model.transformer.ln_f.weight.zero_()  # the last hidden state becomes the bias ...
        model.transformer.ln_f.bias.copy_(100 * emb[eos] / emb[eos].norm())  # ... EOS's row
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_win_rate_of_a_model_over_one_that_never_answers(rlhfx_cli, silent_model, tmp_path):
    out = tmp_path / "eval"
    result = rlhfx_cli("eval", TINY, str(silent_model), "--judge", LENGTH_JUDGE,
                       "--max-prompts", "6", "--max-new-tokens", "8", "--temperature", "0",
                       "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    tiny, silent = summary["models"]
    assert silent["discarded"] == 6 and silent["mean_reward"] is None
    (c,) = summary["comparisons"]
    # Every answer of the tiny model that the cleaners keep wins; the others tie.
    assert c["losses"] == 0 and c["wins"] == tiny["scored"] >= 3 and c["n"] == 6
    assert c["ties"] == tiny["discarded"]
    assert c["win_rate"] == pytest.approx((c["wins"] + 0.5 * c["ties"]) / 6)
    assert c["sign_test_p"] == pytest.approx(2 / 2 ** c["wins"])
    # The length judge pays for length and nothing else; the silent model says nothing.
    assert c["mean_length_b"] == silent["mean_length"] == 0 < c["mean_length_a"]
    assert c["length_coefficient"] > 0
    assert c["lc_ci_low"] <= c["lc_win_rate"] <= c["lc_ci_high"]
    full = json.loads((out / "eval.json").read_text())
    assert len(full["rows"]) == 6 and full["judge"] == {"name": "length", "unit": "chars"}
    first = full["rows"][0]["answers"]
    assert first[str(silent_model)]["discarded"].startswith("discard: shorter than")
    # The silent model ends every answer itself (EOS first); the share is counted per model.
    assert silent["finished"] == 6 and silent["finished_rate"] == 1.0
    ended = [row["answers"][TINY]["finished"] for row in full["rows"]]
    assert tiny["finished"] == sum(ended) and tiny["finished_rate"] == sum(ended) / 6
    html = (out / "eval.html").read_text()
    assert (f'<td class="num">{c["lc_win_rate"]:.3f} ({c["lc_ci_low"]:.3f} – '
            f'{c["lc_ci_high"]:.3f})</td></tr>') in html
    assert html.count('<tr><td class="text"><div class="turn role-user">') == 6
    assert "###Human" not in html  # prompts are shown as conversations


def test_same_model_twice_ties_everywhere_and_judge_from_a_recipe(rlhfx_cli, tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny_raft.toml"
    result = rlhfx_cli("eval", TINY, TINY, "--judge-from", str(recipe), "--max-prompts", "3",
                       "--max-new-tokens", "6", "--temperature", "0", "-o", str(tmp_path),
                       "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["judge"]["name"] == "pattern_penalty"  # the recipe's align reward
    assert [m["label"] for m in summary["models"]] == [TINY, f"{TINY} #2"]
    (c,) = summary["comparisons"]
    assert (c["ties"], c["win_rate"], c["ci_low"], c["ci_high"]) == (3, 0.5, 0.5, 0.5)


@pytest.mark.parametrize(("args", "message"), [
    (["--judge", "lenght"], "unknown reward source 'lenght' (did you mean 'length'?)"),
    (["--judge", "{ name = 'length', unit = 'bytes' }"], "judge: reward_source 'length': unit"),
    (["--judge", "{ name = "], "--judge: not a reward source name or an inline TOML table"),
    ([], "give exactly one of --judge TOML or --judge-from RUN_OR_RECIPE"),
    (["--judge-from", "nowhere.toml"], "--judge-from nowhere.toml: no recipe file there"),
])
def test_judge_mistakes_are_one_line_errors(rlhfx_cli, args, message):
    result = rlhfx_cli("eval", TINY, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_run_directory_without_an_aligned_model(rlhfx_cli, tmp_path):
    (tmp_path / "run_state.json").write_text(json.dumps(
        {"stages": {"sft": {"status": "completed", "outputs": {"model": "stages/sft/model"}}}}))
    (tmp_path / "recipe.toml").write_text('[stages.sft]\nmodel = "x"\n')
    result = rlhfx_cli("eval", str(tmp_path), "--judge", "length")
    assert result.exit_code == 2
    assert "no completed alignment stage with a model (completed stages: sft)" in result.output


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_two_processes_under_torchrun_give_the_single_process_answers(rlhfx_cli, tmp_path):
    """Greedy answers do not depend on how the prompts were split (5 prompts: shares 3 and 2)."""
    args = ["eval", TINY, "--judge", LENGTH_JUDGE, "--max-prompts", "5", "--max-new-tokens",
            "6", "--temperature", "0", "--device", "cpu"]
    single = rlhfx_cli(*args, "-o", str(tmp_path / "one"))
    assert single.exit_code == 0, single.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFX_")}
    env["OMP_NUM_THREADS"] = "1"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--standalone", "-m", "rlhfx.cli",
         *args, "-o", str(tmp_path / "two"), "--json"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout)["num_prompts"] == 5  # printed once, by the main process
    one = json.loads((tmp_path / "one" / "eval.json").read_text())["rows"]
    two = json.loads((tmp_path / "two" / "eval.json").read_text())["rows"]
    assert two == one


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_engine_without_vllm_is_a_one_line_error(rlhfx_cli, tmp_path):
    result = rlhfx_cli("eval", TINY, "--judge", "length", "--engine", "vllm",
                       "-o", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "--engine: rollout_engine 'vllm': vLLM is not installed: pip install 'rlhfx[vllm]'" \
        in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


MADE: list[FakeEngine] = []


class FakeEngine:
    """Takes a model whose config says the same `hidden_size`; records what it was asked."""

    owns_weights = True

    def __init__(self, model):
        self.size, self.synced, self.closed = model.config.hidden_size, [], False
        MADE.append(self)

    def can_take(self, model, tokenizer):
        return model.config.hidden_size == self.size

    def sync_weights(self, model):
        self.synced.append(model)

    def close(self):
        self.closed = True


def test_one_engine_serves_models_it_can_take_and_is_closed_when_replaced(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from rlhfx.plugins.evaluate.run import Engines, EvalSettings

    monkeypatch.setattr("rlhfx.rollouts.make_engine",
                        lambda settings, model, tok, **kw: FakeEngine(model))
    MADE.clear()
    engines = Engines(EvalSettings(), tmp_path)
    models = [SimpleNamespace(config=SimpleNamespace(hidden_size=h)) for h in (64, 64, 32)]
    used = [engines.for_model(m, None) for m in models]
    first, second = MADE
    assert used == [first, first, second]
    assert first.synced == [models[1]] and first.closed and not second.closed
    engines.release()  # it holds its own weights: kept for a next model
    assert not second.closed
    engines.close()
    assert second.closed


def test_an_engine_on_the_model_object_is_let_go_with_the_model(policy_and_tokenizer,
                                                                 tmp_path):
    from rlhfx.plugins.evaluate.run import Engines, EvalSettings

    model, tok = policy_and_tokenizer
    engines = Engines(EvalSettings(), tmp_path)
    first = engines.for_model(model, tok)  # the hf engine: generate on the model itself
    assert not first.owns_weights
    engines.release()
    assert engines.engine is None  # nothing keeps the model alive once the caller drops it
    assert engines.for_model(model, tok) is not first


def test_an_answer_ended_by_itself_or_at_the_length_limit():
    from rlhfx.plugins.evaluate.run import ended_by_itself
    from rlhfx.rollouts import Rollout

    def answer(ids: list[int], text: str = "an answer") -> Rollout:
        return Rollout(prompt_id=0, prompt="p", prompt_ids=[1], response_ids=ids, text=text)

    eos, stops = [2], ["###Human"]
    assert ended_by_itself(answer([5, 6, 2]), 4, eos, stops)  # EOS before the limit
    assert ended_by_itself(answer([5, 6, 7, 2]), 4, eos, stops)  # EOS as the last token
    assert ended_by_itself(answer([5, 6]), 4, eos, stops)  # a stop string ended it early
    assert ended_by_itself(answer([5, 6, 7, 8], "so ###Human"), 4, eos, stops)
    assert not ended_by_itself(answer([5, 6, 7, 8]), 4, eos, stops)  # cut at the limit
