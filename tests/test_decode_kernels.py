"""rlhfx's decode step kernels (rlhfx.decode_kernels) against torch's operations as the fused
step computes them without the kernels (rlhfx.fused_decode.TorchOps), and the fallbacks where
they cannot be built or run."""

from __future__ import annotations

import logging

import pytest

from rlhfx import decode_kernels
from rlhfx.decode_kernels import fits, kernels
from rlhfx.fused_decode import TorchOps

torch = pytest.importorskip("torch")


@pytest.fixture
def ops():
    found = kernels()
    if found is None:
        pytest.skip("the decode kernels do not run here (no AVX512-BF16 or no C++ compiler)")
    return found


@pytest.fixture
def attend(ops):
    return ops.decode_attention


@pytest.fixture
def fresh_kernels():
    """kernels() asked again from scratch, and put back as it was after the test."""
    kernels.cache_clear()
    yield
    kernels.cache_clear()


def case(rows, kv_heads, group, size, length, spare=5, seed=0):
    """A query, cache views of buffers longer than `length` (as the sampling loop's), and a
    mask with left padding of different lengths; the padded keys and values are large, so a
    position the mask hides changes the result if it is not hidden, and the buffers' unwritten
    positions are NaN (as uninitialised memory may be), so reading one spoils it."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(rows, kv_heads, group, size, generator=generator).bfloat16()
    buffers = [torch.randn(rows, kv_heads, length + spare, size, generator=generator).bfloat16()
               for _ in range(2)]
    live = torch.ones(rows, length, dtype=torch.bool)
    for r in range(rows):
        live[r, : (r * length) // (rows + 1)] = False
    for buffer in buffers:
        buffer[:, :, :length][~live[:, None, :, None].expand(-1, kv_heads, -1, size)] = 60.0
        buffer[:, :, length:] = float("nan")
    keys, values = (b[:, :, :length] for b in buffers)
    return query, keys, values, live


def errors(attend, query, keys, values, live, scale):
    """Largest error of the kernel and of torch's bf16 attention against float32."""
    mask = live[:, None, None, :]
    exact = torch.nn.functional.scaled_dot_product_attention(
        query.float(), keys.float(), values.float(), attn_mask=mask, scale=scale)
    torch_bf16 = torch.nn.functional.scaled_dot_product_attention(
        query, keys, values, attn_mask=mask, scale=scale)
    ours = attend(query, keys, values, live, scale)
    assert ours.shape == query.shape and ours.dtype == torch.bfloat16
    return tuple((x.float() - exact).abs().max().item() for x in (ours, torch_bf16))


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("group", [1, 3, 7, 16])
@pytest.mark.parametrize("length", [1, 2, 8, 15, 16, 17, 40, 129])
def test_the_kernel_is_torchs_attention_up_to_rounding(attend, size, group, length):
    # lengths around the kernel's blocks of 8 and 16 positions and its pairs; groups beyond
    # what its registers hold at once (3 heads of 128, 6 of 64)
    ours, theirs = errors(attend, *case(5, 2, group, size, length), scale=size ** -0.5)
    assert ours <= 1.25 * theirs + 2e-3, (ours, theirs)


def test_sharp_scores_and_one_live_position(attend):
    query, keys, values, live = case(3, 3, 3, 64, 33, seed=1)
    live[1] = False
    live[1, -1] = True  # a row whose only live position is the newest
    ours, theirs = errors(attend, query, keys, values, live, scale=4.0)
    assert ours <= 1.25 * theirs + 2e-3
    alone = attend(query, keys, values, live, 4.0)[1]
    assert torch.equal(alone, values[1, :, -1:].expand_as(alone))


def test_shapes_the_kernel_does_not_compute_are_refused(attend):
    assert fits(64, 3, 576, 1536) and fits(128, 16, 2048, 5632)
    assert not fits(96, 3, 576, 1536) and not fits(64, 17, 576, 1536)
    assert not fits(64, 3, 584, 1536) and not fits(64, 3, 576, 1540)
    query, keys, values, live = case(2, 1, 2, 64, 9)
    with pytest.raises(RuntimeError, match="head size"):
        attend(query[..., :32].contiguous(), keys[..., :32], values[..., :32], live, 1.0)
    with pytest.raises(RuntimeError, match="bf16"):
        attend(query.float(), keys.float(), values.float(), live, 1.0)
    with pytest.raises(RuntimeError, match="match"):
        attend(query, keys[:1], values[:1], live, 1.0)


def test_without_avx512_bf16_there_is_no_kernel(monkeypatch, fresh_kernels):
    built = []
    monkeypatch.setattr(decode_kernels, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda *a, **k: built.append(a))
    assert kernels() is None and not built


def test_a_failed_build_warns_once_and_leaves_torchs_attention(monkeypatch, fresh_kernels):
    def fail(*args, **kwargs):
        raise RuntimeError("Error building extension 'rlhfx_decode_kernels'\nmore lines")

    class Recorder(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    warnings: list[str] = []
    log = logging.Logger("rlhfx-test", level=logging.WARNING)  # outside any run's set-up
    log.addHandler(Recorder())
    monkeypatch.setattr(decode_kernels, "log", log)
    monkeypatch.setattr(decode_kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(decode_kernels, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr("torch.utils.cpp_extension.load", fail)
    assert kernels() is None
    assert kernels() is None
    assert warnings == ["rlhfx: could not build the decode step's kernels (Error building "
                        "extension 'rlhfx_decode_kernels'); sampling uses torch's operations "
                        "instead"]


def hidden_rows(rows, features, seed, spread=3.0):
    generator = torch.Generator().manual_seed(seed)
    return (spread * torch.randn(rows, features, generator=generator)).bfloat16()


def differing(a, b):
    """The share of elements that differ, and the largest difference in bf16 steps of b."""
    assert a.shape == b.shape and a.dtype == b.dtype == torch.bfloat16
    steps = (a.float() - b.float()).abs() / (b.float().abs() * 2.0 ** -7).clamp_min(1e-30)
    return (a != b).float().mean().item(), steps.max().item()


def test_the_residual_and_rmsnorm_are_transformers_up_to_the_means_rounding(ops):
    h, delta = hidden_rows(37, 576, 1), hidden_rows(37, 576, 2, spread=0.5)
    weight = hidden_rows(1, 576, 3, spread=0.2)[0]
    for extra in (delta, None):
        ours_h, ours = ops.add_rms_norm(h, extra, weight, 1e-5)
        theirs_h, theirs = TorchOps.add_rms_norm(h, extra, weight, 1e-5)
        assert torch.equal(ours_h, theirs_h)  # the sum rounds once: no room to differ
        share, steps = differing(ours, theirs)
        assert share < 0.01 and steps <= 1.0  # a float32 mean summed in another order
    # a row of a wider view (h's rows inside a longer buffer) reads right
    wide = torch.cat([h, h], dim=1)[:, :576]
    assert torch.equal(ops.add_rms_norm(wide, None, weight, 1e-5)[1],
                       ops.add_rms_norm(h, None, weight, 1e-5)[1])


@pytest.mark.parametrize("heads, kv_heads, size", [(9, 3, 64), (4, 2, 128)])
def test_the_rotary_embedding_is_transformers_bit_for_bit(ops, heads, kv_heads, size):
    rows = 6
    qkv = hidden_rows(rows, (heads + 2 * kv_heads) * size, 4)
    angles = torch.arange(rows)[:, None] * torch.rand(size // 2, generator=torch.Generator()
                                                      .manual_seed(5))
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().bfloat16(), angles.sin().bfloat16()
    ours, theirs = ops.rotary(qkv, cos, sin, heads, kv_heads), TorchOps.rotary(
        qkv, cos, sin, heads, kv_heads)
    assert ours[0].shape == (rows, heads, size) and ours[1].shape == (rows, kv_heads, size)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_silu_times_up_is_transformers_up_to_exps_last_bits(ops):
    gate_up = hidden_rows(40, 2 * 1536, 6)
    share, steps = differing(ops.silu_mul(gate_up), TorchOps.silu_mul(gate_up))
    assert share < 0.01 and steps <= 1.0
    # saturated gates: silu(-100) is 0 (not NaN), silu(100) is 100
    extreme = torch.zeros(1, 32).bfloat16()
    extreme[0, :16] = torch.tensor([-100.0, 100.0] * 8)
    extreme[0, 16:] = 1.0
    assert torch.allclose(ops.silu_mul(extreme).float(),
                          torch.tensor([0.0, 100.0] * 8), atol=1e-30)
