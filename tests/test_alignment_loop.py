"""The shared alignment loop's pieces: prompt schedule and seeds, scoring with prompt fields,
the non-finite reward policy, resume before the first checkpoint, and the metric schema."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import pytest

from rlhfx import AlgorithmConfig, Sample, UserError
from rlhfx.alignment.schedule import iteration_seed, prompt_indices, shard_positions
from rlhfx.alignment.schema import algorithm_metric_name, sample_metrics
from rlhfx.components import RewardSource
from rlhfx.scoring import accepted_fields, call_score, score


def test_prompts_cover_every_prompt_once_per_pass_and_are_pure():
    seen = prompt_indices(10, 4, 1, 7) + prompt_indices(10, 4, 2, 7)
    seen += prompt_indices(10, 4, 3, 7)[:2]  # iteration 3 finishes the first pass
    assert sorted(seen) == list(range(10))
    assert prompt_indices(10, 4, 2, 7) == prompt_indices(10, 4, 2, 7)
    assert prompt_indices(10, 4, 1, 7) != prompt_indices(10, 4, 1, 8)
    assert len(prompt_indices(3, 7, 1, 0)) == 7  # more than the set: wraps around
    assert shard_positions(5, 0, 2) == [0, 2, 4] and shard_positions(5, 1, 2) == [1, 3]


def test_iteration_seeds_fit_numpy_and_differ_by_process_and_purpose():
    seeds = {iteration_seed(3, it, rank, purpose) for it in range(4) for rank in range(2)
             for purpose in ("", "eval")}
    assert len(seeds) == 16 and all(0 <= s < 2**31 for s in seeds)


class WithAnswer(RewardSource):
    name = "with_answer"

    def score(self, prompts, responses, answer):
        return [1.0 if r == a else 0.0 for r, a in zip(responses, answer, strict=True)]


class Plain(RewardSource):
    name = "plain"

    def score(self, prompts, responses):
        return [float(len(r)) for r in responses]


def test_prompt_fields_reach_only_the_sources_that_ask_for_them():
    assert accepted_fields(WithAnswer(), ["answer", "topic"]) == ["answer"]
    assert accepted_fields(Plain(), ["answer"]) == []
    fields = {"answer": ["4", "5"], "topic": ["a", "b"]}
    assert call_score(WithAnswer(), ["p", "q"], ["4", "6"], fields) == [1.0, 0.0]
    assert call_score(Plain(), ["p", "q"], ["4", "66"], fields) == [1.0, 2.0]
    samples = [Sample(0, "p", "4", response="4", fields={"answer": "4"}),
               Sample(1, "q", "x", response="x", discarded=True, fields={"answer": "5"})]
    score(samples, WithAnswer())
    assert [s.reward for s in samples] == [1.0, None]


class ByTokens(RewardSource):
    """Reads the policy's token ids; says which path each call took."""

    name = "by_tokens"

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def reads_policy_tokens(self, tokenizer):
        return True

    def score(self, prompts, responses):
        self.calls.append("text")
        return [float(len(r)) for r in responses]

    def score_tokens(self, prompt_ids, response_ids):
        self.calls.append("tokens")
        return [float(10 * len(p) + len(r)) for p, r in zip(prompt_ids, response_ids,
                                                             strict=True)]


def test_a_source_reading_the_policys_tokens_gets_them_unless_a_text_was_rewritten():
    source = ByTokens()
    samples = [
        Sample(0, "p", "abc", response="abc", prompt_ids=[1, 2], response_ids=[3, 4, 5]),
        Sample(0, "p", "abc d", response="a", prompt_ids=[1, 2], response_ids=[3],
               token_status="cut"),
        Sample(1, "q", "#", response="", discarded=True, prompt_ids=[1], response_ids=[6]),
    ]
    score(samples, source, by_tokens=True)
    assert source.calls == ["tokens"] and [s.reward for s in samples] == [23.0, 21.0, None]
    samples[1].token_status = "retokenized"  # a cleaner rewrote it: its ids are not sampled
    score(samples, source, by_tokens=True)
    assert source.calls[-1] == "text" and [s.reward for s in samples] == [3.0, 1.0, None]
    samples[1].token_status = "kept"
    score(samples, source)  # the loop did not ask for tokens: text
    assert source.calls[-1] == "text"
    assert not RewardSource().reads_policy_tokens(object())  # sources read text by default


def test_the_loop_hands_tokens_to_a_source_that_reads_them():
    loop = _loop("error", [])
    loop.setup.reward = ByTokens()
    loop._score_tokens = True
    samples = [Sample(0, "p", "ab", response="ab", prompt_ids=[112], response_ids=[97, 98])]
    out = loop._clean_and_score(samples)
    assert loop.setup.reward.calls == ["tokens"] and out[0].reward == 12.0


@pytest.mark.parametrize(("returned", "message"), [
    ([1.0], "returned 1 scores for 2 responses"),
    ([1.0, None], "returned a score that is not a number at \\[1\\]: None"),
    ([1.0, "2"], "returned a score that is not a number at \\[1\\]: '2'"),
    ("12", "returned str, not a list of 2 numbers"),
])
def test_a_reward_source_returning_nonsense_is_named(returned, message):
    class Broken(RewardSource):
        name = "broken"

        def score(self, prompts, responses):
            return returned

    samples = [Sample(i, "p", "r", response="r") for i in range(2)]
    with pytest.raises(UserError, match=f"r.toml: stages.align.reward: reward source 'broken' "
                                        f".*{message}"):
        score(samples, Broken(), where="r.toml: stages.align.reward")


def _loop(policy: str, values: list[float]):
    """An AlignmentLoop with only what `_clean_and_score` reads."""
    from rlhfx.alignment.loop import AlignmentLoop

    class Fixed(RewardSource):
        name = "fixed"

        def score(self, prompts, responses):
            return values[: len(responses)]

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(map(chr, ids))

    loop = AlignmentLoop.__new__(AlignmentLoop)
    loop.config = AlgorithmConfig(nonfinite_rewards=policy)
    loop.setup = SimpleNamespace(cleaners=[], reward=Fixed(), tokenizer=Tok(),
                                 where="r.toml: stages.align.algorithm")
    loop.ctx = SimpleNamespace(recipe_file="r.toml", stage_id="align")
    loop._score_tokens = False
    return loop


def test_nonfinite_rewards_stop_the_run_naming_the_source_and_the_way_out():
    samples = [Sample(i, "p", "ab", response_ids=[97, 98]) for i in range(3)]
    with pytest.raises(UserError) as info:
        _loop("error", [1.0, math.nan, 2.0])._clean_and_score(samples)
    message = str(info.value)
    assert message.startswith("r.toml: stages.align.reward: reward source 'fixed' returned nan")
    assert 'nonfinite_rewards = "drop"' in message


def test_nonfinite_rewards_can_be_dropped_and_are_counted():
    samples = [Sample(i, "p", "ab", response_ids=[97, 98]) for i in range(3)]
    out = _loop("drop", [1.0, math.inf, 2.0])._clean_and_score(samples)
    assert [s.reward for s in out] == [1.0, None, 2.0]
    assert out[1].discarded and "non-finite reward from 'fixed'" in out[1].discard_reason
    figures = sample_metrics(out)
    assert figures["nonfinite_rewards"] == 1 and figures["discarded_rate"] == pytest.approx(1 / 3)
    assert figures["reward_mean"] == 1.5 and figures["reward_std"] == 0.5  # population std


@pytest.mark.parametrize("logged", [True, False], ids=["eval-logged", "killed-before-eval"])
def test_resume_before_the_first_checkpoint_keeps_the_step0_eval(tmp_path, logged):
    """A run killed before its first checkpoint restarts at iteration 1: the initial policy's
    eval it already logged stays (once) and is not done again; one it never logged is done."""
    from rlhfx.alignment.checkpoints import Checkpoints
    from rlhfx.alignment.loop import AlignmentLoop

    metrics = tmp_path / "metrics.jsonl"
    old = [{"step": 1, "kl_mean": 0.0}, {"step": 2, "kl_mean": 0.1}]
    if logged:
        old.insert(0, {"step": 0, "eval_reward_mean": 1.5})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in old))
    loop = AlignmentLoop.__new__(AlignmentLoop)
    loop.config, loop.name = AlgorithmConfig(), "x"
    loop.algorithm = SimpleNamespace(resume_neutral=frozenset())
    loop.checkpoints = Checkpoints(tmp_path / "checkpoints")
    loop.setup = SimpleNamespace(where="r.toml: stages.align.algorithm")
    loop.ctx = SimpleNamespace(metrics_file=metrics, is_main=True, stage_id="align",
                               log=logging.getLogger("test_resume"))
    loop._resume()
    assert loop.state.iteration == 0
    kept = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert kept == (old[:1] if logged else [])  # later iterations will be done again
    assert loop._initial_eval_done is logged


def test_algorithm_metrics_keep_schema_names_and_prefix_the_rest():
    assert algorithm_metric_name("ppo", "kl_mean") == "kl_mean"
    assert algorithm_metric_name("ppo", "train_loss") == "train_loss"
    assert algorithm_metric_name("ppo", "loss/value") == "ppo/loss/value"
    assert algorithm_metric_name("ppo", "ppo/kl_coef") == "ppo/kl_coef"


def test_shared_options_have_one_meaning():
    c = AlgorithmConfig(min_new_tokens=16, max_new_tokens=16)  # a fixed response length
    assert c.length_range == (16, 16)
    assert AlgorithmConfig(max_new_tokens=20).length_range == (20, 20)
    with pytest.raises(ValueError, match="min_new_tokens \\(9\\) is above max_new_tokens"):
        AlgorithmConfig(min_new_tokens=9, max_new_tokens=8)
    neutral = AlgorithmConfig(iterations=3).fingerprint()
    assert neutral == AlgorithmConfig(iterations=9, eval_every=2, save_every=3).fingerprint()
    assert neutral != AlgorithmConfig(max_new_tokens=64).fingerprint()


TINY = {
    "raft": 'name = "raft"\nbatch_size = 4\nk = 2\nepochs = 1\ntrain_batch_size = 2',
    "ppo": 'name = "ppo"\nbatch_size = 4\nmini_batch_size = 2\nppo_epochs = 1',
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(TINY))
def test_a_damaged_checkpoint_is_set_aside_and_the_run_resumes(rlhfx_cli, tmp_path, algorithm):
    """Truncated weights in the newest checkpoint: named, moved aside, the older one resumed."""
    def recipe(iterations: int) -> str:
        path = tmp_path / "r.toml"
        path.write_text(
            '[run]\nseed = 2\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
            'prompts = "builtin:tiny-prompts"\nreward = { name = "length" }\n\n'
            f'[stages.align.algorithm]\n{TINY[algorithm]}\niterations = {iterations}\n'
            'min_new_tokens = 4\nmax_new_tokens = 4\nkeep_checkpoints = 2\n'
            'torch_threads = 1\n', encoding="utf-8")
        return str(path)

    out = tmp_path / "run"
    assert rlhfx_cli("run", recipe(2), "-o", str(out)).exit_code == 0
    stage = out / "stages" / "align"
    weights = stage / "checkpoints" / "iter-0002" / "algorithm.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a disk that filled up mid-write
    result = rlhfx_cli("run", recipe(3), "-o", str(out))  # one more iteration: resumes
    assert result.exit_code == 0, result.output
    log = (out / "run.log").read_text()
    assert "iter-0002: damaged" in log and "resuming after iteration 1" in log
    assert (stage / "checkpoints-set-aside" / "iter-0002" / "algorithm.safetensors").exists()
    steps = [json.loads(x)["step"] for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # iteration 2 redone once, nothing twice


def test_a_resume_clears_what_a_kill_left_half_written(tmp_path):
    """A kill inside a save leaves a dot-named checkpoint folder or a temporary file of
    latest.json; both go before the loop resumes, the checkpoints and pointer stay."""
    from rlhfx.alignment.checkpoints import Checkpoints

    root = tmp_path / "checkpoints"
    (root / "iter-0001").mkdir(parents=True)
    (root / "iter-0001" / "loop.json").write_text("{}")
    (root / "latest.json").write_text('{"latest": "iter-0001"}')
    (root / ".iter-0002.tmp").mkdir()
    (root / ".iter-0002.tmp" / "algorithm.safetensors").write_bytes(b"partial")
    (root / ".latest.json.x1y2z3.tmp").write_text('{"lat')
    Checkpoints(root).clean_partial()
    assert sorted(p.name for p in root.iterdir()) == ["iter-0001", "latest.json"]
    assert (root / "iter-0001" / "loop.json").exists()
