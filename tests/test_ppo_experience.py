"""Turning cleaned text back into the sampled tokens, what PPO leaves out of its update, and
the recipe-level checks of PPO's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfx import Sample
from rlhfx.alignment.tokens import cut_to_clean_text
from rlhfx.plugins.cleaners import Discard, StopMarkers, Strip
from rlhfx.plugins.ppo import DROPPED_PREFIX, neutral_generation_config, trainable
from rlhfx.plugins.ppo.config import PPOConfig


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


def _samples(tokenizer, texts: list[str]) -> list[Sample]:
    """Samples as the loop hands them over: cleaned, tokens cut to the cleaned text."""
    from rlhfx.scoring import clean

    out = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        s = Sample(i, f"q{i}", tokenizer.decode(ids), response_ids=ids)
        out.append(s)
    clean(out, [StopMarkers(), Strip(), Discard()])
    for s in out:
        s.response_ids, s.token_status = cut_to_clean_text(tokenizer, s.response_ids,
                                                           s.raw_response, s.response)
        s.reward = None if s.discarded else float(len(s.response))
    return out


def test_update_drops_short_and_discarded_responses(tokenizer):
    texts = [" plant them deep in good soil.", " #####", " the", " fine.###Human: more"]
    samples = _samples(tokenizer, texts)
    kept, counts = trainable(samples, PPOConfig(min_response_tokens=2))
    # " #####" is stripped to "" and discarded; " the" is one token: too short
    assert [s.prompt_id for s, _ in kept] == [0, 3]
    assert counts["discarded"] == 1 and counts["too_short"] >= 1
    assert [r for _, r in kept] == [len("plant them deep in good soil."), len("fine.")]
    assert tokenizer.decode(kept[1][0].response_ids).strip() == "fine."
    assert [s.extra.get("dropped") for s in samples][1:3] == ["ppo: too short"] * 2
    # with a score for discarded responses, a discarded one that is long enough trains too
    samples = _samples(tokenizer, [texts[0], " a # b c d e"])
    kept, _ = trainable(samples, PPOConfig(min_response_tokens=2, discarded_score=-3.0))
    assert [(s.prompt_id, r) for s, r in kept][1] == (1, -3.0)


def test_update_drops_responses_with_a_removed_leading_hash(tokenizer):
    samples = _samples(tokenizer, [" ## hello world ##", " # good answer here",
                                   " plant them deep."])
    kept, counts = trainable(samples, PPOConfig())
    assert [s.response for s in samples][:2] == ["hello world", "good answer here"]
    assert [s.prompt_id for s, _ in kept] == [2] and counts["prefix"] == 2
    assert samples[0].extra["dropped"] == DROPPED_PREFIX
    assert all("#" not in tokenizer.decode(s.response_ids) for s, _ in kept)


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
