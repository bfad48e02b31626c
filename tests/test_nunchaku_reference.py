"""The reference backend against a float64 recomputation, and backend dispatch."""

import threading

import pytest
import torch

import genfoundry.nunchaku as nk
from genfoundry.nunchaku import packing as P
from genfoundry.nunchaku import reference


def _layer(fmt, k=128, n=48, r=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    group = P.default_group_size(fmt)
    if fmt == "int4":
        qw, ws = P.quantize_int4_weight(w, group, P.scale_dtype_for(dtype))
        wt = None
    else:
        qw, ws, wt = P.quantize_nvfp4_weight(w, group)
    smooth = (torch.rand(k, generator=g) + 0.5).to(dtype)
    down = (torch.randn(k, r, generator=g) * 0.1).to(dtype)
    up = (torch.randn(n, r, generator=g) * 0.1).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    return dict(qweight=qw, wscales=ws, smooth=smooth, lora_down=down, lora_up=up, bias=bias, wtscale=wt,
                group=group)


def _float64_recompute(x, L, fmt, unsigned=False):
    """The GEMM as per-group integer dots times both scales, accumulated in float64."""
    x64 = x.reshape(-1, x.shape[-1]).double()
    xs = x64 / L["smooth"].double()
    m, k = xs.shape
    G = L["group"]
    if fmt == "int4":
        a_codes = P.unpack_nibbles(P.quantize_int4_act(xs.float(), G, unsigned=unsigned,
                                                       scale_dtype=P.scale_dtype_for(x.dtype))[0],
                                   signed=not unsigned).double()
        _, a_s = P.quantize_int4_act(xs.float(), G, unsigned=unsigned, scale_dtype=P.scale_dtype_for(x.dtype))
        w_codes = P.unpack_nibbles(L["qweight"], signed=True).double()
        tensor_scale = 1.0
    else:
        qa, a_s = P.quantize_nvfp4_act(xs.float(), G)
        a_codes = P.e2m1_decode(P.unpack_nibbles(qa, signed=False)).double()
        w_codes = P.e2m1_decode(P.unpack_nibbles(L["qweight"], signed=False)).double()
        tensor_scale = float(L["wtscale"])
    y = torch.zeros(m, L["qweight"].shape[0], dtype=torch.float64)
    for gi in range(k // G):
        sl = slice(gi * G, (gi + 1) * G)
        dots = a_codes[:, sl] @ w_codes[:, sl].t()
        y += dots * a_s[gi].double()[:, None] * L["wscales"][gi].double()[None, :]
    y = y * tensor_scale
    y += (x64 @ L["lora_down"].double()) @ L["lora_up"].double().t() + L["bias"].double()
    return y


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_reference_equals_float64_recomputation(fmt):
    L = _layer(fmt)
    x = torch.randn(2, 5, 128) * 3
    y = nk.svdq_linear(x, L["qweight"], L["wscales"], L["smooth"], L["lora_down"], L["lora_up"], L["bias"],
                       weight_format=fmt, group_size=L["group"], wtscale=L["wtscale"], backend="reference")
    assert y.shape == (2, 5, 48) and y.dtype == x.dtype
    expect = _float64_recompute(x, L, fmt).reshape(2, 5, 48)
    torch.testing.assert_close(y.double(), expect, rtol=1e-5, atol=1e-4)


def test_unsigned_mode_matches_recomputation():
    L = _layer("int4", seed=3)
    x = torch.nn.functional.gelu(torch.randn(6, 128) * 2)
    y = nk.svdq_linear(x, L["qweight"], L["wscales"], L["smooth"], L["lora_down"], L["lora_up"], L["bias"],
                       act_unsigned=True, backend="reference")
    torch.testing.assert_close(y.double(), _float64_recompute(x, L, "int4", unsigned=True), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_output_dtype_and_scale_dtype(dtype):
    L = _layer("int4", dtype=dtype)
    x = torch.randn(4, 128).to(dtype)
    y = nk.svdq_linear(x, L["qweight"], L["wscales"], L["smooth"], L["lora_down"], L["lora_up"], L["bias"])
    assert y.dtype == dtype
    qact, ascales, lora_act = nk.quantize_act_lora_down(x, L["smooth"], L["lora_down"], act_format="int4",
                                                         group_size=64, act_unsigned=False)
    assert qact.shape == (4, 64) and ascales.shape == (2, 4) and ascales.dtype == dtype
    assert lora_act.dtype == torch.float32 and lora_act.shape == (4, 8)


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_two_halves_compose_to_the_whole(fmt):
    L = _layer(fmt, seed=1)
    x = torch.randn(7, 128)
    qact, ascales, lora_act = nk.quantize_act_lora_down(x, L["smooth"], L["lora_down"], act_format=fmt,
                                                         group_size=L["group"], act_unsigned=False)
    y = nk.gemm_w4a4_lora_up(qact, ascales, L["qweight"], L["wscales"], lora_act, L["lora_up"], L["bias"],
                             weight_format=fmt, group_size=L["group"], wtscale=L["wtscale"], out_dtype=torch.float32)
    whole = nk.svdq_linear(x, L["qweight"], L["wscales"], L["smooth"], L["lora_down"], L["lora_up"], L["bias"],
                           weight_format=fmt, group_size=L["group"], wtscale=L["wtscale"])
    assert torch.equal(y, whole)


def test_backend_selection_and_errors():
    x = torch.randn(2, 128)
    assert nk.resolve_backend(x) == "reference"  # CPU input -> reference
    with pytest.raises(ValueError, match="available backends: reference, triton"):
        nk.resolve_backend(x, "cutlass")
    with pytest.raises(ValueError, match="unknown nunchaku backend"):
        nk.use_backend("nope")
    with nk.use_backend("triton"):
        assert nk.resolve_backend(x) == "triton"
        assert nk.resolve_backend(x, "reference") == "reference"  # per call wins
        with nk.use_backend("reference"):
            assert nk.current_backend() == "reference"
        assert nk.current_backend() == "triton"
    assert nk.current_backend() is None


def test_use_backend_does_not_leak_across_threads():
    seen = {}
    nk.use_backend("triton")  # plain call: default for this context only
    try:
        t = threading.Thread(target=lambda: seen.setdefault("other", nk.current_backend()))
        t.start()
        t.join()
        assert nk.current_backend() == "triton"
        assert seen["other"] is None
    finally:
        nk.use_backend(None)


def test_shape_mismatch_is_a_clear_error():
    L = _layer("int4")
    with pytest.raises(ValueError, match="K=96"):
        nk.svdq_linear(torch.randn(2, 96), L["qweight"], L["wscales"], L["smooth"], L["lora_down"], L["lora_up"])


def test_nvfp4_requires_tensor_scale_and_group_16():
    L = _layer("nvfp4")
    qact, asc, la = reference.quantize_act_lora_down(torch.randn(2, 128), None, None, act_format="nvfp4",
                                                     group_size=16)
    with pytest.raises(ValueError, match="wtscale"):
        reference.gemm_w4a4_lora_up(qact, asc, L["qweight"], L["wscales"], la, None, None, weight_format="nvfp4",
                                    group_size=16)
    with pytest.raises(ValueError, match="group size 16"):
        reference.quantize_act_lora_down(torch.randn(2, 128), None, None, act_format="nvfp4", group_size=64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reference_on_gpu_matches_cpu():
    L = _layer("int4")
    x = torch.randn(3, 128)
    args = [L[k] for k in ("qweight", "wscales", "smooth", "lora_down", "lora_up", "bias")]
    cpu = nk.svdq_linear(x, *args, backend="reference")
    gpu = nk.svdq_linear(x.cuda(), *[a.cuda() for a in args], backend="reference")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
