"""Extra prompt-file fields reach reward sources through the align stage: training prompts
(aligned after long prompts are dropped) and eval prompts alike, while a plain
`score(prompts, responses)` source runs on the same file unchanged."""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from rlhfx import RewardSource, hookimpl
from rlhfx.testing import run_records as records

TRAIN = {f"###Human: what is {a} plus {b}? ###Assistant:": str(a + b)
         for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))}
LONG = "###Human: " + "tell me a very long story " * 40 + "###Assistant:"
EVAL = {"###Human: what is 10 plus 20? ###Assistant:": "30",
        "###Human: what is 2 plus 2? ###Assistant:": "4"}


class AnswerSpy(RewardSource):
    """Scores 1 per response and notes which (prompt, answer) pairs it was given."""

    name = "answer_spy"
    seen: ClassVar[list[tuple[str, str]]] = []

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              answer: Sequence[str]) -> list[float]:
        AnswerSpy.seen += list(zip(prompts, answer, strict=True))
        return [1.0] * len(responses)


class PlainLength(RewardSource):
    name = "plain_length"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [float(len(r)) for r in responses]


def plugin() -> types.ModuleType:
    module = types.ModuleType("fieldspy")
    module.rlhfx_register_reward_sources = hookimpl(  # type: ignore[attr-defined]
        lambda register: [register(AnswerSpy), register(PlainLength)])
    return module


def write_files(tmp_path: Path, reward: str) -> Path:
    train = tmp_path / "train.jsonl"
    rows = [{"prompt": p, "answer": a, "kind": "sum"} for p, a in TRAIN.items()]
    rows.insert(2, {"prompt": LONG, "answer": "never", "kind": "long"})
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    evals = tmp_path / "eval.jsonl"
    evals.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                             for p, a in EVAL.items()), encoding="utf-8")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[run]\nseed = 1\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
        f'prompts = "{train}"\neval_prompts = "{evals}"\nreward = {{ name = "{reward}" }}\n'
        'algorithm = { name = "online_dpo", iterations = 1, batch_size = 4, k = 2, '
        'mini_batch_size = 4, min_new_tokens = 4, max_new_tokens = 4, '
        'max_prompt_tokens = 40 }\n',
        encoding="utf-8",
    )
    return recipe


def test_reward_sources_get_each_prompts_own_answer(rlhfx_plugins, rlhfx_cli, tmp_path):
    rlhfx_plugins(plugin())
    AnswerSpy.seen = []
    recipe = write_files(tmp_path, "answer_spy")
    result = rlhfx_cli("run", str(recipe), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    seen = AnswerSpy.seen
    assert seen, "the reward source was never called"
    assert all(answer == {**TRAIN, **EVAL}[prompt] for prompt, answer in seen), seen
    assert {p for p, _ in seen} == set(TRAIN) | set(EVAL)  # the long prompt was dropped
    assert "skipped 1 prompts over 40 tokens" in (tmp_path / "run" / "run.log").read_text()


def test_plain_reward_source_ignores_the_fields(rlhfx_plugins, rlhfx_cli, tmp_path):
    rlhfx_plugins(plugin())
    recipe = write_files(tmp_path, "plain_length")
    result = rlhfx_cli("run", str(recipe), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    recs = records(tmp_path / "run")
    assert recs[-1]["num_samples"] == 8 and recs[-1]["reward_mean"] > 0
    assert "eval_reward_mean" in recs[-1]
