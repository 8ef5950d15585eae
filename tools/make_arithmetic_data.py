"""Write the arithmetic task's prompt files: questions with exact answers, split into training
and held-out questions that never overlap (not part of the package, which ships the files).

    python tools/make_arithmetic_data.py        # rewrites plugins/arithmetic/data/

Four kinds in equal numbers: two-digit addition, two-digit subtraction (never negative),
times tables up to 16, and unit conversions with whole-number answers. Every question asks
for the number alone, so `answer_match`'s default (the last number in the response) reads
the answer. Deterministic: the same code writes the same files (a test checks the committed
ones).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rlhfx.plugins.arithmetic import DATA_DIR, EVAL_PROMPTS, TRAIN_PROMPTS

SEED = 20261130
KINDS = ("addition", "subtraction", "multiplication", "conversion")
#: Questions of each kind in the training and the held-out file.
TRAIN_PER_KIND, EVAL_PER_KIND = 80, 25
ASK = "Answer with just the number."

#: SmolLM2-Instruct's chat layout with its default system message (what its tokenizer's
#: `apply_chat_template(..., add_generation_prompt=True)` writes for one user message; a
#: test checks this against the tokenizer when the model package is installed).
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def render(question: str) -> str:
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


# (question template, factor, smallest and largest amount)
CONVERSIONS = [
    ("How many minutes are in {n} hours?", 60, 2, 24),
    ("How many seconds are in {n} minutes?", 60, 2, 30),
    ("How many meters are in {n} kilometers?", 1000, 2, 40),
    ("How many grams are in {n} kilograms?", 1000, 2, 40),
    ("How many centimeters are in {n} meters?", 100, 2, 50),
    ("How many days are in {n} weeks?", 7, 2, 30),
    ("How many eggs are in {n} dozen?", 12, 2, 20),
    ("How many hours are in {n} days?", 24, 2, 20),
]


# Each maker returns (question, answer, problem): questions with the same problem (3 + 4 and
# 4 + 3) count as one, so no held-out problem is trained on in another order.
Made = tuple[str, int, tuple]


def addition(rng: random.Random) -> Made:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} + {b}?", a + b, ("+", min(a, b), max(a, b))


def subtraction(rng: random.Random) -> Made:
    a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=True)
    return f"What is {a} - {b}?", a - b, ("-", a, b)


def multiplication(rng: random.Random) -> Made:
    a, b = rng.randint(2, 16), rng.randint(2, 16)
    return f"What is {a} times {b}?", a * b, ("x", min(a, b), max(a, b))


def conversion(rng: random.Random) -> Made:
    template, factor, low, high = rng.choice(CONVERSIONS)
    n = rng.randint(low, high)
    return template.format(n=n), n * factor, (template, n)


MAKERS: dict[str, Callable[[random.Random], Made]] = {
    "addition": addition,
    "subtraction": subtraction,
    "multiplication": multiplication,
    "conversion": conversion,
}


def questions(kind: str, count: int, rng: random.Random) -> list[tuple[str, int]]:
    """`count` questions of one kind, each a different problem."""
    seen: dict[tuple, tuple[str, int]] = {}
    while len(seen) < count:
        question, answer, problem = MAKERS[kind](rng)
        seen.setdefault(problem, (question, answer))
    return list(seen.values())


def row(kind: str, question: str, answer: int) -> dict:
    asked = f"{question} {ASK}"
    return {"prompt": render(asked), "question": asked, "answer": str(answer), "kind": kind}


def build() -> dict[Path, list[dict]]:
    """Every file's rows, computed (nothing written)."""
    rng = random.Random(SEED)
    train: list[dict] = []
    held_out: list[dict] = []
    for kind in KINDS:
        drawn = questions(kind, TRAIN_PER_KIND + EVAL_PER_KIND, rng)
        held_out += [row(kind, q, a) for q, a in drawn[:EVAL_PER_KIND]]
        train += [row(kind, q, a) for q, a in drawn[EVAL_PER_KIND:]]
    rng.shuffle(train)
    rng.shuffle(held_out)
    return {TRAIN_PROMPTS: train, EVAL_PROMPTS: held_out}


def to_jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: Sequence[str] = ()) -> int:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for path, rows in build().items():
        path.write_text(to_jsonl(rows), encoding="utf-8")
        print(f"{path.name}: {len(rows)} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
