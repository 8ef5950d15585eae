"""`answer_match` (answers pulled from responses, compared with the prompt file's reference) and
reading prompt files with their extra fields."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rlhfx import UserError
from rlhfx.data.sets import read_prompt_records, read_prompts
from rlhfx.plugins.verifiable import AnswerMatch, AnswerMatchConfig


def match(**options) -> AnswerMatch:
    return AnswerMatch(AnswerMatchConfig(**options))


def test_the_last_number_is_the_answer_by_default():
    source = match()
    responses = [
        "3 + 4 = 7",                        # right
        "First 2 apples, then 5: total 8",  # last number 8: wrong
        "I don't know.",                    # no number: unparsable
        "It is 1,250 metres.",              # commas read as thousands: right
        "The answer is -3.50",              # numeric: -3.5 == -3.5
    ]
    answers = ["7", 7, "12", 1250, "-3.5"]
    assert source.score(["q"] * 5, responses, answer=answers) == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_numeric_tolerance():
    source = match(tolerance=0.05)
    # |3.14 - 3.1416| = 0.0016 <= 0.05 right; |3.2 - 3.1416| = 0.058 > 0.05 wrong
    assert source.score(["q", "q"], ["about 3.14", "about 3.2"], answer=[3.1416, 3.1416]) == [
        1.0, 0.0,
    ]
    # the default tolerance is tight: 0.1 + 0.2 passes, 0.3001 does not
    assert match().score(["q", "q"], ["0.30000000000000004", "0.3001"], answer=[0.3, 0.3]) == [
        1.0, 0.0,
    ]


def test_exact_mode_with_a_pattern_and_configured_rewards():
    source = match(pattern=r"Answer:\s*(\w+)", mode="exact", correct=2.0, wrong=-0.5,
                   unparsable=-1.0)
    responses = ["Let me think. Answer: Paris", "Answer: Lyon", "Paris, I believe",
                 "Answer: rome. No wait, Answer: PARIS"]
    # 1: right; 2: wrong; 3: no "Answer:" -> unparsable; 4: the last match, case ignored
    assert source.score(["q"] * 4, responses, answer=["Paris"] * 4) == [2.0, -0.5, -1.0, 2.0]
    # exact is exact: "7.0" is not "7"
    assert match(mode="exact").score(["q"], ["7.0"], answer=["7"]) == [0.0]
    # case_sensitive: "PARIS" is not "Paris"
    strict = match(pattern=r"Answer:\s*(\w+)", mode="exact", case_sensitive=True)
    assert strict.score(["q"], ["Answer: PARIS"], answer=["Paris"]) == [0.0]


def test_first_match_when_asked():
    assert match(which="first").score(["q"], ["12 then 7"], answer=["12"]) == [1.0]


def test_another_field_name():
    source = match(answer_field="target")
    assert source.score(["q"], ["42"], target=["42"], answer=["0"]) == [1.0]


def test_missing_field_is_a_clear_user_error():
    with pytest.raises(UserError, match="carry no 'answer' field; add it to the prompt file "
                                        "or set answer_field"):
        match().score(["q"], ["42"])
    with pytest.raises(UserError, match="prompt 2 of the batch has no 'answer'"):
        match().score(["q", "q"], ["1", "2"], answer=["1", None])


def test_a_reference_that_is_not_a_number_in_numeric_mode():
    with pytest.raises(UserError, match=r"'Paris'.*not a number.*mode = 'exact'"):
        match().score(["q"], ["42"], answer=["Paris"])


def test_pattern_must_compile_with_one_group():
    with pytest.raises(ValidationError, match="exactly one group"):
        AnswerMatchConfig(pattern=r"\d+")
    with pytest.raises(ValidationError, match="exactly one group"):
        AnswerMatchConfig(pattern=r"(\d+)-(\d+)")
    with pytest.raises(ValidationError, match="bad regex"):
        AnswerMatchConfig(pattern=r"(\d+")


def test_registered_as_a_reward_source():
    from rlhfx import registry

    assert registry.get_plugins().get("reward_source", "answer_match").cls is AnswerMatch


# ------------------------------------------------------------------------------ prompt records
def test_read_prompt_records_keeps_extra_fields(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "What is 2 + 3?", "answer": "5", "topic": "sums"},
        {"text": "What is 4 x 2?", "answer": 8},          # `text` serves as the prompt
        {"answer": "9"},                                    # no prompt: a bad row
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(UserError, match=r"prompts\.jsonl: line 3: no prompt or text field"):
        read_prompt_records(str(path))  # stops by default, like every reader
    assert read_prompt_records(str(path), skip_bad_rows=True) == [
        {"prompt": "What is 2 + 3?", "answer": "5", "topic": "sums"},
        {"prompt": "What is 4 x 2?", "answer": 8},
    ]
    # the text-only reader keeps the same rows
    assert read_prompts(str(path), skip_bad_rows=True) == ["What is 2 + 3?", "What is 4 x 2?"]


def test_read_prompt_records_from_json(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"prompt": "a", "answer": 1}, {"prompt": "b", "answer": 2}]),
                    encoding="utf-8")
    assert read_prompt_records(str(path)) == [{"prompt": "a", "answer": 1},
                                              {"prompt": "b", "answer": 2}]


def test_read_prompt_records_with_no_prompts_is_a_user_error(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"answer": "9"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="no usable prompt rows"):
        read_prompt_records(str(path), skip_bad_rows=True)
