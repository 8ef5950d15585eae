"""A diverged policy stops the run in one line (stage, iteration, metric, what to lower), keeps
the last checkpoint as the resume point and never saves a non-finite model; `on_nonfinite =
"skip"` skips such optimizer steps and counts them."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch

from rlhfx import hookimpl
from rlhfx.alignment import nonfinite
from rlhfx.alignment import policy_update as pu
from rlhfx.alignment.checkpoints import Checkpoints
from rlhfx.alignment.nonfinite import NonFinite
from rlhfx.rollouts import SamplingSettings, generate
from rlhfx.testing import LENGTH
from rlhfx.testing import write_algorithm_recipe as write_recipe


def _layer():
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    return layer, torch.optim.SGD(layer.parameters(), lr=0.5)


def _nan_at_second_step(layer):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    calls = []

    def loss_of(rows, total):
        calls.append(rows)
        loss = layer(x[rows]).sum() / total
        return loss * math.nan if len(calls) == 2 else loss

    return loss_of


def test_a_nan_loss_stops_the_update_before_the_optimizer_steps():
    layer, opt = _layer()
    with pytest.raises(NonFinite, match="the loss is nan"):
        pu.run_epochs(layer, opt, [[[0], [1]]], lambda rows: float(len(rows)),
                      _nan_at_second_step(layer), max_grad_norm=1.0)
    # the first step happened (clipped to norm 1), the second did not
    assert layer.weight.tolist()[0] == pytest.approx([0.5, 1.0], abs=1e-5)


def test_skip_leaves_out_the_step_and_counts_it():
    layer, opt = _layer()
    with nonfinite.policy("skip") as steps:
        report = pu.run_epochs(layer, opt, [[[0], [1]]], lambda rows: float(len(rows)),
                               _nan_at_second_step(layer))
    assert steps.skipped == 1 and report.optimizer_steps == 1
    assert layer.weight.tolist() == [[0.5, 1.0]]


def test_a_broken_sampling_distribution_is_named_not_a_torch_error():
    from rlhfx.tiny import tiny_causal_lm, tiny_tokenizer

    model, tok = tiny_causal_lm("builtin:tiny-gpt-neo"), tiny_tokenizer("builtin:tiny-gpt-neo")
    with torch.no_grad():
        model.lm_head.weight.fill_(math.nan)  # tied to the embeddings: every logit is NaN
    with pytest.raises(NonFinite, match="the sampled distribution"):
        generate(model, tok, ["a b", "c"], SamplingSettings(max_new_tokens=3), num_samples=2)


def test_the_logits_guard_marks_only_broken_rows():
    from rlhfx.rollouts import FiniteLogits

    inf = math.inf
    scores = torch.tensor([[0.5, -inf, 1.0],  # top-k masked: fine
                           [0.5, math.nan, 1.0], [0.5, inf, 1.0], [-inf, -inf, -inf],
                           [2.0, 1.0, 0.0]])
    guard = FiniteLogits()
    out = guard(None, scores)
    assert bool(guard.broken)
    assert torch.equal(out[1:4], torch.zeros(3, 3))
    assert torch.equal(out[[0, 4]], scores[[0, 4]])
    fine = FiniteLogits()
    sound = scores[[0, 4]]
    assert fine(None, sound) is sound  # on a CPU sound logits are not copied
    assert not bool(fine.broken)
    fine(None, scores)  # a later broken step is still noted
    assert bool(fine.broken)


SMALL = {"batch_size": 4, "k": 4, "mini_batch_size": 8, "epochs": 2, "min_new_tokens": 8,
         "max_new_tokens": 8, "torch_threads": 1, "save_every": 1}


@pytest.mark.slow
def test_a_real_divergence_stops_in_one_line_and_skip_counts_the_steps(rlhfx_cli, tmp_path):
    recipe = write_recipe(tmp_path, "grpo", {**SMALL, "iterations": 2, "learning_rate": 1e3})
    out = tmp_path / "run"
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "stages.align: iteration 1:" in text and "the policy diverged" in text
    assert "is inf" in text or "is nan" in text
    assert "learning rate" in text and "max_grad_norm" in text and "temperature" in text
    assert "Traceback" not in result.output
    stage = out / "stages" / "align"
    assert not (stage / "model").exists()  # nothing non-finite saved as final
    state = json.loads((out / "run_state.json").read_text())
    assert state["stages"]["align"]["status"] == "running"

    skipping = write_recipe(tmp_path, "grpo", {**SMALL, "iterations": 2, "learning_rate": 1e3,
                                               "on_nonfinite": "skip"}, file="skip.toml")
    result = rlhfx_cli("run", str(skipping), "-o", str(tmp_path / "skip"))
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "skip" / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    skipped = [json.loads(line)["nonfinite_skipped_steps"] for line in lines]
    assert len(skipped) == 2 and skipped[0] >= 1


def _poisoning_plugin():
    from rlhfx.plugins.grpo import GRPO

    class Poisoned(GRPO):
        """GRPO whose second update leaves a NaN in the policy (a diverged step)."""

        name = "poisoned_grpo"

        def update(self, batch):
            metrics = super().update(batch)
            if batch.iteration == 2:
                with torch.no_grad():
                    next(self.policy.parameters()).view(-1)[0] = math.nan
            return metrics

    plugin = types.ModuleType("rlhfx_poisoned")

    @hookimpl
    def rlhfx_register_algorithms(register):
        register(Poisoned)

    plugin.rlhfx_register_algorithms = rlhfx_register_algorithms
    return plugin


def test_non_finite_weights_keep_the_last_finite_checkpoint(rlhfx_plugins, rlhfx_cli, tmp_path):
    rlhfx_plugins(_poisoning_plugin())
    options = {"iterations": 3, "batch_size": 2, "k": 2, "min_new_tokens": 2,
               "max_new_tokens": 2, "torch_threads": 1, "learning_rate": 1e-3}
    recipe = write_recipe(tmp_path, "poisoned_grpo", options, reward=LENGTH)
    out = tmp_path / "run"
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "iteration 2: a weight of the policy is NaN or infinite" in text
    assert "the checkpoint of iteration 1 is kept" in text
    root = out / "stages" / "align" / "checkpoints"
    assert json.loads((root / "latest.json").read_text())["dir"] == "iter-0001"
    saved = Checkpoints(root).load_algorithm_state(root / "iter-0001")
    assert all(torch.isfinite(t).all() for t in saved["policy"].values())
    assert not (out / "stages" / "align" / "model").exists()
