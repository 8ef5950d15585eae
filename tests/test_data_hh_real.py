"""The data stage on the 1,800 real hh-rlhf pairs rlhfx ships (recipes/hh_cpu.toml's data)."""

from __future__ import annotations

from rlhfx.files import read_jsonl
from rlhfx.model_sources import package_path
from rlhfx.plugins.data.config import DataConfig
from rlhfx.plugins.data.prepare import prepare
from rlhfx.registry import get_plugins

REAL = package_path("pkg:rlhfx.plugins.data/hh_rlhf/harmless-base-test.head1800.jsonl.gz")


def test_real_hh_file(tmp_path):
    config = DataConfig(source=str(REAL), eval_size=100)
    paths, report = prepare(config, tmp_path, seed=0, plugins=get_plugins())
    train = report.train
    assert train.format == "anthropic_hh"
    assert train.rows == 1800
    # four rows of this file end in an empty answer; nothing else is malformed
    assert dict(train.dropped) == {"empty_response": 4}
    assert train.kept == 1796
    assert all("line " in m for m in train.examples["empty_response"])
    assert report.held_out == 100
    sets = {name: list(read_jsonl(p)) for name, p in paths.items()}
    assert len(sets["sft"]) == len(sets["rm"]) == 1696
    assert len(sets["prompts"]) + report.prompt_too_long["prompts"] == 1696
    assert len(sets["eval_prompts"]) + report.prompt_too_long["eval_prompts"] == 100
    assert report.prompt_too_long["prompts"] > 0  # some harmless-base dialogues are long
    for row in sets["prompts"]:
        prompt = row["prompt"]
        assert prompt.startswith("###Human: ") and prompt.endswith(" ###Assistant:")
        assert "\n\nHuman:" not in prompt and "\n\nAssistant:" not in prompt
        assert len(prompt.split()) <= 256  # no tokenizer given: the limit counts words
    for pair in sets["rm"]:
        assert pair["chosen"] != pair["rejected"]
        assert pair["chosen"].startswith("###Human: ")
    # each prompt is an SFT dialogue without its last answer
    derived = {t["text"].rsplit(" ###Assistant:", 1)[0] + " ###Assistant:" for t in sets["sft"]}
    assert {r["prompt"] for r in sets["prompts"]} <= derived
