"""Turning cleaned text back into the sampled tokens, dropping short responses, prompt order,
and the recipe-level checks of PPO's options."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rlhfx import Sample
from rlhfx.plugins.cleaners import Discard, StopMarkers, Strip
from rlhfx.plugins.ppo.config import PPOConfig
from rlhfx.plugins.ppo.experience import collect, cut_to_clean_text, neutral_generation_config
from rlhfx.plugins.ppo.prompts import step_prompts
from rlhfx.plugins.rewards import LengthConfig, LengthReward


@pytest.fixture(scope="module")
def tokenizer():
    from rlhfx.tiny import tiny_tokenizer

    return tiny_tokenizer("builtin:tiny-gpt-neo")


def _clean(text: str) -> str:
    sample = Sample(0, "p", text)
    from rlhfx.scoring import clean

    clean([sample], [StopMarkers(), Strip(), Discard()])
    return sample.response


def test_cut_stops_where_the_cleaned_text_ends(tokenizer):
    raw = " water the plants every morning. ###Human: and then?"
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    cleaned = _clean(raw)
    assert cleaned == "water the plants every morning."
    cut, how = cut_to_clean_text(tokenizer, ids, raw, cleaned)
    assert how == "cut"
    assert cut == ids[: len(cut)] and len(cut) < len(ids)  # a prefix of the sampled tokens
    text = tokenizer.decode(cut)
    assert text.strip().startswith(cleaned) and "###" not in text


def test_cut_keeps_eos_when_only_whitespace_was_stripped(tokenizer):
    raw = " sleep well.  "
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    cut, how = cut_to_clean_text(tokenizer, ids, raw, _clean(raw))
    assert (cut, how) == (ids, "kept")


def test_cut_retokenizes_text_a_cleaner_rewrote(tokenizer):
    cut, how = cut_to_clean_text(tokenizer, [1, 2, 3], "abc", "something else")
    assert how == "retokenized"
    assert tokenizer.decode(cut) == "something else"


class _FakeModel:
    """Stands in for generate(): hands out fixed responses (as token ids)."""


def test_collect_drops_short_and_discarded_responses(tokenizer, monkeypatch):
    import rlhfx.plugins.ppo.experience as experience
    from rlhfx.rollouts import Rollout

    texts = [" plant them deep in good soil.", " #####", " the", " fine.###Human: more"]

    def fake_generate(model, tok, prompts, sampling, **kwargs):
        out = []
        for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            out.append(Rollout(i, prompt, tok(prompt)["input_ids"], ids, tok.decode(ids)))
        return out

    monkeypatch.setattr(experience, "generate", fake_generate)
    prompts = [f"###Human: q{i} ###Assistant:" for i in range(4)]
    cleaners = [StopMarkers(), Strip(), Discard()]
    reward = LengthReward(LengthConfig(unit="chars"))
    common = dict(batch_size=4, stop_strings=[], rng=random.Random(0))
    exp = collect(None, tokenizer, prompts, cleaners, reward, None, min_response_tokens=2,
                  discarded_score=None, **common)
    # " #####" is stripped to "" and discarded; " the" is one token: too short
    assert exp.kept == [0, 3]
    assert exp.counts["discarded"] == 1 and exp.counts["too_short"] >= 1
    assert exp.scores == [len("plant them deep in good soil."), len("fine.")]
    assert tokenizer.decode(exp.responses[1]).strip() == "fine."
    assert [s.extra.get("dropped") for s in exp.samples][1:3] == ["ppo: too short"] * 2
    # with a score for discarded responses, a discarded one that is long enough trains too
    texts[1] = " a # b c d e"
    exp = collect(None, tokenizer, prompts, cleaners, reward, None, min_response_tokens=2,
                  discarded_score=-3.0, **common)
    assert 1 in exp.kept and exp.scores[exp.kept.index(1)] == -3.0


def test_generation_defaults_that_bend_sampling_are_reset(tokenizer):
    from transformers import GenerationConfig

    class M:
        generation_config = GenerationConfig(min_length=20, repetition_penalty=1.3)

    model = M()
    reset = neutral_generation_config(model, tokenizer)
    assert any(r.startswith("min_length") for r in reset)
    assert any(r.startswith("repetition_penalty") for r in reset)
    assert model.generation_config.min_length in (None, 0)  # unset means off
    assert model.generation_config.repetition_penalty in (None, 1.0)


def test_step_prompts_cover_every_prompt_once_per_pass():
    first = step_prompts(10, 4, 0, seed=1) + step_prompts(10, 4, 1, seed=1)
    third = step_prompts(10, 4, 2, seed=1)
    assert sorted(first + third[:2]) == list(range(10))  # steps 0-2 span one full pass
    assert step_prompts(10, 4, 1, seed=1) == step_prompts(10, 4, 1, seed=1)  # pure
    assert step_prompts(10, 4, 1, seed=2) != step_prompts(10, 4, 1, seed=1)


# ----------------------------------------------------------------------------- config
def test_defaults_are_trl_classic():
    c = PPOConfig()
    assert (c.learning_rate, c.batch_size, c.mini_batch_size) == (1.41e-5, 128, 128)
    assert c.ppo_epochs == 4
    assert (c.init_kl_coef, c.adap_kl_ctrl, c.target, c.horizon) == (0.2, True, 6.0, 10000.0)
    assert (c.gamma, c.lam, c.cliprange, c.cliprange_value, c.vf_coef) == (1, 0.95, 0.2, 0.2, 0.1)
    assert (c.kl_penalty, c.whiten_rewards, c.early_stopping, c.target_kl) == ("kl", False,
                                                                             False, 1.0)
    assert (c.ratio_threshold, c.use_score_scaling, c.use_score_norm, c.score_clip) == (
        10.0, False, False, None)


def _recipe(tmp_path: Path, algorithm: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(
        '[stages.align]\npolicy = "builtin:tiny-gpt-neo"\nprompts = "builtin:tiny-prompts"\n'
        f'reward = "length"\nalgorithm = {{ name = "ppo", {algorithm} }}\n',
        encoding="utf-8",
    )
    return path


def test_tiny_recipe_validates(rlhfx_cli):
    recipe = Path(__file__).parent.parent / "recipes" / "tiny_ppo.toml"
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("batch_size = 10, mini_batch_size = 4", "multiple of mini_batch_size"),
        ("output_min_length = 8, output_max_length = 8", "[min, max)"),
        ('kl_penalty = "reverse"', "kl_penalty"),
        ("use_score_norm = true", "use_score_scaling"),
        ("learning_rate = 1e-5, lr = 3", "unknown key"),
    ],
)
def test_bad_options_are_one_line_errors(rlhfx_cli, tmp_path, options, message):
    result = rlhfx_cli("validate", str(_recipe(tmp_path, options)))
    assert result.exit_code == 2
    assert "stages.align.algorithm" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_negative_kl_warning_names_the_likely_cause(caplog):
    import logging

    from rlhfx.plugins.ppo.loop import PPORun

    run = PPORun.__new__(PPORun)  # only the reporting part
    run.config = PPOConfig()
    run.ctx = type("Ctx", (), {"log": logging.getLogger("ppo_test_warnings")})()
    with caplog.at_level(logging.WARNING, logger="ppo_test_warnings"):
        run._warn(7, {"objective/kl": -0.5, "ppo/retokenized": 0})  # within the tolerance
        assert not caplog.records
        run._warn(8, {"objective/kl": -3.2, "ppo/retokenized": 2})
    message = caplog.records[0].getMessage()
    assert "step 8" in message and "-3.200" in message
    assert "min_length" in message and "2 responses re-tokenized" in message


@pytest.mark.parametrize("logged", [True, False], ids=["eval-logged", "killed-before-eval"])
def test_resume_before_the_first_checkpoint_keeps_the_step0_eval(tmp_path, logged):
    """A run killed before its first checkpoint restarts at step 0: the initial policy's eval
    it already logged stays (once) and is not done again; one it never logged is done."""
    import json
    import logging
    from types import SimpleNamespace

    from rlhfx.plugins.ppo.loop import PPORun

    metrics = tmp_path / "metrics.jsonl"
    old = [{"step": 1, "objective/kl": 0.0}, {"step": 2, "objective/kl": 0.1}]
    if logged:
        old.insert(0, {"step": 0, "eval/reward_mean": 1.5})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in old))
    logs: list[tuple[int, dict]] = []
    run = PPORun.__new__(PPORun)
    run.config = PPOConfig()
    run.ctx = SimpleNamespace(stage_dir=tmp_path, metrics_file=metrics, is_main=True,
                              log=logging.getLogger("ppo_test_resume"),
                              log_metrics=lambda step, m: logs.append((step, m)))
    evaluated: list[int] = []
    run.evaluate = lambda step: evaluated.append(step) or {"eval/reward_mean": 2.0}

    assert run._resume() == 0  # no checkpoint: from the start
    kept = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert kept == (old[:1] if logged else [])  # later steps will be done again
    run.initial_eval()
    assert evaluated == ([] if logged else [0])
    assert [(step, m["eval/reward_mean"]) for step, m in logs] == ([] if logged else [(0, 2.0)])


def test_cut_flags_text_a_cleaner_removed_before_the_response(tokenizer):
    raw = " ## hello world ##"
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    cleaned = _clean(raw)
    assert cleaned == "hello world"
    # the caller drops it: the `#` tokens cannot be cut off the front
    assert cut_to_clean_text(tokenizer, ids, raw, cleaned) == (ids, "prefix")
    # leading whitespace alone is not a prefix
    raw = "   hello world"
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    assert cut_to_clean_text(tokenizer, ids, raw, _clean(raw)) == (ids, "kept")


def _fake_generate(texts):
    from rlhfx.rollouts import Rollout

    def fake_generate(model, tok, prompts, sampling, **kwargs):
        out = []
        for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            out.append(Rollout(i, prompt, tok(prompt)["input_ids"], ids, tok.decode(ids)))
        return out

    return fake_generate


def test_collect_drops_responses_with_a_removed_leading_hash(tokenizer, monkeypatch):
    import rlhfx.plugins.ppo.experience as experience

    texts = [" ## hello world ##", " # good answer here", " plant them deep."]
    monkeypatch.setattr(experience, "generate", _fake_generate(texts))
    prompts = [f"###Human: q{i} ###Assistant:" for i in range(3)]
    reward = LengthReward(LengthConfig(unit="chars"))
    exp = collect(None, tokenizer, prompts, [StopMarkers(), Strip(), Discard()], reward, None,
                  batch_size=3, stop_strings=[], rng=random.Random(0), min_response_tokens=2,
                  discarded_score=None)
    assert [s.response for s in exp.samples][:2] == ["hello world", "good answer here"]
    assert exp.kept == [2] and exp.counts["prefix"] == 2
    assert exp.samples[0].extra["dropped"] == experience.DROPPED_PREFIX
    assert all("#" not in tokenizer.decode(r) for r in exp.responses)


def test_collect_drops_non_finite_scores(tokenizer, monkeypatch):
    import math

    import rlhfx.plugins.ppo.experience as experience

    texts = [" plant them deep.", " water them often.", " sun is good for them."]
    monkeypatch.setattr(experience, "generate", _fake_generate(texts))

    class Broken:
        name = "broken"

        def score(self, prompts, responses):
            return [math.nan, 1.5, math.inf][: len(responses)]

    exp = collect(None, tokenizer, [f"q{i}" for i in range(3)], [Strip()], Broken(), None,
                  batch_size=3, stop_strings=[], rng=random.Random(0), min_response_tokens=1,
                  discarded_score=None)
    assert exp.kept == [1] and exp.scores == [1.5]
    assert exp.counts["nonfinite"] == 2
    assert exp.samples[0].extra["dropped"] == experience.NONFINITE
