"""The data stage: formats, malformed rows stopping the stage (or counted with skip_bad_rows),
rendering, the sets written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlhfx import UserError
from rlhfx.data.preference import BadRow, Turn
from rlhfx.data.sets import read_pairs, read_prompts, read_texts
from rlhfx.files import read_jsonl
from rlhfx.plugins.data.config import DataConfig
from rlhfx.plugins.data.dialogue import (
    HH_ASSISTANT,
    HH_HUMAN,
    MarkerStyle,
    check_dialogue,
    split_turns,
)
from rlhfx.plugins.data.prepare import prepare
from rlhfx.registry import get_plugins

FIXTURES = Path(__file__).parent / "fixtures"
ANTHROPIC = FIXTURES / "hh_anthropic_small.jsonl"
DAHOAS = FIXTURES / "hh_dahoas_small.jsonl"


def run_prepare(tmp_path: Path, **options) -> tuple[dict[str, list[dict]], dict]:
    """Prepare with the given options; bad rows are counted (`skip_bad_rows`) unless told."""
    options.setdefault("eval_size", 0)
    options.setdefault("skip_bad_rows", True)
    config = DataConfig.model_validate(options)
    paths, report = prepare(config, tmp_path / "out", seed=0, plugins=get_plugins())
    sets = {name: list(read_jsonl(path)) for name, path in paths.items()}
    return sets, report.as_dict()


# ----------------------------------------------------------------------------- dialogues


def test_split_turns_reads_hh_dialogues_and_keeps_inline_marker_words():
    text = ("\n\nHuman: Hi there\n\nAssistant: Hello. Human: is a word here."
            "\n\nHuman: ok\n\nAssistant: bye")
    turns = split_turns(text, HH_HUMAN, HH_ASSISTANT)
    assert [t.role for t in turns] == ["human", "assistant", "human", "assistant"]
    assert turns[1].text == "Hello. Human: is a word here."
    # files written by hand often drop the leading blank line of the first turn
    assert split_turns("Human: a\n\nAssistant: b", HH_HUMAN, HH_ASSISTANT) == [
        Turn("human", "a"), Turn("assistant", "b"),
    ]


def test_split_turns_with_lmflow_markers():
    turns = split_turns("###Human: q1 ###Assistant: a1 ###Human: q2 ###Assistant: a2",
                        "###Human:", "###Assistant:")
    assert [(t.role, t.text) for t in turns] == [
        ("human", "q1"), ("assistant", "a1"), ("human", "q2"), ("assistant", "a2"),
    ]


def test_check_dialogue_reasons():
    with pytest.raises(BadRow) as e:
        check_dialogue([Turn("human", "q")], "chosen")
    assert e.value.reason == "no_assistant_turn"
    with pytest.raises(BadRow) as e:
        check_dialogue([Turn("human", "q"), Turn("assistant", "")], "chosen")
    assert e.value.reason == "empty_response"
    with pytest.raises(BadRow) as e:
        check_dialogue([Turn("assistant", "a")], "chosen")
    assert e.value.reason == "no_human_turn"


def test_marker_style_prompt_ends_in_the_assistant_marker():
    style = MarkerStyle()
    turns = [Turn("human", "q1"), Turn("assistant", "a1"), Turn("human", "q2")]
    assert style.prompt(turns) == "###Human: q1 ###Assistant: a1 ###Human: q2 ###Assistant:"
    custom = MarkerStyle("<user>", "<bot>", "\n")
    rendered = custom.dialogue([*turns, Turn("assistant", "a2")])
    assert rendered == "<user> q1\n<bot> a1\n<user> q2\n<bot> a2"


# ----------------------------------------------------------------------------- formats


def test_anthropic_fixture_counts_every_malformed_row(tmp_path):
    sets, report = run_prepare(tmp_path, source=str(ANTHROPIC))
    train = report["train"]
    assert train["format"] == "anthropic_hh"
    assert train["rows"] == 13 and train["kept"] == 4
    assert train["dropped"] == {
        "bad_json": 2, "bad_utf8": 1, "empty_response": 1, "identical_pair": 1,
        "missing_field": 1, "no_assistant_turn": 1, "no_human_turn": 1, "wrong_type": 1,
    }
    # every example names the file and the line
    assert train["examples"]["bad_json"][0].startswith(f"{ANTHROPIC}: line 3: not JSON (")
    assert train["examples"]["bad_json"][1] == f"{ANTHROPIC}: line 4: a JSON list, not an object"
    wrong = f"{ANTHROPIC}: line 5: 'chosen' is int, not a string"
    assert train["examples"]["wrong_type"] == [wrong]
    assert f"{ANTHROPIC}: line 6:" in train["examples"]["no_assistant_turn"][0]
    assert len(sets["sft"]) == len(sets["rm"]) == len(sets["prompts"]) == 4
    texts = [r["text"] for r in sets["sft"]]
    assert ("###Human: How do I boil an egg? ###Assistant: Put it in boiling water. "
            "###Human: For how long? ###Assistant: About nine minutes for a hard egg.") in texts
    pair = next(r for r in sets["rm"] if "three hearts" in r["chosen"])
    assert pair["rejected"] == "###Human: Tell me a fun fact. ###Assistant: No."
    for row in sets["prompts"]:
        assert row["prompt"].endswith("###Assistant:")
        assert "\n\nHuman" not in row["prompt"]


def test_invalid_utf8_bytes_are_counted_with_their_line(tmp_path):
    path = tmp_path / "bytes.jsonl"
    good = ANTHROPIC.read_bytes().splitlines()[0]
    path.write_bytes(good + b"\n" + b'{"chosen": "\xff\xfe bad", "rejected": "x"}\n' + good + b"\n")
    _, report = run_prepare(tmp_path, source=str(path))
    assert report["train"]["dropped"] == {"bad_utf8": 1}
    assert report["train"]["examples"]["bad_utf8"][0].startswith(f"{path}: line 2: not UTF-8")
    assert report["train"]["kept"] == 2


def test_dahoas_fixture(tmp_path):
    sets, report = run_prepare(tmp_path, source=str(DAHOAS))
    train = report["train"]
    assert train["format"] == "dahoas_hh"
    assert train["kept"] == 3
    assert train["dropped"] == {
        "bad_json": 1, "empty_response": 1, "identical_pair": 1, "wrong_type": 1,
    }
    assert f"{DAHOAS}: line 7: not JSON" in train["examples"]["bad_json"][0]
    tea = ("###Human: How do I make tea? ###Assistant: Boil water first. "
           "###Human: Then what? ###Assistant:")
    assert {"prompt": tea} in sets["prompts"]
    assert {"text": tea + " Steep the leaves for three minutes."} in sets["sft"]
    assert {"chosen": tea + " Steep the leaves for three minutes.",
            "rejected": tea + " Drink it cold, whatever."} in sets["rm"]


def test_lmflow_layouts_in(tmp_path):
    sets, report = run_prepare(tmp_path / "p", source=str(FIXTURES / "lmflow_pairs.json"))
    assert report["train"]["format"] == "lmflow_pairs"
    assert report["train"]["dropped"] == {"bad_json": 1, "identical_pair": 1}
    where = f"{FIXTURES / 'lmflow_pairs.json'}: instances[3]:"
    assert where in report["train"]["examples"]["bad_json"][0]
    joke = ("###Human: Hi! ###Assistant: Hello, how can I help? ###Human: Tell me a joke. "
            "###Assistant:")
    assert {"prompt": joke} in sets["prompts"]
    sets, report = run_prepare(tmp_path / "t", source=str(FIXTURES / "lmflow_text.json"))
    assert report["train"]["format"] == "lmflow_text"
    assert report["train"]["dropped"] == {"no_assistant_turn": 1}
    assert len(sets["sft"]) == 2 and sets["rm"] == []  # text-only data has no pairs


def test_lmflow_layouts_out_read_back(tmp_path):
    sets, _ = run_prepare(tmp_path, source=str(ANTHROPIC), lmflow_json=True)
    lm = tmp_path / "out" / "lmflow"
    sft = json.loads((lm / "sft.json").read_text())
    assert sft["type"] == "text_only"
    assert read_texts(str(lm / "sft.json")) == [r["text"] for r in sets["sft"]]
    rm = json.loads((lm / "rm.json").read_text())
    assert set(rm["instances"][0]) == {"positive", "negative"}
    assert read_pairs(str(lm / "rm.json")) == [(r["chosen"], r["rejected"]) for r in sets["rm"]]
    assert read_prompts(str(lm / "prompts.json")) == [r["prompt"] for r in sets["prompts"]]


def test_parquet_and_gzip_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in DAHOAS.read_text().splitlines()[:2]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    sets_pq, report = run_prepare(tmp_path / "a", source=str(tmp_path / "d.parquet"))
    assert report["train"]["kept"] == 2
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    sets_gz, _ = run_prepare(tmp_path / "b", source=str(gz))
    assert sets_pq == sets_gz


def test_damaged_gzip_names_the_file(tmp_path):
    gz = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(ANTHROPIC.read_bytes() * 20)
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.jsonl\.gz: line \d+: cannot read the file"):
        run_prepare(tmp_path, source=str(gz))


# ----------------------------------------------------------------------------- errors


def test_file_with_no_usable_rows_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"chosen": "\\n\\nHuman: hi", "rejected": "\\n\\nHuman: hi"}\nnot json\n')
    with pytest.raises(UserError) as e:
        run_prepare(tmp_path, source=str(path))
    message = str(e.value)
    assert message.startswith(f"{path}: no usable rows (2 read; dropped: ")
    assert "bad_json 1" in message and "identical_pair 1" in message
    assert f"first problem: {path}: line " in message


def test_unknown_layout_names_file_and_row(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(UserError, match=r"other\.jsonl: line 1: matches no known data format "
                                        r"\(fields: question, answer\)"):
        run_prepare(tmp_path, source=str(path))


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_prepare(tmp_path, source=str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unknown data file type"):
        run_prepare(tmp_path, source=str(tmp_path / "x.csv"))


def test_explicit_format_parses_rows_the_sniffer_would_refuse(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"chosen": 1}\n' + DAHOAS.read_text().splitlines()[0] + "\n")
    _, report = run_prepare(tmp_path, source=str(path), format="dahoas_hh")
    assert report["train"]["dropped"] == {"missing_field": 1}
    assert report["train"]["kept"] == 1


# ----------------------------------------------------------------------------- sets


def test_prompts_over_the_token_limit_leave_only_the_prompt_sets(tmp_path):
    from fixtures.tiny import train_tokenizer

    tokenizer = train_tokenizer([ANTHROPIC.read_text(encoding="utf-8", errors="replace")], 300)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    everything = DataConfig(source=str(ANTHROPIC), eval_size=0, max_prompt_tokens=None,
                            skip_bad_rows=True)
    paths, _ = prepare(everything, tmp_path / "all", 0, get_plugins(), tokenizer=tokenizer)
    lengths = sorted(count(r["prompt"]) for r in read_jsonl(paths["prompts"]))
    assert len(lengths) == 4 and lengths[1] < lengths[-1]
    limit = lengths[1]
    config = DataConfig(source=str(ANTHROPIC), eval_size=0, max_prompt_tokens=limit,
                        skip_bad_rows=True)
    paths, report = prepare(config, tmp_path / "cut", 0, get_plugins(), tokenizer=tokenizer)
    prompts = [r["prompt"] for r in read_jsonl(paths["prompts"])]
    assert len(prompts) == sum(n <= limit for n in lengths)
    assert max(count(p) for p in prompts) <= limit
    assert report.prompt_length_unit == "tokens"
    assert report.prompt_too_long["prompts"] == 4 - len(prompts) > 0
    assert report.written["sft"] == report.written["rm"] == 4  # those rows stay for SFT and RM


def test_eval_prompts_are_held_out_of_every_training_set(tmp_path):
    sets, report = run_prepare(tmp_path, source=str(FIXTURES / "hh_synthetic.jsonl"),
                               eval_size=2000, eval_max_fraction=0.1)
    assert report["held_out_rows"] == 24  # 10% of 240: eval_size is capped on a small file
    assert len(sets["eval_prompts"]) == 24
    assert len(sets["sft"]) == len(sets["rm"]) == 216
    sets2, _ = run_prepare(tmp_path / "again", source=str(FIXTURES / "hh_synthetic.jsonl"),
                           eval_size=2000, eval_max_fraction=0.1)
    assert sets2 == sets  # same seed, same split


def test_eval_source_gives_the_eval_prompts(tmp_path):
    sets, report = run_prepare(tmp_path, source=str(ANTHROPIC), eval_source=str(DAHOAS),
                               eval_size=2)
    assert report["held_out_rows"] == 0 and len(sets["sft"]) == 4
    assert len(sets["eval_prompts"]) == 2
    assert report["eval"]["format"] == "dahoas_hh"
    assert all("###Assistant:" in r["prompt"] for r in sets["eval_prompts"])


def test_max_rows_limits_what_is_read(tmp_path):
    _, report = run_prepare(tmp_path, source=str(ANTHROPIC), max_rows=3)
    assert report["train"]["rows"] == 3 and report["train"]["kept"] == 2


def test_chat_template_rendering(tmp_path):
    from fixtures.tiny import train_tokenizer

    tokenizer = train_tokenizer(["hello world"], 300)
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    config = DataConfig(source=str(DAHOAS), eval_size=0, template="chat", skip_bad_rows=True)
    paths, _ = prepare(config, tmp_path, 0, get_plugins(), tokenizer=tokenizer)
    prompts = [r["prompt"] for r in read_jsonl(paths["prompts"])]
    assert "<|user|>What is two plus two?\n<|assistant|>" in prompts
    texts = [r["text"] for r in read_jsonl(paths["sft"])]
    assert "<|user|>What is two plus two?\n<|assistant|>Four.\n" in texts
    with pytest.raises(UserError, match="no chat template"):
        prepare(config, tmp_path, 0, get_plugins(), tokenizer=train_tokenizer(["x"], 300))


def chat_tokenizer():
    from fixtures.tiny import train_tokenizer

    tokenizer = train_tokenizer(["hello world"], 300)
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    return tokenizer


def test_reward_model_pairs_are_what_the_reward_source_reads(tmp_path):
    """The RM trains on prompt + answer as the `reward_model` source joins them in alignment,
    not on the full chat rendering that closes the answer with an end-of-turn marker the
    cleaners cut."""
    from rlhfx.plugins.rewards.reward_model import SequenceReward

    reward = SequenceReward(SequenceReward.Config(model="unused"))
    config = DataConfig(source=str(DAHOAS), eval_size=0, template="chat", shuffle=False,
                        skip_bad_rows=True)
    paths, _ = prepare(config, tmp_path / "chat", 0, get_plugins(), tokenizer=chat_tokenizer())
    prompts = [r["prompt"] for r in read_jsonl(paths["prompts"])]
    rm = list(read_jsonl(paths["rm"]))
    assert prompts[0] == "<|user|>What is a good name for a dog?<|end|>\n<|assistant|>\n"
    assert rm[0]["chosen"] == reward.texts([prompts[0]], ["Rex is a fine name."])[0]
    assert rm[0]["chosen"] == prompts[0] + "Rex is a fine name."
    assert all("<|end|>" not in r["chosen"][len(p):] for r, p in zip(rm, prompts, strict=True))
    # with markers the pair text is the dialogue itself, as before
    sets, _ = run_prepare(tmp_path / "markers", source=str(DAHOAS), shuffle=False)
    assert sets["rm"][0]["chosen"] == (
        "###Human: What is a good name for a dog? ###Assistant: Rex is a fine name."
    )
    assert sets["rm"][0]["chosen"] == reward.texts([sets["prompts"][0]["prompt"]],
                                                   ["Rex is a fine name."])[0]


def test_a_system_prompt_opens_every_prompt_pair_and_dialogue(tmp_path):
    system = "Answer in two sentences."
    config = DataConfig(source=str(DAHOAS), eval_size=0, template="chat", shuffle=False,
                        skip_bad_rows=True, system_prompt=system)
    paths, _ = prepare(config, tmp_path, 0, get_plugins(), tokenizer=chat_tokenizer())
    opening = f"<|system|>{system}<|end|>\n"
    prompts = [r["prompt"] for r in read_jsonl(paths["prompts"])]
    assert prompts[0] == opening + "<|user|>What is a good name for a dog?<|end|>\n<|assistant|>\n"
    assert next(iter(read_jsonl(paths["rm"])))["chosen"] == prompts[0] + "Rex is a fine name."
    assert all(r["text"].startswith(opening) for r in read_jsonl(paths["sft"]))
    with pytest.raises(ValueError, match='system_prompt needs template = "chat"'):
        DataConfig(source=str(DAHOAS), system_prompt=system)


def test_prompt_files_give_the_prompt_sets(tmp_path):
    train = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I boil an egg?"
                   "\n\nAssistant:", "topic": "eggs"},
        {"prompt": "###Human: Why is the sky blue? ###Assistant:"},
        {"prompt": "What is compost?"},                            # a plain question
        {"prompt": "\n\nHuman: q\n\nAssistant: an answer, not a prompt"},
        {"prompt": ""},
        {"question": "no prompt field"},
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"prompt": "\n\nHuman: Held out?\n\nAssistant:"}) + "\n")
    sets, report = run_prepare(tmp_path, source=str(ANTHROPIC), prompts_source=str(train),
                               eval_prompts_source=str(evals), eval_size=10)
    assert [r["prompt"] for r in sets["prompts"]] == [
        "###Human: Hi ###Assistant: Hello! ###Human: How do I boil an egg? ###Assistant:",
        "###Human: Why is the sky blue? ###Assistant:",
        "###Human: What is compost? ###Assistant:",
    ]
    assert sets["eval_prompts"] == [{"prompt": "###Human: Held out? ###Assistant:"}]
    counts = report["prompt_files"][0]
    assert counts["rows"] == 7 and counts["kept"] == 3
    assert counts["dropped"] == {"bad_json": 1, "empty_prompt": 1, "missing_field": 1,
                                 "no_human_turn": 1}
    assert len(sets["sft"]) == len(sets["rm"]) == 4  # the pairs are still read from `source`
    with pytest.raises(UserError, match=r"no usable prompt rows \(1 read"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"prompt": ""}) + "\n")
        run_prepare(tmp_path / "b", source=str(ANTHROPIC), prompts_source=str(bad))


def test_eval_rm_holds_the_held_out_pairs(tmp_path):
    sets, _ = run_prepare(tmp_path, source=str(ANTHROPIC), eval_source=str(DAHOAS), eval_size=5)
    train_texts = {r["chosen"] for r in sets["rm"]}
    assert len(sets["eval_rm"]) == 3  # the Dahoas file's usable pairs
    assert not train_texts & {r["chosen"] for r in sets["eval_rm"]}
    sets, _ = run_prepare(tmp_path / "two", source=str(ANTHROPIC), eval_source=str(DAHOAS),
                          eval_size=2)
    assert len(sets["eval_rm"]) == 2
    sets, report = run_prepare(tmp_path / "split", source=str(FIXTURES / "hh_synthetic.jsonl"),
                               eval_size=24)
    assert len(sets["eval_rm"]) == report["held_out_rows"] == 24
    for pair, prompt in zip(sets["eval_rm"], sets["eval_prompts"], strict=True):
        assert pair["chosen"].startswith(prompt["prompt"])  # the held-out rows, in order


def test_judge_fraction_splits_the_training_pairs_disjointly(tmp_path):
    source = str(FIXTURES / "hh_synthetic.jsonl")
    whole, _ = run_prepare(tmp_path / "whole", source=source, eval_size=4)
    sets, report = run_prepare(tmp_path / "split", source=source, eval_size=4,
                               judge_fraction=0.25)
    pairs = [(r["chosen"], r["rejected"]) for r in whole["rm"]]
    rm = [(r["chosen"], r["rejected"]) for r in sets["rm"]]
    judge = [(r["chosen"], r["rejected"]) for r in sets["rm_judge"]]
    distinct = set(pairs)
    assert len(distinct) < len(pairs)  # the fixture repeats some pairs
    assert len(set(judge)) == round(0.25 * len(distinct))
    assert not set(rm) & set(judge)  # no pair text on both sides ...
    assert sorted(rm + judge) == sorted(pairs)  # ... and together every row, once
    assert rm == [p for p in pairs if p not in set(judge)]  # each keeps the shuffled order
    assert judge == [p for p in pairs if p in set(judge)]
    assert sets["sft"] == whole["sft"] and sets["eval_rm"] == whole["eval_rm"]
    assert report["written"]["rm_judge"] == len(judge)
    again, _ = run_prepare(tmp_path / "again", source=source, eval_size=4, judge_fraction=0.25)
    assert again["rm_judge"] == sets["rm_judge"]  # seeded
    assert "rm_judge" not in whole  # written only when asked for


def test_split_for_judge_by_hand():
    from rlhfx.plugins.data.prepare import split_for_judge

    pairs = [{"chosen": str(i), "rejected": "x"} for i in range(10)]
    rm, judge = split_for_judge(pairs, 0.5, seed=7)
    assert len(rm) == len(judge) == 5 and not {p["chosen"] for p in rm} & {
        p["chosen"] for p in judge}
    assert split_for_judge(pairs, 0.5, seed=7) == (rm, judge)
    assert split_for_judge(pairs, 0.5, seed=8) != (rm, judge)
    twice = pairs + pairs[:3]  # a repeated pair goes wholly to one side
    rm2, judge2 = split_for_judge(twice, 0.5, seed=7)
    assert len(rm2) + len(judge2) == 13 and not {p["chosen"] for p in rm2} & {
        p["chosen"] for p in judge2}
    assert len({p["chosen"] for p in judge2}) == 5
    with pytest.raises(UserError, match=r"r.toml: stages.data.judge_fraction = 0.04: of 10 "
                                        r"distinct training pairs that leaves 10 for the reward "
                                        r"model and 0 for the judge"):
        split_for_judge(pairs, 0.04, seed=0, where="r.toml: stages.data")
    with pytest.raises(UserError, match="leaves 0 for the reward model and 1 for the judge"):
        split_for_judge(pairs[:1], 0.6, seed=0)
    with pytest.raises(ValueError, match="judge_fraction"):
        DataConfig.model_validate({"source": "x.jsonl", "judge_fraction": 1.0})


# ----------------------------------------------------------------------------- CLI and stage


def test_cli_data_prepare_prints_counts(rlhfx_cli, tmp_path):
    result = rlhfx_cli("data", "prepare", str(ANTHROPIC), "--out", str(tmp_path / "o"),
                       "--eval-size", "0", "--lmflow", "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    assert f"{ANTHROPIC} (anthropic_hh): 13 rows read, 4 kept, dropped: bad_json 2" in result.output
    assert "written: sft 4, rm 4, prompts 4, eval_prompts 0" in result.output
    assert (tmp_path / "o" / "lmflow" / "rm.json").exists()


def test_cli_data_prepare_bad_file_exits_2(rlhfx_cli, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    result = rlhfx_cli("data", "prepare", str(path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert f"error: {path}: no usable rows (0 read" in result.output
    assert "Traceback" not in result.output


def test_cli_data_prepare_out_is_a_file_exits_2(rlhfx_cli, tmp_path):
    out = tmp_path / "taken.txt"
    out.write_text("keep me\n")
    result = rlhfx_cli("data", "prepare", str(ANTHROPIC), "--out", str(out))
    assert result.exit_code == 2
    assert f"--out: {out} is an existing file, not a directory" in result.output
    assert "Traceback" not in result.output
    assert out.read_text() == "keep me\n"  # nothing already written is lost


def test_data_stage_in_a_recipe(rlhfx_cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[run]\noutput_dir = "{tmp_path / "run"}"\n\n'
        f'[stages.data]\nsource = "{ANTHROPIC}"\neval_size = 0\nformat = "anthropic_hh"\n'
        "skip_bad_rows = true\n"
    )
    assert rlhfx_cli("validate", str(recipe)).exit_code == 0
    result = rlhfx_cli("run", str(recipe))
    assert result.exit_code == 0, result.output
    stage = tmp_path / "run" / "stages" / "data"
    assert len((stage / "sft.jsonl").read_text().splitlines()) == 4
    state = json.loads((tmp_path / "run" / "run_state.json").read_text())
    assert set(state["stages"]["data"]["outputs"]) == {
        "sft", "rm", "prompts", "eval_prompts", "eval_rm",
    }
    metrics = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["dropped/bad_json"] == 2 and metrics[0]["written/sft"] == 4


def test_recipe_rejects_unknown_format(rlhfx_cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[stages.data]\nsource = "{ANTHROPIC}"\nformat = "anthropic"\n')
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2
    assert "stages.data.format.name: unknown data format 'anthropic'" in result.output


# ----------------------------------------------------------------------------- broken rows stop


GOOD_ROW = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                       "rejected": "\n\nHuman: hi\n\nAssistant: go away"})


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"{not json", "not JSON (Expecting property name enclosed in double quotes, column 2)"),
        (b'{"chosen": "caf\xe9"}', "not UTF-8 (invalid continuation byte at byte 15)"),
        (b'{"rejected": "x"}', "no 'chosen' field (fields: rejected)"),
        (b'{"chosen": 3, "rejected": "x"}', "'chosen' is int, not a string"),
    ],
)
def test_a_broken_row_stops_the_data_stage_with_file_and_line(tmp_path, line, problem):
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD_ROW.encode() + b"\n" + line + b"\n" + GOOD_ROW.encode() + b"\n")
    with pytest.raises(UserError) as e:
        run_prepare(tmp_path, source=str(path), format="anthropic_hh", skip_bad_rows=False)
    assert str(e.value) == f"{path}: line 2: {problem} (set skip_bad_rows = true to drop such rows)"
    _, report = run_prepare(tmp_path, source=str(path), format="anthropic_hh")
    assert report["train"]["kept"] == 2 and sum(report["train"]["dropped"].values()) == 1


def test_content_filters_stay_counted_drops_without_skip_bad_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    same = json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b",
                       "rejected": "\n\nHuman: a\n\nAssistant: b"})
    path.write_text(f"{GOOD_ROW}\n{same}\n")
    _, report = run_prepare(tmp_path, source=str(path), skip_bad_rows=False)
    assert report["train"]["dropped"] == {"identical_pair": 1}


def test_prompt_and_pair_files_stop_at_a_broken_row(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    with pytest.raises(UserError) as e:
        read_prompts(str(prompts))
    assert str(e.value) == (f"{prompts}: line 2: no prompt or text field (fields: question) "
                            "(set skip_bad_rows = true to drop such rows)")
    assert read_prompts(str(prompts), skip_bad_rows=True) == ["a"]
    pairs = tmp_path / "rm.jsonl"
    pairs.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": "a"}\n')
    with pytest.raises(UserError, match=rf"^{pairs}: line 2: needs chosen/rejected"):
        read_pairs(str(pairs))
    assert read_pairs(str(pairs), skip_bad_rows=True) == [("a", "b")]
    prompt_file = tmp_path / "pp.jsonl"
    prompt_file.write_text('{"prompt": "What?"}\n{"prompt": 3}\n')
    source = tmp_path / "d.jsonl"
    source.write_text(GOOD_ROW + "\n")
    with pytest.raises(UserError, match=rf"^{prompt_file}: line 2: 'prompt' is int"):
        run_prepare(tmp_path, source=str(source), prompts_source=str(prompt_file),
                    skip_bad_rows=False)


def test_a_directory_named_like_a_data_file_is_an_error(tmp_path):
    folder = tmp_path / "pairs.jsonl"
    folder.mkdir()
    with pytest.raises(UserError) as e:
        run_prepare(tmp_path, source=str(folder))
    assert str(e.value) == f"{folder}: is a directory, not a data file; name the file itself"
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.md").write_text("x")
    with pytest.raises(UserError, match=r"is a directory with no data files"):
        read_texts(str(empty))


def test_a_byte_order_mark_is_accepted_in_json_and_jsonl(tmp_path):
    bom = "\ufeff"
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(bom + '{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    assert read_prompts(str(jsonl)) == ["a", "b"]
    lmflow = tmp_path / "p.json"
    lmflow.write_text(bom + json.dumps({"type": "text_only", "instances": [{"text": "c"}]}),
                      encoding="utf-8")
    assert read_texts(str(lmflow)) == ["c"]


def test_broken_data_in_a_run_exits_2_and_the_run_resumes_once_fixed(rlhfx_cli, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(f"{GOOD_ROW}\n{{oops\n{GOOD_ROW}\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[run]\noutput_dir = "{tmp_path / "run"}"\n\n'
                      f'[stages.data]\nsource = "{data}"\neval_size = 0\n')
    result = rlhfx_cli("run", str(recipe))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: {data}: line 2: not JSON (Expecting property name enclosed in double quotes, "
        "column 2) (set skip_bad_rows = true to drop such rows)"
    )
    assert "Traceback" not in result.output
    data.write_text(f"{GOOD_ROW}\n{GOOD_ROW}\n")
    result = rlhfx_cli("run", str(recipe))
    assert result.exit_code == 0, result.output
    assert "stage data (data): resuming" in (tmp_path / "run" / "run.log").read_text()


def test_read_column_takes_the_named_field_and_names_a_row_without_it(tmp_path):
    from rlhfx.data.sets import read_column

    source = tmp_path / "texts.jsonl"
    source.write_text('{"content": "a b"}\n{"content": "c d", "text": "ignored"}\n',
                      encoding="utf-8")
    assert read_column(str(source), "content") == ["a b", "c d"]
    source.write_text('{"content": "a b"}\n{"text": "no content here"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="content"):
        read_column(str(source), "content")
    assert read_column(str(source), "content", skip_bad_rows=True) == ["a b"]
