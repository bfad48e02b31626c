"""The `triton` backend of `genfoundry.nunchaku.ops`: the SVDQuant W4A4 + low-rank operator as two
fused kernels (see `quantize.py`, `gemm.py`), with the semantics of `genfoundry.nunchaku.reference`.

    svdq_linear(x, ...) = gemm_w4a4_lora_up(*quantize_act_lora_down(x, smooth, lora_down), qweight, ...)

Runs on CUDA GPUs of compute capability >= 8.0 (Ampere, Ada, Hopper, Blackwell), autotuned per
(M bucket, N, K); and on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before
triton is imported), which is how the test suite checks the kernels without a GPU.
"""

from __future__ import annotations

import functools

import torch
import triton

from genfoundry.nunchaku import packing
from genfoundry.nunchaku.triton import autotune
from genfoundry.nunchaku.triton.gemm import LORA_IEEE, LORA_NONE, LORA_SPLIT16, gemm_int4_kernel, gemm_nvfp4_kernel
from genfoundry.nunchaku.triton.quantize import FORMAT_INT4, FORMAT_NVFP4, quantize_act_lora_down_kernel

MIN_CAPABILITY = (8, 0)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class TritonBackendError(RuntimeError):
    """The triton backend cannot run these tensors here (device, GPU generation, interpreter)."""


def interpreting() -> bool:
    """True when the kernels were built by the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    return not isinstance(quantize_act_lora_down_kernel, triton.runtime.JITFunction)


def is_supported(device: torch.device | str) -> tuple[bool, str]:
    """Whether the triton backend can run tensors on `device`, and if not, why."""
    device = torch.device(device)
    if device.type == "cpu":
        if interpreting():
            return True, "CPU tensors run under the Triton interpreter (TRITON_INTERPRET=1)"
        return False, ("the triton backend runs CPU tensors only under the Triton interpreter: set "
                       "TRITON_INTERPRET=1 before importing triton, or use backend 'reference'")
    if device.type != "cuda":
        return False, f"the triton backend supports CUDA GPUs (and CPU under the interpreter), not {device.type!r}"
    if not torch.cuda.is_available():
        return False, "CUDA is not available to torch"
    if interpreting():
        return True, "CUDA tensors run under the Triton interpreter (TRITON_INTERPRET=1): correct but slow"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return False, (f"{name} is sm_{capability[0]}{capability[1]}; the fused W4A4 kernels need int8/bf16 "
                       f"tensor cores of sm_80 or newer (Ampere, Ada, Hopper, Blackwell); use backend 'reference'")
    return True, f"sm_{capability[0]}{capability[1]}"


def _require_supported(device: torch.device) -> tuple[int, int]:
    ok, reason = is_supported(device)
    if not ok:
        raise TritonBackendError(reason)
    if device.type == "cuda" and not interpreting():
        return torch.cuda.get_device_capability(device)
    return (0, 0)


# -- autotuned launchers (built lazily, one per GPU generation) ----------------------------------


@functools.cache
def _tuned_quantize(capability: tuple[int, int]):
    # lora_act is accumulated with atomics: every tuning trial must start from zeros
    return triton.autotune(autotune.quantize_configs(capability), key=["M_BUCKET", "K", "R"],
                           reset_to_zero=["lora_act_ptr"], **autotune.AUTOTUNE_OPTIONS)(quantize_act_lora_down_kernel)


@functools.cache
def _tuned_int4_gemm(capability: tuple[int, int]):
    return triton.autotune(autotune.int4_gemm_configs(capability), key=["M_BUCKET", "N", "K", "R"],
                           **autotune.AUTOTUNE_OPTIONS)(gemm_int4_kernel)


@functools.cache
def _tuned_nvfp4_gemm(capability: tuple[int, int]):
    return triton.autotune(autotune.nvfp4_gemm_configs(capability), key=["M_BUCKET", "N", "K", "R"],
                           **autotune.AUTOTUNE_OPTIONS)(gemm_nvfp4_kernel)


# -- argument checks ----------------------------------------------------------------------------


def _check_format(fmt: str, group_size: int, act_unsigned: bool) -> None:
    if fmt not in packing.WEIGHT_FORMATS:
        raise ValueError(f"unknown 4-bit format {fmt!r}; expected one of {packing.WEIGHT_FORMATS}")
    if fmt == "int4" and group_size != packing.INT4_GROUP:
        raise ValueError(f"the triton int4 kernels use group size {packing.INT4_GROUP}, got {group_size}")
    if fmt == "nvfp4" and group_size != packing.NVFP4_GROUP:
        raise ValueError(f"nvfp4 uses group size {packing.NVFP4_GROUP}, got {group_size}")
    if fmt == "nvfp4" and act_unsigned:
        raise ValueError("the unsigned (post-GELU shift) activation mode exists only for int4")


def _check_shape(t: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_device(device: torch.device, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(f"{name} is on {t.device}, expected {device} (the device of the activations)")


def _rank(lora: torch.Tensor | None) -> int:
    return 0 if lora is None else int(lora.shape[-1])


# -- kernel 1 -----------------------------------------------------------------------------------


def quantize_act_lora_down(
    x: torch.Tensor,
    smooth: torch.Tensor | None,
    lora_down: torch.Tensor | None,
    *,
    act_format: str = "int4",
    group_size: int = packing.INT4_GROUP,
    act_unsigned: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(qact int8 [M, K/2], ascales [K/G, M], lora_act fp32 [M, r])`` in one read of x.

    ascales are in x's dtype for int4 (fp32 for fp32 x) and float8_e4m3fn for nvfp4."""
    _check_format(act_format, group_size, act_unsigned)
    if x.dim() != 2:
        raise ValueError(f"quantize_act_lora_down: expected x [M, K], got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x: expected fp16, bf16 or fp32, got {x.dtype}")
    m, k = x.shape
    packing.check_groups(k, group_size, "x")
    capability = _require_supported(x.device)
    _check_device(x.device, smooth=smooth, lora_down=lora_down)
    if smooth is not None:
        _check_shape(smooth, (k,), "smooth")
    rank = _rank(lora_down)
    if lora_down is not None:
        _check_shape(lora_down, (k, rank), "lora_down")

    x = x.contiguous()
    qact = torch.empty(m, k // 2, dtype=torch.int8, device=x.device)
    scale_dtype = packing.scale_dtype_for(x.dtype) if act_format == "int4" else torch.float8_e4m3fn
    ascales = torch.empty(k // group_size, m, dtype=scale_dtype, device=x.device)
    lora_act = torch.zeros(m, rank, dtype=torch.float32, device=x.device)  # K tiles add into it
    if m == 0:
        return qact, ascales, lora_act
    has_lora = rank > 0
    lora_ieee = x.dtype == torch.float32 or (has_lora and lora_down.dtype != x.dtype)
    args = (
        x, smooth.contiguous() if smooth is not None else x,
        lora_down.contiguous() if has_lora else x,
        qact, ascales if act_format == "int4" else ascales.view(torch.uint8), lora_act if has_lora else qact,
        m, k, rank, autotune.m_bucket(m),
    )
    meta = dict(
        FORMAT=FORMAT_INT4 if act_format == "int4" else FORMAT_NVFP4, GROUP=group_size,
        ACT_UNSIGNED=act_unsigned, HAS_SMOOTH=smooth is not None, HAS_LORA=has_lora,
        R_PAD=autotune.rank_pad(rank), LORA_IEEE=lora_ieee or interpreting(), INTERPRET=interpreting(),
    )
    if interpreting():
        cfg = autotune.INTERPRETER_QUANTIZE_CONFIG
        quantize_act_lora_down_kernel[(triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(k, cfg["BLOCK_K"]))](
            *args, **meta, **cfg)
    else:
        with torch.cuda.device(x.device):
            _tuned_quantize(capability)[lambda c: (triton.cdiv(m, c["BLOCK_M"]), triton.cdiv(k, c["BLOCK_K"]))](
                *args, **meta)
    return qact, ascales, lora_act


# -- kernel 2 -----------------------------------------------------------------------------------


def gemm_w4a4_lora_up(
    qact: torch.Tensor,
    ascales: torch.Tensor,
    qweight: torch.Tensor,
    wscales: torch.Tensor,
    lora_act: torch.Tensor | None,
    lora_up: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    weight_format: str = "int4",
    group_size: int = packing.INT4_GROUP,
    wtscale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    act_unsigned: bool = False,
) -> torch.Tensor:
    """The 4-bit GEMM with per-group scaling in its main loop and lora_act @ lora_up^T + bias in its
    epilogue -> ``y [M, N]`` in `out_dtype`, written once."""
    _check_format(weight_format, group_size, act_unsigned)
    if out_dtype not in _FLOAT_DTYPES:
        raise TypeError(f"out_dtype: expected fp16, bf16 or fp32, got {out_dtype}")
    if qact.dtype != torch.int8 or qweight.dtype != torch.int8:
        raise TypeError(f"qact and qweight must be packed int8, got {qact.dtype} and {qweight.dtype}")
    if qact.dim() != 2 or qweight.dim() != 2:
        raise ValueError(f"qact [M, K/2] and qweight [N, K/2] must be 2-D, got {tuple(qact.shape)} "
                         f"and {tuple(qweight.shape)}")
    m, half_k = qact.shape
    n = qweight.shape[0]
    k = 2 * half_k
    packing.check_groups(k, group_size, "qact")
    _check_shape(qweight, (n, half_k), "qweight")
    _check_shape(ascales, (k // group_size, m), "ascales")
    _check_shape(wscales, (k // group_size, n), "wscales")
    capability = _require_supported(qact.device)
    _check_device(qact.device, ascales=ascales, qweight=qweight, wscales=wscales, lora_act=lora_act,
                  lora_up=lora_up, bias=bias, wtscale=wtscale)
    rank = _rank(lora_up)
    if (lora_act is None) != (lora_up is None) and rank > 0:
        raise ValueError("lora_act and lora_up must be given together")
    if rank > 0:
        _check_shape(lora_act, (m, rank), "lora_act")
        _check_shape(lora_up, (n, rank), "lora_up")
    if bias is not None:
        _check_shape(bias, (n,), "bias")
    if weight_format == "nvfp4":
        if wtscale is None:
            raise ValueError("nvfp4 weights need their per-tensor scale `wtscale`")
        if wtscale.numel() != 1:
            raise ValueError(f"wtscale: expected one value, got shape {tuple(wtscale.shape)}")
        for name, t in (("ascales", ascales), ("wscales", wscales)):
            if t.dtype != torch.float8_e4m3fn:
                raise TypeError(f"{name}: nvfp4 scales must be float8_e4m3fn, got {t.dtype}")

    y = torch.empty(m, n, dtype=out_dtype, device=qact.device)
    if m == 0 or n == 0:
        return y
    if rank == 0:
        lora_mode = LORA_NONE
    elif lora_up.dtype in (torch.float16, torch.bfloat16) and not interpreting():
        lora_mode = LORA_SPLIT16
    else:
        lora_mode = LORA_IEEE
    lora_act_arg = lora_act.float().contiguous() if rank else qact
    lora_up_arg = lora_up.contiguous() if rank else qact
    bias_arg = bias.contiguous() if bias is not None else qact
    meta = dict(GROUP=group_size, LORA_MODE=lora_mode, R_PAD=autotune.rank_pad(rank), HAS_BIAS=bias is not None,
                INTERPRET=interpreting())
    tail = (lora_act_arg, lora_up_arg, bias_arg, y, m, n, k, rank, autotune.m_bucket(m))
    if weight_format == "int4":
        kernel, tuned, cfg = gemm_int4_kernel, _tuned_int4_gemm, autotune.INTERPRETER_INT4_GEMM_CONFIG
        args = (qact.contiguous(), ascales.contiguous(), qweight.contiguous(), wscales.contiguous(), *tail)
        meta["ACT_UNSIGNED"] = act_unsigned
    else:
        kernel, tuned, cfg = gemm_nvfp4_kernel, _tuned_nvfp4_gemm, autotune.INTERPRETER_NVFP4_GEMM_CONFIG
        # fp8 scales travel as their raw bytes (see numerics.e4m3_from_byte)
        args = (qact.contiguous(), ascales.contiguous().view(torch.uint8), qweight.contiguous(),
                wscales.contiguous().view(torch.uint8), wtscale.reshape(1).float(), *tail)

    def grid(c):
        return (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)

    if interpreting():
        kernel[grid(cfg)](*args, **meta, **cfg)
    else:
        with torch.cuda.device(qact.device):
            tuned(capability)[grid](*args, **meta)
    return y


# -- the operator ---------------------------------------------------------------------------------


def svdq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    wscales: torch.Tensor,
    smooth: torch.Tensor | None,
    lora_down: torch.Tensor | None,
    lora_up: torch.Tensor | None,
    bias: torch.Tensor | None = None,
    *,
    weight_format: str = "int4",
    group_size: int = packing.INT4_GROUP,
    wtscale: torch.Tensor | None = None,
    act_unsigned: bool = False,
) -> torch.Tensor:
    """``y = GEMM4(Q(x / smooth), qweight) + (x @ lora_down) @ lora_up.T + bias`` for ``x [..., K]``,
    output in x's dtype: kernel 1 then kernel 2, two launches, X read once and Y written once."""
    if x.dim() < 1:
        raise ValueError("svdq_linear: x must have at least one dimension (its last is K)")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if _rank(lora_down) != _rank(lora_up):
        raise ValueError(f"lora_down has rank {_rank(lora_down)} but lora_up has rank {_rank(lora_up)}")
    qact, ascales, lora_act = quantize_act_lora_down(
        x2, smooth, lora_down, act_format=weight_format, group_size=group_size, act_unsigned=act_unsigned
    )
    y = gemm_w4a4_lora_up(
        qact, ascales, qweight, wscales, lora_act, lora_up, bias, weight_format=weight_format,
        group_size=group_size, wtscale=wtscale, out_dtype=x.dtype, act_unsigned=act_unsigned,
    )
    return y.reshape(*lead, y.shape[-1])


def supports(device: torch.device | str) -> bool:
    """`is_supported` without the reason: what `ops` asks before choosing this backend automatically."""
    return is_supported(device)[0]
