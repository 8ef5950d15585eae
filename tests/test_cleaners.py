"""Built-in response cleaners: stop markers, strip, discard, the `changed` flag, and the chain."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rlhfx import Sample
from rlhfx.plugins.cleaners import (
    Discard,
    DiscardConfig,
    StopMarkers,
    StopMarkersConfig,
    Strip,
    StripConfig,
)
from rlhfx.scoring import clean


def stop(*markers: str) -> StopMarkers:
    return StopMarkers(StopMarkersConfig(markers=list(markers))) if markers else StopMarkers()


# ------------------------------------------------------------------------------ stop markers


def test_stop_marker_default_cuts_at_the_next_human_turn():
    result = stop().clean("p", " Sure, here it is.###Human: and another question")
    assert (result.text, result.changed, result.discard_reason) == (
        " Sure, here it is.", True, None,
    )


def test_stop_marker_absent_leaves_the_response_unchanged():
    result = stop().clean("p", "No marker here. ### Human with a space is not the marker")
    assert result.text == "No marker here. ### Human with a space is not the marker"
    assert result.changed is False


def test_stop_markers_cut_at_the_earliest_of_several():
    cleaner = stop("Human:", "<|im_end|>")
    assert cleaner.clean("p", "Hi<|im_end|> Human: x").text == "Hi"
    assert cleaner.clean("p", "Hi Human: x<|im_end|>").text == "Hi "
    assert cleaner.clean("p", "Human: at the start").text == ""


def test_stop_markers_are_literal_text_not_regexes():
    cleaner = stop("a.b", "(x")
    assert cleaner.clean("p", "axb stays").changed is False
    assert cleaner.clean("p", "keep a.b cut").text == "keep "
    assert cleaner.clean("p", "keep (x cut").text == "keep "


@pytest.mark.parametrize("markers", [[], [""], ["ok", ""]])
def test_stop_markers_must_be_non_empty(markers):
    with pytest.raises(ValidationError):
        StopMarkersConfig(markers=markers)


# ------------------------------------------------------------------------------ strip


@pytest.mark.parametrize(
    ("raw", "text", "changed"),
    [
        ("  ## Hello there #\n", "Hello there", True),
        ("Hello there", "Hello there", False),
        ("Use # for comments", "Use # for comments", False),  # inner `#` is not stray
        ("\t\n", "", False),  # whitespace alone is not a change
        (" Hello there\n", "Hello there", False),
        ("###", "", True),
    ],
)
def test_strip_whitespace_and_stray_hashes(raw, text, changed):
    result = Strip().clean("p", raw)
    assert (result.text, result.changed, result.discard_reason) == (text, changed, None)


def test_strip_with_other_characters_keeps_hashes():
    result = Strip(StripConfig(chars="*")).clean("p", " **bold** #")
    assert result.text == "bold** #"


# ------------------------------------------------------------------------------ discard


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("A fine answer.", None),
        ("An answer with # inside", "matches '#'"),
        ("a", "shorter than 2 chars"),
        ("   a   ", "shorter than 2 chars"),  # length counted without surrounding whitespace
        ("", "shorter than 2 chars"),
        ("ok", None),
    ],
)
def test_discard_defaults(raw, reason):
    result = Discard().clean("p", raw)
    assert result.discard_reason == reason
    assert result.text == raw  # discard never edits the text


def test_discard_custom_patterns_and_length():
    cleaner = Discard(DiscardConfig(patterns=[r"(?:[:;]\))\s*(?:[:;]\)\s*)+", "(?i)as an ai"],
                                    min_chars=5))
    assert cleaner.clean("p", "Sure :) :) :)").discard_reason is not None
    assert cleaner.clean("p", "As an AI, I cannot").discard_reason == "matches '(?i)as an ai'"
    assert cleaner.clean("p", "Sure :)").discard_reason is None
    assert cleaner.clean("p", "abcd").discard_reason == "shorter than 5 chars"
    assert Discard(DiscardConfig(patterns=[], min_chars=0)).clean("p", "").discard_reason is None


def test_discard_rejects_a_bad_regex_in_its_config():
    with pytest.raises(ValidationError, match="bad regex '\\(unclosed'"):
        DiscardConfig(patterns=["(unclosed"])


# ------------------------------------------------------------------------------ the chain


def sample(raw: str, prompt_id: int = 0) -> Sample:
    return Sample(prompt_id=prompt_id, prompt="###Human: hi ###Assistant:", raw_response=raw)


def test_default_chain_marks_changed_and_discarded_samples():
    samples = [
        sample(" Hello!###Human: bye"),  # cut and stripped -> kept, changed
        sample("Hello!"),  # untouched
        sample("## Hello ##"),  # stripped -> kept, changed
        sample("Hello # world"),  # inner `#` -> discarded
        sample(" x ###Human:"),  # cut, stripped to 1 char -> discarded
    ]
    clean(samples, [StopMarkers(), Strip(), Discard()])
    assert [(s.response, s.changed, s.discarded) for s in samples] == [
        ("Hello!", True, False),
        ("Hello!", False, False),
        ("Hello", True, False),
        ("Hello # world", False, True),
        ("x", True, True),
    ]
    assert samples[3].discard_reason == "discard: matches '#'"
    assert samples[4].discard_reason == "discard: shorter than 2 chars"
    assert samples[0].discard_reason is None


def test_without_strip_a_trailing_hash_run_is_discarded():
    # LMFlow's HH lesson: responses full of `#` must not survive to be rewarded.
    [s] = [sample("Great answer ########")]
    clean([s], [StopMarkers(), Discard()])
    assert s.discarded


def test_chain_order_is_the_recipe_order():
    s1, s2 = sample("#ok#"), sample("#ok#")
    clean([s1], [Strip(), Discard()])
    clean([s2], [Discard(), Strip()])
    assert not s1.discarded and s1.response == "ok"
    assert s2.discarded and s2.response == "#ok#"  # the chain stopped at the discard


def test_default_discard_catches_hashes_and_emoticon_runs_only():
    cleaner = Discard()
    assert cleaner.clean("p", "Glad to help :) :)").discard_reason is not None
    assert cleaner.clean("p", "Thanks;) ;-)").discard_reason is not None
    assert cleaner.clean("p", "## Answer").discard_reason is not None
    assert cleaner.clean("p", "Glad to help :)").discard_reason is None
