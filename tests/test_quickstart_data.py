"""The quickstart's shipped preference set: well-formed, split by topic, regenerated exactly by
tools/make_quickstart_data.py (a script outside the package, on pytest's path), and free of the
trivial cue a reward model would otherwise learn (length)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import make_quickstart_data as generator
import pytest

from rlhfx.plugins import quickstart as qs

PAIR_FILES = [qs.TRAIN_PAIRS, qs.HELD_OUT_PAIRS]
PROMPT_FILES = [qs.TRAIN_PROMPTS, qs.EVAL_PROMPTS]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def files() -> dict[Path, list[dict]]:
    return {path: read(path) for path in [*PAIR_FILES, *PROMPT_FILES]}


def test_committed_files_are_what_the_generator_writes(files):
    for path, rows in generator.build().items():
        assert path.read_text(encoding="utf-8") == generator.to_jsonl(rows), (
            f"{path.name} differs from make_quickstart_data.py's output: "
            "run python tools/make_quickstart_data.py"
        )


def test_sizes(files):
    assert 400 <= len(files[qs.TRAIN_PAIRS]) <= 600
    assert 100 <= len(files[qs.HELD_OUT_PAIRS]) <= 200
    assert len(files[qs.TRAIN_PROMPTS]) >= 100
    assert len(files[qs.EVAL_PROMPTS]) >= 100  # enough for the judge's win rate


def test_pairs_are_dahoas_rows(files):
    for path in PAIR_FILES:
        for n, row in enumerate(files[path], start=1):
            where = f"{path.name} row {n}"
            assert row["prompt"].startswith("\n\nHuman: "), where
            assert row["prompt"].endswith("\n\nAssistant:"), where
            assert row["chosen"].startswith(" ") and row["rejected"].startswith(" "), where
            assert row["chosen"].strip() and row["rejected"].strip(), where
            assert row["chosen"] != row["rejected"], where
            for side in ("chosen", "rejected"):
                assert "Human:" not in row[side] and "Assistant:" not in row[side], where
            assert row["kind"] in generator.KINDS, where


def test_the_data_stage_reads_every_pair(files):
    formats = pytest.importorskip("rlhfx.plugins.data.formats")
    reader = formats.DahoasHH()
    for path in PAIR_FILES:
        for row in files[path]:
            example = reader.parse(row)
            assert example.chosen[-1].text == row["chosen"].strip()
            assert example.prompt[-1].role == "human"


def test_held_out_topics_and_prompts_are_unseen_in_training(files):
    train_topics = {r["topic"] for r in files[qs.TRAIN_PAIRS]}
    held_topics = {r["topic"] for r in files[qs.HELD_OUT_PAIRS]}
    assert not train_topics & held_topics
    # the held-out topics' questions, then questions with no pairs on subjects of their own
    eval_topics = {r["topic"] for r in files[qs.EVAL_PROMPTS]}
    eval_only = {subject for subject, _ in generator.EVAL_ONLY}
    assert eval_topics == held_topics | eval_only
    assert not eval_only & {t.subject for t in generator.TOPICS}
    assert {r["topic"] for r in files[qs.TRAIN_PROMPTS]} == train_topics
    train_questions = {r["question"] for r in files[qs.TRAIN_PROMPTS]}
    assert not train_questions & {r["question"] for r in files[qs.EVAL_PROMPTS]}
    for row in files[qs.EVAL_PROMPTS]:
        assert row["prompt"].endswith(f"\n\nHuman: {row['question']}\n\nAssistant:")


def test_every_kind_of_bad_answer_is_well_represented(files):
    for path in PAIR_FILES:
        kinds = Counter(r["kind"] for r in files[path])
        assert set(kinds) == set(generator.KINDS)
        assert min(kinds.values()) >= 0.12 * len(files[path]), kinds
        # two unfinished pairs a topic
        assert kinds["unfinished"] == 2 * len({r["topic"] for r in files[path]})


def test_unfinished_answers_stop_mid_sentence_and_lose_to_whole_ones(files):
    long_answers = {t.subject: t.long for t in generator.TOPICS}
    for path in PAIR_FILES:
        rows = [r for r in files[path] if r["kind"] == "unfinished"]
        for row in rows:
            chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
            assert chosen.endswith((".", "!", "?")), row
            assert not rejected.endswith((".", "!", "?")), row
            # a cut of the topic's long answer, at or inside a word
            assert long_answers[row["topic"]].startswith(rejected), row
        # the whole answer is the shorter one in about half of them
        shorter = sum(len(r["chosen"]) < len(r["rejected"]) for r in rows)
        assert 0.4 * len(rows) <= shorter <= 0.6 * len(rows)


def test_cut_mid_sentence_never_cuts_at_a_sentence_end():
    import random

    text = "One two. Three four five! Six seven? Eight nine ten eleven."
    for seed in range(50):
        cut = generator.cut_mid_sentence(text, 5, random.Random(seed))
        assert text.startswith(cut) and len(cut) > 5
        assert not cut.endswith((".", "!", "?")), cut


@pytest.mark.parametrize("measure", [len, lambda text: len(text.split())], ids=["chars", "words"])
def test_length_alone_does_not_predict_the_chosen_answer(files, measure):
    """`longer wins` (or `shorter wins`) must be near a coin flip, overall and in most kinds."""
    for path in PAIR_FILES:
        rows = files[path]
        longer = [measure(r["chosen"]) > measure(r["rejected"]) for r in rows]
        assert 0.4 <= sum(longer) / len(rows) <= 0.6, path.name
        for kind in generator.KINDS:
            of_kind = [lg for lg, r in zip(longer, rows, strict=True) if r["kind"] == kind]
            assert 0.25 <= sum(of_kind) / len(of_kind) <= 0.75, (path.name, kind)


def test_some_unhelpful_answers_are_long_and_some_helpful_ones_short(files):
    rows = files[qs.TRAIN_PAIRS]
    lengths = sorted(len(r["chosen"]) for r in rows)
    median = lengths[len(lengths) // 2]
    long_bad = sum(len(r["rejected"]) > median for r in rows)
    short_good = sum(len(r["chosen"]) < median for r in rows)
    assert long_bad >= 0.2 * len(rows) and short_good >= 0.2 * len(rows)


def test_multi_turn_prompts_and_hard_off_topic_negatives(files):
    rows = files[qs.TRAIN_PAIRS]
    multi = [r for r in rows if r["prompt"].count("\n\nHuman:") > 1]
    assert 0.1 * len(rows) <= len(multi) <= 0.4 * len(rows)
    # An off-topic reply is fluent text that answers another question, not junk.
    off = [r for r in rows if r["kind"] == "off_topic"]
    assert all(r["rejected"].rstrip().endswith((".", "!", "?")) for r in off)


def test_text_is_varied(files):
    rows = files[qs.TRAIN_PAIRS]
    assert len({r["rejected"] for r in rows}) >= 0.8 * len(rows)
    assert len({r["prompt"] for r in rows}) >= 0.5 * len(rows)
    assert len({r["topic"] for r in rows}) >= 60


def test_data_files_ship_with_the_package():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    assert "rlhfx.plugins.quickstart.data" in setuptools["packages"]
    assert "*.jsonl" in setuptools["package-data"]["*"]  # (tests/test_install.py checks the wheel)
    for path in [*PAIR_FILES, *PROMPT_FILES]:
        assert path.parent == qs.DATA_DIR and path.exists()
