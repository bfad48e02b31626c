"""Packed 4-bit layouts: exact round trips, error bounds, the E2M1 grid."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genfoundry.nunchaku import packing as P


def test_nibble_order_is_low_then_high():
    codes = torch.tensor([[1, -2, 7, -8]], dtype=torch.int8)
    packed = P.pack_nibbles(codes)
    assert packed.dtype == torch.int8 and packed.shape == (1, 2)
    raw = packed.view(torch.uint8).tolist()[0]
    assert raw == [0x1 | (0xE << 4), 0x7 | (0x8 << 4)]
    assert torch.equal(P.unpack_nibbles(packed, signed=True), codes)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 4), half=st.integers(1, 16), seed=st.integers(0, 2**16), signed=st.booleans())
def test_pack_unpack_round_trip(rows, half, seed, signed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-8, 8) if signed else (0, 16)
    codes = torch.randint(lo, hi, (rows, 2 * half), generator=g, dtype=torch.int8)
    packed = P.pack_nibbles(codes)
    assert packed.shape == (rows, half)
    assert torch.equal(P.unpack_nibbles(packed, signed=signed), codes)
    # and the other way: every byte survives unpack -> pack
    assert torch.equal(P.pack_nibbles(P.unpack_nibbles(packed, signed=signed)), packed)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), groups=st.integers(1, 3), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_int4_weight_round_trip_and_error_bound(n, groups, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, 64 * groups, generator=g) * 3).to(dtype)
    q, s = P.quantize_int4_weight(w)
    assert q.shape == (n, 32 * groups) and s.shape == (groups, n) and s.dtype == P.scale_dtype_for(dtype)
    codes = P.unpack_nibbles(q, signed=True)
    assert int(codes.abs().max()) <= 7
    deq = P.dequantize_int4_weight(q, s, 64)
    # requantizing the dequantized weight gives the same codes and scales
    q2, s2 = P.quantize_int4_weight(deq.to(dtype) if dtype == torch.float32 else deq)
    if dtype == torch.float32:
        assert torch.equal(q2, q)
    step = s.t().float().repeat_interleave(64, dim=1)
    assert bool(((deq - w.float()).abs() <= step / 2 + 1e-6 + step * 0.01).all())


def test_int4_activation_range_and_unsigned_mode():
    x = torch.randn(5, 128) * torch.linspace(0.01, 30, 128)
    q, s = P.quantize_int4_act(x, 64)
    assert s.shape == (2, 5)
    deq = P.dequantize_int4_act(q, s, 64)
    step = s.t().repeat_interleave(64, dim=1)
    assert bool(((deq - x).abs() <= step / 2 + 1e-6).all())
    gelu = torch.nn.functional.gelu(torch.randn(4, 64) * 3)
    qu, su = P.quantize_int4_act(gelu, 64, unsigned=True)
    codes = P.unpack_nibbles(qu, signed=False)
    assert int(codes.min()) >= 0 and int(codes.max()) == 15
    shifted = P.dequantize_int4_act(qu, su, 64, unsigned=True) - P.UNSIGNED_SHIFT
    assert bool(((shifted - gelu).abs() <= su.t().repeat_interleave(64, 1) / 2 + 1e-6).all())


def test_zero_activation_group_does_not_divide_by_zero():
    x = torch.zeros(2, 64)
    q, s = P.quantize_int4_act(x, 64)
    assert torch.isfinite(s).all() and torch.equal(P.dequantize_int4_act(q, s, 64), x)


def test_e2m1_rounding_ties_to_even_code_and_saturates():
    v = torch.tensor([0.0, 0.24, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 6.0, 100.0, -0.75, -5.0, -0.1])
    expect = torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, 6.0, -1.0, -4.0, 0.0])
    assert torch.equal(P.e2m1_decode(P.e2m1_encode(v)), expect)
    assert torch.equal(P.e2m1_encode(torch.tensor([-0.1])), torch.tensor([0], dtype=torch.int8))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_nvfp4_weight_values_on_the_grid(seed, scale):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 64, generator=g) * scale
    q, s, t = P.quantize_nvfp4_weight(w)
    assert s.dtype == torch.float8_e4m3fn and s.shape == (4, 8) and t.dtype == torch.float32
    vals = P.e2m1_decode(P.unpack_nibbles(q, signed=False))
    grid = torch.tensor(P.E2M1_VALUES)
    assert bool(torch.isin(vals.abs(), grid).all())
    deq = P.dequantize_nvfp4_weight(q, s, t)
    assert torch.equal(deq, (vals.reshape(8, 4, 16) * s.t().float().unsqueeze(-1) * t).reshape(8, 64))
    rel = (deq - w).norm() / w.norm()
    assert float(rel) < 0.15
    # packed codes survive unpack -> pack
    assert torch.equal(P.pack_nibbles(P.unpack_nibbles(q, signed=False)), q)


def test_nvfp4_activation_scales_are_fp8_and_bounded():
    x = torch.randn(3, 32) * 5
    q, s = P.quantize_nvfp4_act(x)
    assert s.dtype == torch.float8_e4m3fn and s.shape == (2, 3)
    deq = P.dequantize_nvfp4_act(q, s)
    assert float((deq - x).norm() / x.norm()) < 0.2


def test_group_size_must_divide_k():
    with pytest.raises(ValueError, match="does not divide"):
        P.quantize_int4_weight(torch.randn(4, 96), 64)
    with pytest.raises(ValueError, match="even"):
        P.check_groups(96, 3)
