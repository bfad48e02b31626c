"""Fake-quant equals the packed round trip exactly; INT8 / NF4 baselines; error bounds."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genfoundry.nunchaku import packing as P
from genfoundry.svdquant import quantizers as Q


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), groups=st.integers(1, 3),
       scale_dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_fake_quant_equals_packed_round_trip(seed, n, groups, scale_dtype):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, 64 * groups, generator=g) * 2
    qw, ws = P.quantize_int4_weight(w, 64, scale_dtype)
    assert torch.equal(Q.fake_quant_weight(w, "int4", 64, scale_dtype), P.dequantize_int4_weight(qw, ws, 64))
    q4, s4, t4 = P.quantize_nvfp4_weight(w)
    assert torch.equal(Q.fake_quant_weight(w, "nvfp4", 16), P.dequantize_nvfp4_weight(q4, s4, t4))
    x = torch.randn(3, 64 * groups, generator=g) * 5
    qa, sa = P.quantize_int4_act(x, 64, scale_dtype=scale_dtype)
    assert torch.equal(Q.fake_quant_act(x, "int4", 64, scale_dtype=scale_dtype), P.dequantize_int4_act(qa, sa, 64))
    qu, su = P.quantize_int4_act(x, 64, unsigned=True, scale_dtype=scale_dtype)
    torch.testing.assert_close(Q.fake_quant_act(x, "int4", 64, unsigned=True, scale_dtype=scale_dtype),
                               P.dequantize_int4_act(qu, su, 64, unsigned=True) - P.UNSIGNED_SHIFT, rtol=0, atol=0)
    qn, sn = P.quantize_nvfp4_act(x)
    assert torch.equal(Q.fake_quant_act(x, "nvfp4", 16), P.dequantize_nvfp4_act(qn, sn))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_nf4_and_int8_round_trips(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 128, generator=g)
    q, absmax = Q.quantize_nf4(w, 64)
    deq = Q.dequantize_nf4(q, absmax, 64)
    q2, absmax2 = Q.quantize_nf4(deq, 64)
    assert torch.equal(q2, q) and torch.equal(absmax2, absmax)  # dequantized values are fixed points
    assert torch.equal(Q.fake_quant_weight(w, "nf4", 64), deq)
    # each value lands on its nearest level: error at most half the widest level gap times absmax
    gap = float((Q.NF4_LEVELS[1:] - Q.NF4_LEVELS[:-1]).max())
    assert bool(((deq - w).abs() <= absmax.t().repeat_interleave(64, 1) * gap / 2 + 1e-6).all())
    q8, s8 = Q.quantize_int8_weight(w)
    assert q8.dtype == torch.int8 and s8.shape == (6,)
    assert bool(((Q.dequantize_int8_weight(q8, s8) - w).abs() <= s8[:, None] / 2 + 1e-7).all())
    xa, xs = Q.quantize_int8_act(w)
    assert bool(((Q.dequantize_int8_act(xa, xs) - w).abs() <= xs[:, None] / 2 + 1e-7).all())


def test_nf4_levels():
    levels = Q.NF4_LEVELS
    assert levels.shape == (16,) and float(levels[0]) == -1.0 and float(levels[-1]) == 1.0
    assert bool((levels[1:] > levels[:-1]).all()) and float(levels[7]) == 0.0
    assert (levels > 0).sum() == 8 and (levels < 0).sum() == 7


def test_unknown_formats_are_rejected():
    with pytest.raises(ValueError, match="unknown weight format"):
        Q.fake_quant_weight(torch.randn(2, 64), "int3", 64)
    with pytest.raises(ValueError, match="unknown activation format"):
        Q.fake_quant_act(torch.randn(2, 64), "fp8", 64)
