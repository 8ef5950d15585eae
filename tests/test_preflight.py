"""The preflight: every local model and tokenizer a recipe names is checked in seconds before
any stage runs, with a message that says what is missing and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlhfx.errors import UserError
from rlhfx.preflight import check_source

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny causal LM saved with its tokenizer (built-in tiny model, no download)."""
    from rlhfx.tiny import tiny_causal_lm, tiny_tokenizer

    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_causal_lm("builtin:tiny-gpt-neo").save_pretrained(path)
    tiny_tokenizer("builtin:tiny-gpt-neo").save_pretrained(path)
    return path


@pytest.fixture
def model(saved, tmp_path) -> Path:
    """A fresh copy of the saved model to break."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def without_tokenizer(path: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink(missing_ok=True)
    return path


def test_a_complete_model_passes(model):
    assert check_source(str(model)) is None
    assert check_source(str(model), tokenizer_only=True) is None
    assert check_source("builtin:tiny-gpt-neo") is None
    assert check_source("@sft.model") is None
    assert check_source("someone/some-model") is None  # a hub id: nothing local to check


def test_a_model_without_its_tokenizer(model):
    without_tokenizer(model)
    assert check_source(str(model)) == (
        f"{model}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, vocab.txt, "
        "...); save the tokenizer beside the model or set tokenizer"
    )
    assert check_source(str(model), needs_tokenizer=False) is None
    assert check_source(str(model), tokenizer_only=True) == (
        f"{model}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, vocab.txt, "
        "...); name the folder the tokenizer was saved in"
    )


def test_a_folder_of_trainer_checkpoints_suggests_the_newest(model, tmp_path):
    out = tmp_path / "trainer-out"
    out.mkdir()
    for step in (5, 10, 40):
        shutil.copytree(model, out / f"checkpoint-{step}")
    assert check_source(str(out)) == (
        f"{out}: holds Trainer checkpoints (checkpoint-5, checkpoint-10, checkpoint-40), not a "
        f"model; name the newest, {out / 'checkpoint-40'}, or the stage's saved model"
    )
    assert check_source(str(out / "checkpoint-40")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_source(str(empty)) == (
        f"{empty}: no config.json: not a saved model (save it with save_pretrained, or name the "
        "folder that holds config.json)"
    )


def test_damaged_weights_are_named(model):
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert check_source(str(model)) == (
        f"{weights}: damaged safetensors file (truncated: {len(data) // 2} bytes of {len(data)}); "
        "save the model again or copy it completely"
    )
    weights.write_bytes(b"\xff" * 64)
    assert check_source(str(model)) == (
        f"{weights}: damaged safetensors file (its header is cut off or invalid); save the model "
        "again"
    )
    weights.unlink()
    assert check_source(str(model)) == (
        f"{model}: no weights (model.safetensors or pytorch_model.bin); the model was not saved "
        "completely"
    )
    (model / "config.json").write_text("{oops")
    assert check_source(str(model)).startswith(f"{model / 'config.json'}: unreadable model config")


def test_a_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not found</html>")
    assert check_source(str(fake)) == (
        f"{fake}: not a GGUF file (it does not start with 'GGUF'); download it again"
    )


RECIPE = """\
[run]
output_dir = "out"

[stages.m]
name = "make"
count = 2

[stages.c]
name = "consume"
source = "@m.rows"
model = "{model}"
"""


def test_run_stops_before_any_stage_and_resumes_once_fixed(
    teststages, rlhfx_cli, model, saved, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    without_tokenizer(model)
    (tmp_path / "r.toml").write_text(RECIPE.format(model=model))
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: r.toml: stages.c.model: {model}: no tokenizer files (tokenizer.json, "
        "tokenizer.model, vocab.json, vocab.txt, ...); save the tokenizer beside the model or "
        "set tokenizer"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "stages").exists()  # no stage ran: nothing spent
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(saved / name, model / name)
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 0, result.output


def test_a_finished_stages_model_output_is_checked_on_resume(model, tmp_path):
    from rlhfx.preflight import check_recipe
    from rlhfx.recipe import load_recipe

    without_tokenizer(model)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[stages.sft]\nmodel = "builtin:tiny-gpt-neo"\ndata = "builtin:tiny-prompts"\n'
        '[stages.align]\npolicy = "@sft.model"\nprompts = "builtin:tiny-prompts"\n'
        '[stages.align.reward]\nname = "length"\n[stages.align.algorithm]\nname = "raft"\n'
    )
    loaded = load_recipe(recipe)
    stages = list(loaded.recipe.stages.items())
    check_recipe("r.toml", stages[1:])  # sft still to run: it will write the model
    with pytest.raises(UserError) as e:
        check_recipe("r.toml", stages[1:], finished={"sft": {"model": str(model)}})
    assert str(e.value) == (
        f"r.toml: stages.align.policy: {model}: no tokenizer files (tokenizer.json, "
        "tokenizer.model, vocab.json, vocab.txt, ...); save the tokenizer beside the model or "
        "set tokenizer"
    )
