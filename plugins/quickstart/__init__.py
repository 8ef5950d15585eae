"""The quickstart's shipped data: a small preference set written for rlhfx, and prompts.

Every pair sets a helpful answer against an unhelpful one (evasive, rude, off-topic, repetitive,
junk-filled, or cut off mid-sentence) in the Dahoas layout (`prompt` ending in "Assistant:",
`chosen`, `rejected`), which the data stage reads. `tools/make_quickstart_data.py` (outside
the package) writes the files from templates; the files are committed so that a run never
depends on the generator.
Recipes name them as `pkg:rlhfx.plugins.quickstart/data/<file>`.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
#: Preference pairs the reward model trains on.
TRAIN_PAIRS = DATA_DIR / "preferences_train.jsonl"
#: Pairs on topics kept out of training: the reward model's held-out accuracy.
HELD_OUT_PAIRS = DATA_DIR / "preferences_heldout.jsonl"
#: Prompts for alignment (RAFT/PPO) and for evaluation, one {"prompt": ...} a line.
TRAIN_PROMPTS = DATA_DIR / "prompts_train.jsonl"
EVAL_PROMPTS = DATA_DIR / "prompts_eval.jsonl"
