"""`overlong_buffer`: an answer that ends just before the length limit loses a share of
`unfinished_penalty` growing with its length (hand-worked numbers), RAFT ranks on the result,
and settings that cannot work are refused."""

from __future__ import annotations

import re

import pytest

from rlhfx.alignment.overlong import overlong_penalty


def test_the_penalty_worked_by_hand():
    # limit 64, buffer 16, penalty 2: free up to 48 tokens, then 2/16 = 0.125 a token
    assert overlong_penalty(30, True, 64, 16, 2.0) == 0.0
    assert overlong_penalty(48, True, 64, 16, 2.0) == 0.0
    assert overlong_penalty(49, True, 64, 16, 2.0) == pytest.approx(0.125)
    assert overlong_penalty(56, True, 64, 16, 2.0) == pytest.approx(1.0)
    assert overlong_penalty(60, True, 64, 16, 2.0) == pytest.approx(1.5)
    assert overlong_penalty(64, True, 64, 16, 2.0) == pytest.approx(2.0)
    # cut at the limit (or earlier, at a drawn limit): the whole penalty, buffer or not
    assert overlong_penalty(64, False, 64, 16, 2.0) == 2.0
    assert overlong_penalty(20, False, 64, 16, 2.0) == 2.0
    assert overlong_penalty(20, False, 64, 0, 2.0) == 2.0
    # no buffer: only the cut answers lose anything
    assert overlong_penalty(64, True, 64, 0, 2.0) == 0.0


@pytest.mark.parametrize(("options", "message"), [
    ({"overlong_buffer": 4}, "overlong_buffer = 4 needs unfinished_penalty above 0"),
    ({"overlong_buffer": 8, "unfinished_penalty": 1.0, "min_new_tokens": 8, "max_new_tokens": 8},
     "overlong_buffer (8) must be below max_new_tokens (8)"),
])
def test_settings_that_cannot_work_are_refused(options, message):
    from pydantic import ValidationError

    from rlhfx.plugins.raft import RaftConfig

    with pytest.raises(ValidationError, match=re.escape(message)):
        RaftConfig(**options)


def test_raft_ranks_on_rewards_less_the_buffer_penalty(tmp_path):
    from test_raft_run import (
        assert_best_answers_trained,
        iteration_rows,
        run_in_process,
        write_recipe,
    )

    # The pattern reward counts words; a stop string at "k" ends about half of the answers
    # by themselves, at every length up to the limit of 8.
    recipe = write_recipe(tmp_path / "r.toml", iterations=1, max_new_tokens=8,
                          unfinished_penalty=4.0, overlong_buffer=4, eval_every=0,
                          stop_strings=["k"])
    run_in_process(recipe, tmp_path / "run")
    scored = [r for r in iteration_rows(tmp_path / "run") if r["reward"] is not None]
    in_buffer = [r for r in scored if r["finished"] and r["response_tokens"] > 4]
    assert in_buffer and any(r["finished"] and r["response_tokens"] <= 4 for r in scored)
    for r in scored:
        words = len(re.findall(r"[A-Za-z]{3,}", r["response"]))
        lost = 4.0 if not r["finished"] else max(0, r["response_tokens"] - 4) * 1.0
        assert r["reward"] == pytest.approx(words - lost), r
        assert r.get("overlong_penalty", 0) == pytest.approx(lost if r["finished"] else 0)
        assert r.get("unfinished_penalty", 0) == (0 if r["finished"] else 4.0)
    assert_best_answers_trained(scored)  # on the penalised rewards


def test_an_episode_recipe_refuses_the_buffer(rlhfx_cli, tmp_path):
    from test_episodes_run import episode_recipe

    recipe = episode_recipe(tmp_path, {"name": "grpo", "unfinished_penalty": 1.0,
                                       "overlong_buffer": 2})
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "overlong_buffer applies to single-turn answers only" in text
    assert "recipe.toml" in text and "Traceback" not in result.output
