"""rlhfx's decode attention kernel (rlhfx.decode_attention) against torch's attention, and the
fallbacks where it cannot be built or run."""

from __future__ import annotations

import logging

import pytest

from rlhfx import decode_attention
from rlhfx.decode_attention import fits, kernel

torch = pytest.importorskip("torch")


@pytest.fixture
def attend():
    found = kernel()
    if found is None:
        pytest.skip("the decode attention kernel does not run here (no AVX512-BF16 or no C++ "
                    "compiler)")
    return found


@pytest.fixture
def fresh_kernel():
    """kernel() asked again from scratch, and put back as it was after the test."""
    kernel.cache_clear()
    yield
    kernel.cache_clear()


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
    assert fits(64, 3) and fits(128, 16) and not fits(96, 3) and not fits(64, 17)
    query, keys, values, live = case(2, 1, 2, 64, 9)
    with pytest.raises(RuntimeError, match="head size"):
        attend(query[..., :32].contiguous(), keys[..., :32], values[..., :32], live, 1.0)
    with pytest.raises(RuntimeError, match="bf16"):
        attend(query.float(), keys.float(), values.float(), live, 1.0)
    with pytest.raises(RuntimeError, match="match"):
        attend(query, keys[:1], values[:1], live, 1.0)


def test_without_avx512_bf16_there_is_no_kernel(monkeypatch, fresh_kernel):
    built = []
    monkeypatch.setattr(decode_attention, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda *a, **k: built.append(a))
    assert kernel() is None and not built


def test_a_failed_build_warns_once_and_leaves_torchs_attention(monkeypatch, fresh_kernel,
                                                                caplog):
    def fail(*args, **kwargs):
        raise RuntimeError("Error building extension 'rlhfx_decode_attention'\nmore lines")

    monkeypatch.setattr(decode_attention.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(decode_attention, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr("torch.utils.cpp_extension.load", fail)
    with caplog.at_level(logging.WARNING, logger="rlhfx"):
        assert kernel() is None
        assert kernel() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["rlhfx: could not build the decode attention kernel (Error building "
                        "extension 'rlhfx_decode_attention'); sampling uses torch's attention "
                        "instead"]
