"""A verifiable task shipped with rlhfx: short arithmetic and unit-conversion questions, each
with its reference answer, for alignment on an exact-answer reward (`answer_match`).

Prompts are rendered in SmolLM2-Instruct's chat layout (the quickstart's model), so a recipe
can hand the files to the alignment stage directly; `question` holds the bare question for
other models. `tools/make_arithmetic_data.py` (outside the package) writes the files; the
held-out questions appear in no training prompt. Recipes name them as
`pkg:rlhfx.plugins.arithmetic/data/<file>`.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
#: {"prompt", "question", "answer", "kind"} a line.
TRAIN_PROMPTS = DATA_DIR / "prompts_train.jsonl"
EVAL_PROMPTS = DATA_DIR / "prompts_eval.jsonl"
