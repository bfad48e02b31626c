"""The compiled Triton kernels on a CUDA GPU against the reference backend (skipped without a GPU).

Tolerances: kernel 1 codes and scales bit-exact; outputs within one rounding step of the 16-bit
dtype plus 1e-4 * max|y| (fp32 summation order, and the low-rank epilogue's 16-bit head+tail split of
lora_act, ~16 mantissa bits).
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

triton = pytest.importorskip("triton")


@pytest.fixture(scope="module")
def tb():
    from genfoundry.nunchaku.triton import backend

    if backend.interpreting():
        pytest.skip("TRITON_INTERPRET=1 is set: these tests check the compiled kernels")
    ok, reason = backend.is_supported("cuda")
    if not ok:
        pytest.skip(reason)
    return backend


def _case(fmt, m, k, n, rank, dtype, unsigned, seed=0):
    from genfoundry.nunchaku import packing

    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, device="cuda", generator=g)
    if fmt == "int4":
        qw, ws = packing.quantize_int4_weight(w.to(dtype))
        wt = None
    else:
        qw, ws, wt = packing.quantize_nvfp4_weight(w)
    x = torch.randn(m, k, device="cuda", generator=g) * 2
    x[:, 5] *= 30
    if unsigned:
        x = torch.nn.functional.gelu(x)
    layer = dict(
        qweight=qw, wscales=ws, wtscale=wt,
        smooth=(torch.rand(k, device="cuda", generator=g) + 0.5).to(dtype),
        lora_down=(torch.randn(k, rank, device="cuda", generator=g) * 0.05).to(dtype) if rank else None,
        lora_up=(torch.randn(n, rank, device="cuda", generator=g) * 0.05).to(dtype) if rank else None,
        bias=torch.randn(n, device="cuda", generator=g).to(dtype),
    )
    return x.to(dtype), layer


CASES = [
    ("int4", 1, 192, 100, 0, torch.bfloat16, False),
    ("int4", 33, 320, 257, 32, torch.bfloat16, False),
    ("int4", 300, 1152, 2880, 32, torch.float16, False),
    ("int4", 129, 2880, 1152, 48, torch.bfloat16, True),
    ("nvfp4", 7, 48, 100, 16, torch.bfloat16, False),
    ("nvfp4", 300, 1152, 2880, 32, torch.bfloat16, False),
]


@pytest.mark.parametrize("fmt,m,k,n,rank,dtype,unsigned", CASES)
def test_compiled_kernels_match_reference(tb, fmt, m, k, n, rank, dtype, unsigned):
    from genfoundry.nunchaku import reference

    x, layer = _case(fmt, m, k, n, rank, dtype, unsigned)
    group = 64 if fmt == "int4" else 16
    q = tb.quantize_act_lora_down(x, layer["smooth"], layer["lora_down"], act_format=fmt, group_size=group,
                                  act_unsigned=unsigned)
    q_ref = reference.quantize_act_lora_down(x, layer["smooth"], layer["lora_down"], act_format=fmt,
                                             group_size=group, act_unsigned=unsigned)
    assert (q[0] != q_ref[0]).sum().item() == 0
    assert torch.equal(q[1].float(), q_ref[1].float())
    if rank:
        torch.testing.assert_close(q[2], q_ref[2], rtol=1e-3, atol=1e-3)
    kw = dict(weight_format=fmt, group_size=group, wtscale=layer["wtscale"], act_unsigned=unsigned)
    args = (layer["qweight"], layer["wscales"], layer["smooth"], layer["lora_down"], layer["lora_up"], layer["bias"])
    y = tb.svdq_linear(x, *args, **kw).float()
    want = reference.svdq_linear(x, *args, **kw).float()
    bound = torch.finfo(dtype).eps * want.abs() + 1e-4 * want.abs().max()
    assert ((y - want).abs() - bound).max().item() <= 0


def test_is_supported_names_the_gpu(tb):
    ok, reason = tb.is_supported("cuda")
    assert ok and reason.startswith("sm_")
    assert os.environ.get("TRITON_INTERPRET") != "1"
