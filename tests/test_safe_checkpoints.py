"""Checkpoints are data: a pickle planted in any file of a real run's checkpoint never runs,
the file is set aside as damaged and the run goes on; an algorithm state a checkpoint cannot
hold is refused naming the plugin; no code path loads pickles or remote model code."""

from __future__ import annotations

import json
import math
import os
import re
import types
from pathlib import Path

import pytest
import torch

from rlhfx import hookimpl
from rlhfx.alignment.checkpoints import Checkpoints, LoopState
from rlhfx.alignment.state_files import StateTypeError, flatten, unflatten
from rlhfx.errors import UserError
from rlhfx.testing import LENGTH
from rlhfx.testing import write_algorithm_recipe as write_recipe

ROOT = Path(__file__).parent.parent


class _Payload:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(file: Path, marker: Path) -> None:
    """Replace `file` with a pickle whose loading would run `touch marker`."""
    torch.save({"state": _Payload(marker), "model": torch.zeros(2)}, file)


def test_the_payload_is_live_so_the_tests_below_can_fail(tmp_path):
    file, marker = tmp_path / "x.pt", tmp_path / "ran"
    plant(file, marker)
    torch.load(file, weights_only=False)  # what the old loader did
    assert marker.exists()


def test_state_round_trips_optimizer_states_and_tied_tensors():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    shared = torch.arange(6.0)
    state = {"policy": {"w": shared, "tied": shared, "view": shared[2:4]},
             "optimizer": opt.state_dict(), "trainer": {"kl": 0.2, "steps": 3, "done": False,
                                                        "note": None, "pair": (1, "a"),
                                                        "nan": math.nan}}
    tensors, tree = flatten(state)
    back = unflatten(json.loads(json.dumps(tree)), tensors)
    assert back["policy"]["tied"] is back["policy"]["w"]  # stored once
    assert torch.equal(back["policy"]["view"], torch.tensor([2.0, 3.0]))
    assert back["trainer"]["pair"] == (1, "a") and math.isnan(back["trainer"]["nan"])
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys stay ints
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(back["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"],
                       opt.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("value, where", [
    ({"ctl": {"x": {1, 2}}}, r"state\['ctl'\]\['x'\] is a builtins.set"),
    ({"ctl": [types.SimpleNamespace()]}, r"state\['ctl'\]\[0\] is a types.SimpleNamespace"),
    ({(1, 2): 0}, r"state has a key \(1, 2\)"),
])
def test_a_value_a_checkpoint_cannot_hold_is_named(value, where):
    with pytest.raises(StateTypeError, match=where):
        flatten(value)


def test_a_pickle_in_any_checkpoint_file_is_damage_not_code(tmp_path):
    """Unit level, every file of the layout and a legacy `algorithm.pt` too."""
    marker = tmp_path / "ran"
    ckpts = Checkpoints(tmp_path / "checkpoints")
    for name in ("algorithm.safetensors", "algorithm.json", "loop.json"):
        path = ckpts.save(LoopState(iteration=1), {"policy": {"w": torch.ones(2)}})
        plant(path / name, marker)
        with pytest.raises(UserError, match=r"algorithm|loop\.json"):
            ckpts.load(path)
    legacy = tmp_path / "checkpoints" / "iter-0001"
    for name in ("algorithm.safetensors", "algorithm.json"):
        (legacy / name).unlink()
    plant(legacy / "algorithm.pt", marker)
    with pytest.raises(UserError, match=r"algorithm\.pt: cannot be read \(UnpicklingError"):
        ckpts.load_algorithm_state(legacy)
    torch.save({"policy": {"w": torch.ones(2)}}, legacy / "algorithm.pt")  # an older run's
    assert torch.equal(ckpts.load_algorithm_state(legacy)["policy"]["w"], torch.ones(2))
    assert not marker.exists()


TINY = {
    "grpo": dict(batch_size=2, k=2, learning_rate=1e-3),
    "ppo": dict(batch_size=2, mini_batch_size=2, ppo_epochs=1),
    "online_dpo": dict(batch_size=2, k=2, learning_rate=1e-3),
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(TINY))
def test_a_pickle_planted_in_every_file_of_a_real_checkpoint_never_runs(
    rlhfx_cli, tmp_path, algorithm
):
    """A run's checkpoint with every file replaced by a pickle payload: the next run sets
    it aside as damaged and starts over; the payload never runs."""
    marker = tmp_path / "ran"

    def recipe(iterations: int) -> Path:
        options = {**TINY[algorithm], "iterations": iterations, "min_new_tokens": 4,
                   "max_new_tokens": 4, "torch_threads": 1}
        return write_recipe(tmp_path, algorithm, options, reward=LENGTH)

    out = tmp_path / "run"
    assert rlhfx_cli("run", str(recipe(1)), "-o", str(out)).exit_code == 0
    stage = out / "stages" / "align"
    root = stage / "checkpoints"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert {p.name for p in files} == {"algorithm.safetensors", "algorithm.json", "loop.json",
                                       "latest.json"}
    for file in files:
        plant(file, marker)
    result = rlhfx_cli("run", str(recipe(2)), "-o", str(out))  # one more iteration
    assert result.exit_code == 2  # as for any damage: none intact is said, then a fresh start
    assert "no intact checkpoint left" in result.output
    assert "iter-0001: damaged" in (out / "run.log").read_text()
    assert (stage / "checkpoints-set-aside" / "iter-0001").is_dir()
    result = rlhfx_cli("run", str(recipe(2)), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert not marker.exists(), "a checkpoint file ran code"
    assert "resuming after" not in (out / "run.log").read_text()
    steps = [json.loads(x)["step"] for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # started over
    if algorithm == "ppo":  # the value head beside the final model is safetensors too
        from safetensors.torch import load_file

        head = load_file(stage / "model" / "value_head.safetensors")
        assert head and all(v.dtype == torch.float32 for v in head.values())
        assert not list((stage / "model").glob("*.pt"))


def _odd_state_plugin():
    from rlhfx.plugins.grpo import GRPO

    class OddState(GRPO):
        name = "odd_state"

        def state_dict(self):
            return {**super().state_dict(), "controller": types.SimpleNamespace(kl=0.1)}

    plugin = types.ModuleType("rlhfx_odd_state")

    @hookimpl
    def rlhfx_register_algorithms(register):
        register(OddState)

    plugin.rlhfx_register_algorithms = rlhfx_register_algorithms
    return plugin


def test_an_algorithm_state_a_checkpoint_cannot_hold_names_the_plugin(
    rlhfx_plugins, rlhfx_cli, tmp_path
):
    rlhfx_plugins(_odd_state_plugin())
    options = {"iterations": 1, "batch_size": 2, "k": 2, "min_new_tokens": 2,
               "max_new_tokens": 2, "torch_threads": 1}
    out = tmp_path / "run"
    result = rlhfx_cli("run", str(write_recipe(tmp_path, "odd_state", options, reward=LENGTH)),
                       "-o", str(out))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "odd_state" in text and "state_dict()" in text
    assert "state['controller'] is a types.SimpleNamespace" in text
    assert "Traceback" not in result.output
    assert not list((out / "stages" / "align" / "checkpoints").glob("*iter-*"))  # no half one


def _sources() -> list[Path]:
    return [p for folder in ("core", "plugins") for p in (ROOT / folder).rglob("*.py")]


def test_no_code_path_unpickles_or_runs_remote_model_code():
    bad = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|trust_remote_code\s*=\s*"
                     r"(?!False)")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _sources()
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if bad.search(line)]
    assert found == []
