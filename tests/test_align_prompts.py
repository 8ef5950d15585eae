"""Prompt sets for every alignment algorithm: formats, long-prompt dropping, clear errors."""

from __future__ import annotations

import json
import logging

import pytest

from rlhfx import UserError
from rlhfx.data.prompts import read_prompt_set
from rlhfx.plugins.align import prompts_within, stop_strings, training_prompt_rows


class WordTokenizer:
    """One token per whitespace-separated word: prompt lengths are easy to work out by hand."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_formats(tmp_path):
    assert len(read_prompt_set("builtin:tiny-prompts")) == 200
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n\n{"text": "b"}\n')
    assert read_prompt_set(str(jsonl)) == ["a", "b"]
    lmflow = tmp_path / "p.json"
    lmflow.write_text(json.dumps({"type": "text_only", "instances": [{"text": "c"}]}))
    assert read_prompt_set(str(lmflow)) == ["c"]
    txt = tmp_path / "p.txt"
    txt.write_text("d\n\ne\n")
    assert read_prompt_set(str(txt)) == ["d", "e"]


def test_a_bad_row_stops_and_a_file_without_prompts_is_an_error(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n{"prompt": 3}\n{oops\n')
    with pytest.raises(UserError, match=r"p.jsonl: line 2: 'prompt' is int, not a string"):
        read_prompt_set(str(jsonl))
    jsonl.write_text('{"prompt": ""}\n\n')
    with pytest.raises(UserError, match=r"p.jsonl: no usable prompt rows; first problem: .*line 1"):
        read_prompt_set(str(jsonl))
    with pytest.raises(UserError, match="does not exist"):
        read_prompt_set(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="does not exist"):
        read_prompt_set(str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="unknown built-in"):
        read_prompt_set("builtin:nope")


def test_long_prompts_are_dropped_and_counted(tmp_path):
    prompts = ["one", "one two three", "one two", "a b c d"]
    assert prompts_within(prompts, WordTokenizer(), 2) == [True, False, True, False]
    assert prompts_within(prompts, WordTokenizer(), None) == [True] * 4

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    log = logging.getLogger("test")
    rows = training_prompt_rows(str(jsonl), WordTokenizer(), 3, log, "r.toml: key")
    assert rows == [{"prompt": p} for p in prompts[:3]]
    with pytest.raises(UserError, match=r"r.toml: key: no prompt of .* is at most 0 tokens"):
        training_prompt_rows(str(jsonl), WordTokenizer(), 0, log, "r.toml: key")


def test_a_txt_prompt_file_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("first\nsecond caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"p\.txt: line 2: not UTF-8 text \(byte 0xe9\)"):
        read_prompt_set(str(path))


def test_default_stop_strings_are_the_cleaners_in_order_without_repeats():
    from rlhfx.config import CleanerRef

    cleaners = [CleanerRef.model_validate(c).build() for c in (
        {"name": "stop_markers", "markers": ["###Human", "\n\n"]},
        "strip",
        {"name": "stop_markers", "markers": ["\n\n", "User:"]},
        "discard",
    )]
    assert stop_strings(None, cleaners) == ["###Human", "\n\n", "User:"]
    assert stop_strings(None, []) == []
    assert stop_strings(["END"], cleaners) == ["END"]  # the recipe's own win
