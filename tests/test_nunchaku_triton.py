"""The fused Triton kernels (genfoundry.nunchaku.triton) under the Triton interpreter on CPU, against
the reference backend (genfoundry.nunchaku.reference) and a float64 recomputation from the spec.

Tolerances
- kernel 1: packed codes and scales bit-exact (the kernel divides with IEEE division and rounds
  half-to-even exactly like the reference); lora_act within fp32 summation-order error.
- kernel 2 / svdq_linear: fp32 output within 2e-6 * max|y| (summation order of the per-group
  integer sums and the low-rank product); 16-bit output within one rounding step of the dtype
  (|d| <= eps(dtype) * |y_ref| + 2e-6 * max|y|), since both sides round the same fp32 value.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

from genfoundry.nunchaku import ops, packing, reference  # noqa: E402


@contextlib.contextmanager
def triton_mode(interpret: bool):
    """Yield the triton backend with its kernels built by the Triton interpreter (interpret=True) or
    compiled. Triton fixes the mode when a @jit function is *defined*, and other test modules may
    already have imported triton (torch._dynamo does) in the other mode, so its standard library and
    our kernel modules are re-imported under the wanted TRITON_INTERPRET, and restored afterwards."""
    import triton.language
    import triton.language.standard
    from triton.runtime.interpreter import InterpretedFunction

    from genfoundry.nunchaku.triton import backend, gemm, numerics, quantize

    def reload_all() -> None:
        importlib.reload(triton.language.standard)
        importlib.reload(triton.language)
        for module in (numerics, quantize, gemm, backend):
            importlib.reload(module)

    def in_mode() -> bool:
        stdlib_ok = isinstance(triton.language.standard.zeros, InterpretedFunction) == interpret
        return stdlib_ok and backend.interpreting() == interpret

    previous = os.environ.get("TRITON_INTERPRET")
    switched = not in_mode()
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        if switched:
            reload_all()
        assert in_mode()
        yield backend
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous
        if switched:
            reload_all()


@pytest.fixture(scope="module")
def tb():
    with triton_mode(interpret=True) as backend:
        yield backend


def _layer(fmt: str, n: int, k: int, rank: int, dtype: torch.dtype, seed: int, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    if fmt == "int4":
        qweight, wscales = packing.quantize_int4_weight(w.to(dtype))
        wtscale = None
    else:
        qweight, wscales, wtscale = packing.quantize_nvfp4_weight(w)
    smooth = (torch.rand(k, generator=g) + 0.5).to(dtype)
    lora_down = (torch.randn(k, rank, generator=g) * 0.1).to(dtype) if rank else None
    lora_up = (torch.randn(n, rank, generator=g) * 0.1).to(dtype) if rank else None
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    return dict(qweight=qweight, wscales=wscales, wtscale=wtscale, smooth=smooth, lora_down=lora_down,
                lora_up=lora_up, bias=b)


def _acts(m: int, k: int, dtype: torch.dtype, seed: int, unsigned: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g) * 2
    x[:, 3] *= 20  # an outlier channel, as in real activations
    if unsigned:  # post-GELU values
        x = torch.nn.functional.gelu(x)
    return x.to(dtype)


def _assert_output_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    g, w = got.double(), want.double()
    scale = w.abs().max().item() + 1e-12
    eps = 0.0 if want.dtype == torch.float32 else torch.finfo(want.dtype).eps
    excess = (g - w).abs() - (eps * w.abs() + 2e-6 * scale)
    assert excess.max().item() <= 0, f"max excess {excess.max().item():.3g} (output scale {scale:.3g})"


GROUP = {"int4": 64, "nvfp4": 16}
# (format, dtype, M, K, rank, unsigned, with smooth): ragged M, K = group x odd, ranks 0/16/24/32
KERNEL1_CASES = [
    ("int4", torch.float32, 1, 192, 0, False, True),
    ("int4", torch.bfloat16, 7, 320, 16, False, True),
    ("int4", torch.float16, 33, 192, 32, True, True),
    ("int4", torch.float32, 7, 64, 24, True, False),
    ("nvfp4", torch.float32, 7, 48, 16, False, True),
    ("nvfp4", torch.bfloat16, 33, 80, 32, False, True),
]


@pytest.mark.parametrize("fmt,dtype,m,k,rank,unsigned,with_smooth", KERNEL1_CASES)
def test_quantize_act_lora_down_matches_reference(tb, fmt, dtype, m, k, rank, unsigned, with_smooth):
    layer = _layer(fmt, 8, k, rank, dtype, seed=m + k)
    x = _acts(m, k, dtype, seed=m, unsigned=unsigned)
    smooth = layer["smooth"] if with_smooth else None
    kw = dict(act_format=fmt, group_size=GROUP[fmt], act_unsigned=unsigned)
    qact, ascales, lora_act = tb.quantize_act_lora_down(x, smooth, layer["lora_down"], **kw)
    q_ref, s_ref, l_ref = reference.quantize_act_lora_down(x, smooth, layer["lora_down"], **kw)
    assert qact.dtype == torch.int8 and qact.shape == (m, k // 2)
    assert ascales.dtype == s_ref.dtype and ascales.shape == s_ref.shape
    assert torch.equal(qact, q_ref), f"{(qact != q_ref).sum().item()} packed bytes differ"
    assert torch.equal(ascales.float(), s_ref.float())
    assert lora_act.shape == (m, rank) and lora_act.dtype == torch.float32
    if rank:
        torch.testing.assert_close(lora_act, l_ref, rtol=1e-5, atol=1e-5)


# (format, out dtype, M, K, N, rank, bias, unsigned): N not a multiple of the 32-wide tile
GEMM_CASES = [
    ("int4", torch.float32, 1, 192, 40, 0, False, False),
    ("int4", torch.float32, 33, 320, 70, 16, True, False),
    ("int4", torch.bfloat16, 7, 192, 40, 32, True, True),
    ("int4", torch.float16, 7, 64, 33, 24, False, False),
    ("nvfp4", torch.float32, 7, 48, 40, 16, True, False),
    ("nvfp4", torch.bfloat16, 33, 80, 70, 0, True, False),
]


@pytest.mark.parametrize("fmt,dtype,m,k,n,rank,bias,unsigned", GEMM_CASES)
def test_gemm_w4a4_lora_up_matches_reference(tb, fmt, dtype, m, k, n, rank, bias, unsigned):
    layer = _layer(fmt, n, k, rank, dtype, seed=n + k, bias=bias)
    x = _acts(m, k, dtype, seed=m + 5, unsigned=unsigned)
    qact, ascales, lora_act = reference.quantize_act_lora_down(
        x, layer["smooth"], layer["lora_down"], act_format=fmt, group_size=GROUP[fmt], act_unsigned=unsigned)
    kw = dict(weight_format=fmt, group_size=GROUP[fmt], wtscale=layer["wtscale"], out_dtype=dtype,
              act_unsigned=unsigned)
    args = (qact, ascales, layer["qweight"], layer["wscales"], lora_act, layer["lora_up"], layer["bias"])
    _assert_output_close(tb.gemm_w4a4_lora_up(*args, **kw), reference.gemm_w4a4_lora_up(*args, **kw))


def test_int4_gemm_equals_float64_recomputation_from_the_spec(tb):
    """Independent of the reference: unpack the nibbles here and sum per group in float64."""
    m, k, n, rank = 5, 192, 24, 16
    layer = _layer("int4", n, k, rank, torch.float32, seed=3)
    x = _acts(m, k, torch.float32, seed=3)
    qact, ascales, lora_act = tb.quantize_act_lora_down(x, layer["smooth"], layer["lora_down"])
    y = tb.gemm_w4a4_lora_up(qact, ascales, layer["qweight"], layer["wscales"], lora_act, layer["lora_up"],
                             layer["bias"], out_dtype=torch.float32)

    def codes(packed):  # low nibble = even k, high nibble = odd k, two's complement
        b = packed.to(torch.int64) & 0xFF
        lo, hi = b & 0xF, b >> 4
        both = torch.stack((lo, hi), dim=-1).flatten(-2)
        return torch.where(both >= 8, both - 16, both).double()

    a, w = codes(qact), codes(layer["qweight"])
    groups = k // 64
    want = torch.zeros(m, n, dtype=torch.float64)
    for g in range(groups):
        sl = slice(64 * g, 64 * (g + 1))
        want += (a[:, sl] @ w[:, sl].T) * ascales[g].double()[:, None] * layer["wscales"][g].double()[None, :]
    want += (x.double() @ layer["lora_down"].double()) @ layer["lora_up"].double().T + layer["bias"].double()
    assert (y.double() - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    # and the 4-bit branch does approximate the smoothed layer (the codes are meaningful)
    assert a.abs().max() <= 8 and a.min() < 0 < a.max()


@settings(max_examples=6, deadline=None)
@given(
    fmt=st.sampled_from(["int4", "nvfp4"]),
    m=st.integers(1, 40),
    groups=st.sampled_from([1, 3, 5]),
    n=st.integers(1, 70),
    rank=st.sampled_from([0, 16, 32]),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 1000),
)
def test_svdq_linear_matches_reference_on_random_shapes(tb, fmt, m, groups, n, rank, bias, dtype, seed):
    k = GROUP[fmt] * groups
    layer = _layer(fmt, n, k, rank, dtype, seed=seed, bias=bias)
    x = _acts(m, k, dtype, seed=seed)
    kw = dict(weight_format=fmt, group_size=GROUP[fmt], wtscale=layer["wtscale"])
    args = (layer["qweight"], layer["wscales"], layer["smooth"], layer["lora_down"], layer["lora_up"],
            layer["bias"])
    _assert_output_close(tb.svdq_linear(x, *args, **kw), reference.svdq_linear(x, *args, **kw))


def test_svdq_linear_keeps_leading_dims_and_dispatches_through_ops(tb):
    layer = _layer("int4", 24, 128, 16, torch.float32, seed=9)
    x = _acts(6, 128, torch.float32, seed=9).reshape(2, 3, 128)
    args = (layer["qweight"], layer["wscales"], layer["smooth"], layer["lora_down"], layer["lora_up"],
            layer["bias"])
    y = ops.svdq_linear(x, *args, backend="triton")
    assert y.shape == (2, 3, 24)
    _assert_output_close(y, reference.svdq_linear(x, *args))
    unsigned = ops.svdq_linear(x.abs(), *args, backend="triton", act_unsigned=True)
    _assert_output_close(unsigned, reference.svdq_linear(x.abs(), *args, act_unsigned=True))


def test_bad_inputs_raise_clear_errors(tb):
    layer = _layer("int4", 16, 128, 16, torch.float32, seed=1)
    x = _acts(4, 128, torch.float32, seed=1)
    args = (layer["qweight"], layer["wscales"], layer["smooth"], layer["lora_down"], layer["lora_up"])
    with pytest.raises(ValueError, match="does not divide"):
        tb.quantize_act_lora_down(x[:, :96], None, None)
    with pytest.raises(ValueError, match="lora_down"):
        tb.quantize_act_lora_down(x, None, layer["lora_down"][:64])
    with pytest.raises(ValueError, match="only for int4"):
        tb.svdq_linear(x, *args, weight_format="nvfp4", group_size=16, act_unsigned=True)
    with pytest.raises(ValueError, match="group size"):
        tb.svdq_linear(x, *args, group_size=128)
    with pytest.raises(ValueError, match="wscales"):
        tb.svdq_linear(x, layer["qweight"], layer["wscales"][:1], *args[2:])
    with pytest.raises(ValueError, match="rank"):
        tb.svdq_linear(x, *args[:4], layer["lora_up"][:, :8])
    with pytest.raises(TypeError, match="int8"):
        tb.gemm_w4a4_lora_up(x, x[:1].T, layer["qweight"], layer["wscales"], None, None, None)


def test_is_supported_reports_devices(tb):
    assert tb.is_supported("cpu") == (True, tb.is_supported("cpu")[1])
    ok, reason = tb.is_supported("meta")
    assert not ok and "CUDA" in reason
    assert tb.supports("cpu") and not tb.supports("meta")
