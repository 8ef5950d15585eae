"""The shared token-level update chores: tensors of sampled tokens, response log-probs,
gradient averaging over processes, and mini-batch epochs in step on every process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfx.alignment import policy_update as pu
from rlhfx.components import Sample
from rlhfx.models import accepts_logits_to_keep


def _samples() -> list[Sample]:
    return [
        Sample(0, "p", "r", prompt_ids=[5, 6, 7], response_ids=[8, 9]),
        Sample(0, "p", "r", sample=1, prompt_ids=[5], response_ids=[10, 11, 12, 13]),
        Sample(1, "q", "r", prompt_ids=[14, 15], response_ids=[16]),
    ]


def _model():
    from rlhfx.tiny import tiny_causal_lm

    torch.manual_seed(0)
    return tiny_causal_lm("builtin:tiny-gpt-neo").eval()


def test_token_batch_layout():
    b = pu.TokenBatch.from_samples(_samples(), pad_id=0, device="cpu")
    assert b.prompt_width == 3 and b.response_width == 4
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 0, 0], [0, 0, 5, 10, 11, 12, 13],
                                    [0, 14, 15, 16, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1],
                                         [0, 1, 1, 1, 0, 0, 0]]
    assert b.labels.tolist() == [[8, 9, 0, 0], [10, 11, 12, 13], [16, 0, 0, 0]]
    assert b.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    part = b.rows([2, 0])  # trimmed to their own widest prompt (3) and response (2)
    assert part.input_ids.tolist() == [[0, 14, 15, 16, 0], [5, 6, 7, 8, 9]]
    assert part.mask.tolist() == [[1, 0], [1, 1]] and part.prompt_width == 3


def _full_logits_logprobs(model, samples, temperature):
    """The obvious way: one sample at a time, every position's logits, log-softmax."""
    out = []
    for s in samples:
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float() / temperature
        logp = torch.log_softmax(logits, -1)
        p = len(s.prompt_ids)
        out.append([float(logp[p - 1 + j, t]) for j, t in enumerate(s.response_ids)])
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_equal_the_full_logits_computation(temperature):
    model = _model()
    samples = _samples()
    batch = pu.TokenBatch.from_samples(samples, pad_id=0, device="cpu")
    with torch.no_grad():
        fwd = pu.response_forward(model, batch, temperature=temperature, entropy=True)
        got, entropy = fwd.logp, fwd.entropy
    want = _full_logits_logprobs(model, samples, temperature)
    for i, row in enumerate(want):
        assert got[i, : len(row)].tolist() == pytest.approx(row, abs=1e-5)
        assert float(got[i, len(row):].abs().sum()) == 0.0  # padding
    assert entropy is not None and bool((entropy[batch.mask > 0] > 0).all())
    # the model trims its logits to the response positions: the prompt's are never made
    assert accepts_logits_to_keep(model)


def test_response_logprobs_without_logits_to_keep_slice_the_logits():
    model = _model()

    class Plain(torch.nn.Module):  # a model whose forward knows no logits_to_keep
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, position_ids, use_cache):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, use_cache=use_cache)

    batch = pu.TokenBatch.from_samples(_samples(), pad_id=0, device="cpu")
    assert not accepts_logits_to_keep(Plain())
    with torch.no_grad():
        a = pu.response_logprobs(Plain(), batch)
        b = pu.response_logprobs(model, batch)
    assert torch.allclose(a, b, atol=1e-6)


def test_reference_logprobs_match_the_starting_policy():
    from rlhfx.alignment.reference import ReferenceModel

    model = _model()
    batch = pu.TokenBatch.from_samples(_samples(), pad_id=0, device="cpu")
    reference = ReferenceModel(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
        moved = pu.response_logprobs(model, batch)
    ref = pu.reference_logprobs(reference, batch)
    assert not ref.requires_grad
    assert not torch.allclose(ref, moved, atol=1e-4)


def test_minibatch_plan_has_the_same_count_everywhere():
    g = torch.Generator().manual_seed(0)
    plan = pu.minibatch_plan(3, 4, 2, g)
    assert [len(epoch) for epoch in plan] == [4, 4]
    for epoch in plan:
        assert sorted(i for part in epoch for i in part) == [0, 1, 2]
        assert sum(1 for part in epoch if not part) == 1  # 3 rows over 4 parts
    assert pu.minibatch_plan(0, 2, 1, g) == [[[], []]]


def test_run_epochs_skips_mini_batches_with_no_data_anywhere():
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    plan = [[[0, 1], []]]

    def loss_of(rows, total):
        return layer(x[rows]).sum() / total

    report = pu.run_epochs(layer, opt, plan, lambda rows: float(len(rows)), loss_of)
    assert report.optimizer_steps == 1 and report.empty_minibatches == 1
    # the mean over 2 rows: d/dw = (1 + 0, 0 + 1) / 2, times lr 0.5
    assert layer.weight.tolist() == [[-0.25, -0.25]]
    assert layer.weight.grad is None  # cleared after the last step


def test_run_epochs_accumulates_mini_batches_and_stops_early():
    # two mini-batches per step: the gradient is the mean of their two mean losses
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    def loss_of(rows, total):
        return layer(x[rows]).sum() / total

    plan = [[[0], [1, 2]], [[0], [1, 2]]]
    report = pu.run_epochs(layer, opt, plan, lambda rows: float(len(rows)), loss_of,
                           accumulate=2, stop_after_epoch=lambda: True)
    # step: ((1, 0) + ((0, 1) + (1, 1)) / 2) / 2 = (0.75, 0.5); the early stop leaves epoch 2
    assert (report.optimizer_steps, report.epochs) == (1, 1)
    assert layer.weight[0].tolist() == pytest.approx([-0.75, -0.5])


def test_length_grouped_minibatches_are_seeded_and_cover_every_row():
    lengths = [9, 3, 7, 3, 12, 5, 8, 3, 11, 6, 4, 10]
    first = pu.minibatch_plan(12, 4, 1, torch.Generator().manual_seed(7), lengths)[0]
    again = pu.minibatch_plan(12, 4, 1, torch.Generator().manual_seed(7), lengths)[0]
    assert first == again  # exact resume
    assert sorted(i for m in first for i in m) == list(range(12))
    # grouped: each mini-batch's lengths follow the previous one's
    spans = sorted((min(lengths[i] for i in m), max(lengths[i] for i in m)) for m in first)
    assert spans == [(3, 3), (4, 6), (7, 9), (10, 12)]
    # the order of the mini-batches is drawn too
    orders = {tuple(m[0] for m in pu.minibatch_plan(
        12, 4, 1, torch.Generator().manual_seed(s), lengths)[0]) for s in range(8)}
    assert len(orders) > 1


SYNC_SCRIPT = """
import torch, torch.distributed as dist
from rlhfx import distributed
from rlhfx.alignment.policy_update import sync_gradients, run_epochs
distributed.init()
rank = dist.get_rank()
layer = torch.nn.Linear(2, 1, bias=False)
frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
layer.weight.grad = torch.full((1, 2), float(rank + 1))   # 1 on rank 0, 2 on rank 1
sync_gradients(layer)
assert layer.weight.grad.tolist() == [[1.5, 1.5]], layer.weight.grad
# run_epochs: rank 1 has no rows in the second mini-batch, yet both ranks step twice
with torch.no_grad():
    layer.weight.fill_(0.0)
opt = torch.optim.SGD(layer.parameters(), lr=1.0)
x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
plan = [[[0], [2]]] if rank == 0 else [[[1], []]]
report = run_epochs(layer, opt, plan, lambda r: float(len(r)),
                    lambda r, total: layer(x[r]).sum() / total)
assert report.optimizer_steps == 2, report
assert report.idle_minibatches == (1 if rank == 1 else 0), report
# step 1: mean gradient of rows 0 and 1 = (0.5, 0.5); step 2: row 2 alone = (1, 1)
assert torch.allclose(layer.weight, torch.tensor([[-1.5, -1.5]])), layer.weight
print("ok", rank)
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_sync_gradients_averages_over_two_processes(tmp_path):
    script = tmp_path / "sync.py"
    script.write_text(SYNC_SCRIPT, encoding="utf-8")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--standalone", str(script)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok") == 2
