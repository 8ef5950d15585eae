"""A rollout engine from a third-party plugin is what the align stage and `rlhfx eval` sample
with: started once on the policy, given the weights after each update, closed at the end."""

from __future__ import annotations

import json
import types

import pytest

ENGINE_PLUGIN = '''
from rlhfx import ComponentConfig, RolloutEngine, hookimpl
from rlhfx.rollouts import generate

CALLS = []


class RecordingConfig(ComponentConfig):
    answer_tokens: int = 3


class Recording(RolloutEngine):
    """transformers' generate, cut short, with every call recorded."""

    name = "recording"
    Config = RecordingConfig

    def start(self, model, tokenizer, setup):
        CALLS.append(("start", setup.batch_size))
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts, sampling, num_samples=1, stop_strings=(), rng=None,
                 progress=None, description="generating"):
        CALLS.append(("generate", len(prompts), num_samples))
        sampling.max_new_tokens = self.config.answer_tokens
        sampling.length_range = None
        return generate(self.model, self.tokenizer, prompts, sampling, num_samples=num_samples,
                        stop_strings=stop_strings, rng=rng)

    def sync_weights(self, model):
        CALLS.append(("sync",))
        self.model = model

    def close(self):
        CALLS.append(("close",))


@hookimpl
def rlhfx_register_rollout_engines(register):
    register(Recording)
'''

RECIPE = """[run]
seed = 1

[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
reward = { name = "length", unit = "chars" }
rollouts = { engine = "recording", answer_tokens = 2 }

[stages.align.algorithm]
name = "raft"
batch_size = 2
k = 2
epochs = 1
train_batch_size = 2
iterations = 2
min_new_tokens = 6
max_new_tokens = 6
torch_threads = 1
"""


@pytest.fixture
def engine_plugin(rlhfx_plugins):
    module = types.ModuleType("rlhfx_recording_engine")
    exec(compile(ENGINE_PLUGIN, "rlhfx_recording_engine", "exec"), module.__dict__)
    rlhfx_plugins(module)
    return module


def test_the_align_stage_samples_with_a_plugins_engine(engine_plugin, rlhfx_cli, tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE, encoding="utf-8")
    result = rlhfx_cli("run", str(path), "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    calls = engine_plugin.CALLS
    assert calls[0][0] == "start" and calls[-1] == ("close",)
    assert [c for c in calls if c[0] == "generate"] == [("generate", 2, 2)] * 2
    assert calls.count(("sync",)) >= 1  # after the first update, before the second sampling
    samples = (tmp_path / "run" / "stages" / "align").rglob("samples*.jsonl")
    rows = [json.loads(line) for f in samples for line in f.read_text().splitlines()]
    assert len(rows) == 8 and {r["response_tokens"] for r in rows} <= {1, 2}  # its options


def test_rlhfx_eval_answers_with_a_plugins_engine(engine_plugin, rlhfx_cli, tmp_path):
    result = rlhfx_cli("eval", "builtin:tiny-gpt-neo", "--judge", "length", "--max-prompts", "3",
                       "--engine", '{ engine = "recording", answer_tokens = 1 }',
                       "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert engine_plugin.CALLS[0][0] == "start"
    assert ("generate", 3, 1) in engine_plugin.CALLS and engine_plugin.CALLS[-1] == ("close",)


def test_an_unknown_engine_option_names_the_recipe_key(engine_plugin, rlhfx_cli, tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.replace("answer_tokens = 2", "answer_tokenz = 2"), encoding="utf-8")
    result = rlhfx_cli("validate", str(path))
    assert result.exit_code == 2
    assert "stages.align.rollouts.answer_tokenz: unknown key (valid keys: answer_tokens)" \
        in result.output
    result = rlhfx_cli("eval", "builtin:tiny-gpt-neo", "--judge", "length",
                       "--engine", "recordin", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "--engine: unknown rollout engine 'recordin' (did you mean 'recording'?)" \
        in result.output


def test_engines_are_listed_and_in_the_recipe_schema(engine_plugin, rlhfx_cli):
    listed = json.loads(rlhfx_cli("components", "list", "--kind", "rollout_engine",
                                  "--json").output)
    assert {(r["name"], r["builtin"]) for r in listed} == {
        ("hf", True), ("vllm", True), ("recording", False)}
    shown = json.loads(rlhfx_cli("components", "show", "rollout_engine:recording",
                                 "--json").output)
    assert [o["name"] for o in shown["options"]] == ["answer_tokens"]
    schema = json.loads(rlhfx_cli("schema").output)["definitions"]
    assert schema["rollout_engine.recording"]["properties"]["engine"] == {"const": "recording"}
    assert "answer_tokens" in schema["rollout_engine.recording"]["properties"]
    table = schema["rollout_engine"]["anyOf"][1]
    assert set(table["properties"]["engine"]["enum"]) == {"hf", "vllm", "recording"}
    align = schema["stage.align"]["properties"]["rollouts"]
    assert align["$ref"] == "#/definitions/rollout_engine"
