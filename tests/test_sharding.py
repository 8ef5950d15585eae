"""FSDP2 sharding (core/sharding.py) under torchrun with 2 CPU processes: the same training as
one unsharded process, half the parameter and optimizer memory per process, a plain Hugging
Face checkpoint out, an exact resume from the sharded checkpoint, sampling with gathered
weights; and the parallelism settings in recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfx import sharding
from rlhfx.errors import RecipeError, RecipeErrors
from rlhfx.recipe import load_recipe
from rlhfx.tiny import tiny_causal_lm

HERE = Path(__file__).resolve().parent


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    result = torchrun(HERE / "sharding_worker.py", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def reference_after(steps: int) -> dict[str, torch.Tensor]:
    """The unsharded one-process run of the worker's training (the full batch each step)."""
    sys.path.insert(0, str(HERE))
    try:
        from sharding_worker import BATCH, LR, batch
    finally:
        sys.path.remove(str(HERE))
    model = tiny_causal_lm("builtin:tiny-gpt-neo").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    for step in range(1, steps + 1):
        ids = batch(step)
        # The mean of the two halves' mean losses is the full batch's mean (equal halves).
        loss = sum(model(input_ids=half, labels=half).loss for half in ids.chunk(2)) / 2
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert BATCH % 2 == 0
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


#: Sharded and unsharded runs sum the same numbers in another order: float32 rounding only.
TOLERANCE = 1e-5


def test_two_processes_train_like_one_and_save_a_plain_checkpoint(sharded_run):
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(sharded_run / "after2")
    config = json.loads((sharded_run / "after2" / "config.json").read_text())
    assert config["architectures"] == ["GPTNeoForCausalLM"]  # not FSDP's wrapper class
    expected = reference_after(2)
    got = saved.state_dict()
    assert set(got) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=TOLERANCE, rtol=0, msg=name)
    # training moved the weights well beyond the tolerance
    start = tiny_causal_lm("builtin:tiny-gpt-neo").state_dict()
    moved = max((expected[k] - start[k]).abs().max().item() for k in expected)
    assert moved > 100 * TOLERANCE

    straight = torch.load(sharded_run / "straight.pt")
    after4 = reference_after(4)
    for name, value in after4.items():
        torch.testing.assert_close(straight[name], value, atol=TOLERANCE, rtol=0, msg=name)


def test_resume_from_the_sharded_checkpoint_is_exact(sharded_run):
    straight = torch.load(sharded_run / "straight.pt")
    resumed = torch.load(sharded_run / "resumed.pt")
    round_trip = torch.load(sharded_run / "round_trip.pt")
    assert set(straight) == set(resumed) == set(round_trip)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name  # bit for bit
        assert torch.equal(straight[name], round_trip[name]), name


def test_each_process_holds_half_the_parameters_and_optimizer_state(sharded_run):
    ranks = [json.loads((sharded_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    model = tiny_causal_lm("builtin:tiny-gpt-neo")
    optimizer = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    optimizer.step()
    full_params = sharding.local_parameter_bytes(model)
    full = sharding.local_parameter_bytes(model, optimizer)  # what each DDP process holds
    assert full == 3 * full_params  # weights + AdamW's two moments, float32
    assert ranks[0]["blocks"] == 2  # GPT-Neo's transformer.h, found without naming it
    for figures in ranks:
        assert figures["params_bytes"] == pytest.approx(full_params / 2, rel=0.02)
        assert figures["params_and_adam_bytes"] == pytest.approx(full / 2, rel=0.02)
        assert figures["params_after_sampling"] == figures["params_bytes"]  # resharded
    assert ranks[0]["params_and_adam_bytes"] + ranks[1]["params_and_adam_bytes"] == \
        pytest.approx(full, rel=0.02)


def test_sampling_with_gathered_weights_matches_the_full_model(sharded_run):
    straight = torch.load(sharded_run / "straight.pt")
    model = tiny_causal_lm("builtin:tiny-gpt-neo")
    model.load_state_dict(straight)
    sys.path.insert(0, str(HERE))
    try:
        from sharding_worker import batch
    finally:
        sys.path.remove(str(HERE))
    prompt = batch(0)[:2, :4]
    for rank in (0, 1):
        sample = json.loads((sharded_run / f"rank{rank}.json").read_text())["sample"]
        n = 3 + 4 * rank
        expected = model.generate(prompt, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                  pad_token_id=0)
        assert sample == expected.tolist()


def test_transformer_blocks_by_class_name_and_by_default():
    model = tiny_causal_lm("builtin:tiny-gpt-neo")
    default = sharding.transformer_blocks(model)
    assert default == list(model.transformer.h)
    named = sharding.transformer_blocks(model, ["GPTNeoBlock"])
    assert named == default
    assert sharding.transformer_blocks(model, ["NoSuchLayer"]) == []


# ------------------------------------------------------------------ the recipe side
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


STAGE = """
[stages.sft]
model = "builtin:tiny-gpt-neo"
data = "{data}"
"""


@pytest.fixture
def data_file(tmp_path):
    return write(tmp_path / "d.jsonl", '{"text": "hello"}\n')


def test_parallelism_defaults_to_ddp_and_stages_override_run(tmp_path, data_file):
    plain = load_recipe(write(tmp_path / "a.toml", STAGE.format(data=data_file)))
    assert plain.parallelism("sft") == sharding.Parallelism()
    assert not plain.parallelism("sft").sharded

    text = (
        '[run]\nparallelism = "fsdp"\n[run.fsdp]\nmixed_precision = "bf16"\ncpu_offload = true\n'
        + STAGE.format(data=data_file)
        + "\n[stages.rm]\nname = \"sft\"\nmodel = \"builtin:tiny-gpt-neo\"\n"
        + f'data = "{data_file}"\nparallelism = "ddp"\n'
        + "\n[stages.third]\nname = \"sft\"\nmodel = \"builtin:tiny-gpt-neo\"\n"
        + f'data = "{data_file}"\n[stages.third.fsdp]\ncpu_offload = false\n'
    )
    loaded = load_recipe(write(tmp_path / "b.toml", text))
    sft = loaded.parallelism("sft")
    assert sft.mode == "fsdp" and sft.fsdp.mixed_precision == "bf16" and sft.fsdp.cpu_offload
    assert loaded.parallelism("rm").mode == "ddp"
    third = loaded.parallelism("third")
    # the stage's key replaces the run's; the keys it does not set come from [run.fsdp]
    assert third.mode == "fsdp" and not third.fsdp.cpu_offload
    assert third.fsdp.mixed_precision == "bf16"
    # the stage's own config never sees these keys
    assert "parallelism" not in loaded.recipe.stages["rm"].options


@pytest.mark.parametrize(("snippet", "where"), [
    ('[run]\nparallelism = "zero3"\n', "run.parallelism"),
    ('[run.fsdp]\nmixed_precision = "fp8"\n', "run.fsdp.mixed_precision"),
    ('[run.fsdp]\noffload = true\n', "run.fsdp.offload"),
    ('[run]\ntimeout_s = 0\n', "run.timeout_s"),
])
def test_bad_parallelism_settings_name_the_key(tmp_path, data_file, snippet, where):
    recipe = write(tmp_path / "r.toml", snippet + STAGE.format(data=data_file))
    with pytest.raises((RecipeError, RecipeErrors)) as info:
        load_recipe(recipe)
    assert where in str(info.value)


def test_bad_stage_parallelism_names_the_stage_key(tmp_path, data_file):
    recipe = write(tmp_path / "r.toml", STAGE.format(data=data_file) + 'parallelism = "tp"\n')
    with pytest.raises((RecipeError, RecipeErrors)) as info:
        load_recipe(recipe)
    assert "stages.sft.parallelism" in str(info.value)
