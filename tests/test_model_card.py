"""Model cards beside every final model: the Hugging Face metadata header, how the model was
trained and what the run measured; a README.md rlhfx did not write is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfx.files import write_jsonl
from rlhfx.model_card import MARK, write_model_cards

REPO = Path(__file__).resolve().parents[1]
HH = REPO / "tests" / "fixtures" / "hh_synthetic.jsonl"


def header(card: str) -> dict[str, list[str] | str]:
    """The metadata block at the top of a card, as `key: value` or `key:` + `- item` lines."""
    lines = card.splitlines()
    assert lines[0] == "---"
    end = lines.index("---", 1)
    meta: dict[str, list[str] | str] = {}
    key = ""
    for line in lines[1:end]:
        if line.startswith("- "):
            meta.setdefault(key, [])
            assert isinstance(meta[key], list)
            meta[key].append(line[2:])  # type: ignore[union-attr]
        else:
            key, _, value = line.partition(":")
            if value.strip():
                meta[key] = value.strip()
    return meta


def fake_model(folder: Path, adapter: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / ("adapter_config.json" if adapter else "config.json")).write_text("{}")


@pytest.fixture
def fake_run(tmp_path):
    """An SFT model from a hub model on hub data, then GRPO on it, judged by an evaluate stage."""
    run = tmp_path / "run"
    fake_model(run / "stages/sft/model")
    fake_model(run / "stages/sft/adapter", adapter=True)
    fake_model(run / "stages/align/model")
    write_jsonl(run / "stages/align/metrics.jsonl", [
        {"step": 0, "iteration": 0, "eval_reward_mean": 0.25, "eval_distinct_2": 0.8},
        {"step": 1, "iteration": 1, "reward_mean": 0.3},
        {"step": 2, "iteration": 2, "reward_mean": 0.4, "eval_reward_mean": 0.5,
         "eval_distinct_2": 0.75},
    ])
    write_jsonl(run / "stages/sft/metrics.jsonl", [{"step": 5, "loss": 1.0},
                                                    {"step": 10, "eval/loss": 0.5}])
    (run / "stages/judge").mkdir(parents=True)
    (run / "stages/judge/eval.json").write_text(json.dumps({
        "judge": {"name": "length"}, "num_prompts": 6,
        "models": [{"label": "before", "mean_reward": 1.5}, {"label": "after", "mean_reward": 2.0}],
        "comparisons": [{"a": "after", "b": "before", "win_rate": 0.75, "ci_level": 0.95,
                         "ci_low": 0.5, "ci_high": 1.0, "wins": 4, "losses": 1, "ties": 1,
                         "sign_test_p": 0.375, "lc_win_rate": 0.6125, "lc_ci_low": 0.3,
                         "lc_ci_high": 0.9}],
    }))
    data = {"run": {"name": "demo", "seed": 3}, "stages": {
        "data": {"source": "Anthropic/hh-rlhf"},
        "sft": {"model": "HuggingFaceTB/SmolLM2-135M", "data": "@data.sft", "method": "lora"},
        "align": {"policy": "@sft.model", "prompts": "@data.prompts", "reward": "length",
                  "algorithm": {"name": "grpo", "k": 4, "beta": 0.0}},
        "judge": {"name": "evaluate", "models": ["@sft.model", "@align.model"],
                  "labels": ["before", "after"], "judge": "length"},
    }}
    stages = {
        "data": {"status": "completed", "outputs": {"sft": "stages/data/sft.jsonl"}},
        "sft": {"status": "completed", "seconds": 75.0,
                "outputs": {"model": "stages/sft/model", "adapter": "stages/sft/adapter"}},
        "align": {"status": "completed", "seconds": 12.5,
                  "outputs": {"model": str(run / "stages/align/model")}},
        "judge": {"status": "completed", "outputs": {"eval": "stages/judge/eval.json"}},
    }
    return run, data, stages


def test_cards_for_every_model_with_metadata_and_measurements(fake_run):
    run, data, stages = fake_run
    written = write_model_cards(run, data, stages, "recipes/demo.toml")
    assert sorted(p.parent.relative_to(run).as_posix() for p in written) == [
        "stages/align/model", "stages/sft/adapter", "stages/sft/model"]
    align = (run / "stages/align/model/README.md").read_text()
    assert header(align) == {"base_model": "HuggingFaceTB/SmolLM2-135M",
                             "library_name": "transformers", "tags": ["rlhfx", "grpo"],
                             "datasets": ["Anthropic/hh-rlhf"]}
    assert MARK in align
    assert "A model aligned with GRPO, stage `align` of the recipe `demo.toml`" in align
    assert "- algorithm: `grpo` with `k = 4`, `beta = 0.0`" in align
    assert "- reward: `length`" in align
    assert "- prompts: `@data.prompts` (from `Anthropic/hh-rlhf`)" in align
    assert "- iterations: 2" in align and "- time: 12.5 s" in align
    assert ("- eval reward (mean over the held-out prompts, the training reward): 0.25 before "
            "(step 0), 0.5 after (step 2)") in align
    assert ("- `judge` stage, judge `length`: win rate of after over before 0.75 (95% interval "
            "0.5-1; 4 wins, 1 losses, 1 ties; sign test p = 0.375); length-controlled (win rate "
            "at equal answer length) 0.613 (0.3-0.9)") in align
    assert 'name = "grpo"' in align  # the stage's table as TOML
    sft = (run / "stages/sft/model/README.md").read_text()
    assert header(sft)["tags"] == ["rlhfx", "sft", "trl"]
    assert "- optimizer steps: 10" in sft and "- time: 1 min 15 s" in sft
    assert "- eval/loss: 0.5" in sft
    assert "win rate of after over before 0.75" in sft  # it was the `before` side
    assert "before mean reward 1.5 over 6 prompts" in sft
    adapter = (run / "stages/sft/adapter/README.md").read_text()
    assert header(adapter)["library_name"] == "peft"
    assert "A LoRA adapter trained by supervised fine-tuning" in adapter


def test_a_readme_rlhfx_did_not_write_is_kept_and_ours_is_rewritten(fake_run):
    run, data, stages = fake_run
    theirs = run / "stages/sft/model/README.md"
    theirs.write_text("# my own notes\n")
    blank = run / "stages/sft/adapter/README.md"  # what peft saves: the Hub's blank template
    blank.write_text("---\nlibrary_name: peft\n---\n## Model Details\n[More Information Needed]\n")
    write_model_cards(run, data, stages, "demo.toml")
    assert theirs.read_text() == "# my own notes\n"
    assert MARK in blank.read_text() and "[More Information Needed]" not in blank.read_text()
    ours = run / "stages/align/model/README.md"
    ours.write_text(ours.read_text() + "stale line\n")
    stages["align"]["seconds"] = 99.0
    write_model_cards(run, data, stages, "demo.toml")
    assert "stale line" not in ours.read_text() and "- time: 1 min 39 s" in ours.read_text()


def test_local_or_builtin_bases_are_named_in_the_text_not_the_header(fake_run, tmp_path):
    run, data, stages = fake_run
    data["stages"]["sft"]["model"] = "builtin:tiny-gpt-neo"
    data["stages"]["data"]["source"] = str(HH)
    write_model_cards(run, data, stages, "demo.toml")
    card = (run / "stages/align/model/README.md").read_text()
    assert "base_model" not in header(card) and "datasets" not in header(card)
    assert "- base model: `builtin:tiny-gpt-neo`" in card


@pytest.mark.slow
def test_every_trainer_stage_of_a_real_run_gets_a_card(rlhfx_cli, tmp_path):
    """data -> sft -> reward model -> DPO on tiny models, a few steps each."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""\
[run]
output_dir = "{tmp_path / 'run'}"
seed = 3

[stages.data]
source = "{HH}"
eval_size = 8
tokenizer = "builtin:tiny-gpt-neo"

[stages.sft]
model = "builtin:tiny-gpt-neo"
data = "@data.sft"
method = "lora"
max_steps = 2
batch_size = 4
max_length = 64

[stages.reward_model]
model = "builtin:tiny-gpt-neo"
data = "@data.rm"
max_steps = 2
batch_size = 4
max_length = 64
validation_split_percentage = 0

[stages.dpo]
model = "@sft.model"
data = "@data.rm"
eval_data = "@data.eval_rm"
method = "full"
max_steps = 2
batch_size = 4
max_length = 64
""", encoding="utf-8")
    result = rlhfx_cli("run", str(recipe))
    assert result.exit_code == 0, result.output
    stages = tmp_path / "run" / "stages"
    for folder, tags, library in [("sft/model", ["rlhfx", "sft", "trl"], "transformers"),
                                  ("sft/adapter", ["rlhfx", "sft", "trl"], "peft"),
                                  ("reward_model/model", ["rlhfx", "reward-model", "trl"],
                                   "transformers"),
                                  ("dpo/model", ["rlhfx", "dpo", "trl"], "transformers")]:
        card = (stages / folder / "README.md").read_text()
        assert header(card) == {"library_name": library, "tags": tags}, folder
        assert "- base model: `builtin:tiny-gpt-neo`" in card, folder
        assert "- optimizer steps: 2" in card, folder
    dpo = (stages / "dpo/model/README.md").read_text()
    assert "- data: `@data.rm` (from " in dpo and "- eval data: `@data.eval_rm`" in dpo
    assert "- eval/" in dpo  # the held-out figures it logged
