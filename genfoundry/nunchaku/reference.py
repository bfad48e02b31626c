"""The `reference` backend: the SVDQuant W4A4 + low-rank operator in plain torch (any device).

It defines the semantics every other backend must reproduce (layouts in `packing`):

    quantize_act_lora_down(x, smooth, lora_down):
        xs       = x.float() / smooth.float()                       # fp32
        qact, ascales = quantize_<fmt>_act(xs)                      # packing.quantize_int4_act / nvfp4
        lora_act = x.float() @ lora_down.float()                    # [M, r] fp32; raw x (lora_down is
                                                                    # stored pre-divided by smooth)
    gemm_w4a4_lora_up(qact, ascales, qweight, wscales, lora_act, lora_up, bias):
        y = dequant(qact) @ dequant(qweight).T                      # fp32 (= per-group integer dots
                                                                    #  times ascale * wscale [* wtscale])
          + lora_act @ lora_up.float().T + bias.float()             # fp32
        return y.to(out_dtype)

The dequantize-then-matmul here equals the per-group integer accumulation of a fused kernel up to
fp32 rounding. ``x`` may have leading dims ``[..., K]``; they are flattened and restored.
"""

from __future__ import annotations

import torch

from genfoundry.nunchaku import packing


def _check_format(fmt: str, group_size: int, act_unsigned: bool) -> None:
    if fmt not in packing.WEIGHT_FORMATS:
        raise ValueError(f"unknown 4-bit format {fmt!r}; expected one of {packing.WEIGHT_FORMATS}")
    if fmt == "nvfp4" and group_size != packing.NVFP4_GROUP:
        raise ValueError(f"nvfp4 uses group size {packing.NVFP4_GROUP}, got {group_size}")
    if fmt == "nvfp4" and act_unsigned:
        raise ValueError("the unsigned (post-GELU shift) activation mode exists only for int4")


def quantize_act_lora_down(
    x: torch.Tensor,
    smooth: torch.Tensor | None,
    lora_down: torch.Tensor | None,
    *,
    act_format: str = "int4",
    group_size: int = packing.INT4_GROUP,
    act_unsigned: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(qact int8 [M, K/2], ascales [K/G, M], lora_act fp32 [M, r])``."""
    _check_format(act_format, group_size, act_unsigned)
    if x.dim() != 2:
        raise ValueError(f"quantize_act_lora_down: expected x [M, K], got shape {tuple(x.shape)}")
    xf = x.float()
    xs = xf / smooth.float() if smooth is not None else xf
    if act_format == "int4":
        qact, ascales = packing.quantize_int4_act(
            xs, group_size, unsigned=act_unsigned, scale_dtype=packing.scale_dtype_for(x.dtype)
        )
    else:
        qact, ascales = packing.quantize_nvfp4_act(xs, group_size)
    if lora_down is None or lora_down.shape[-1] == 0:
        lora_act = xf.new_zeros(x.shape[0], 0 if lora_down is None else lora_down.shape[-1])
    else:
        lora_act = xf @ lora_down.float()
    return qact, ascales, lora_act


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
    """The 4-bit GEMM with the low-rank up projection and bias in its epilogue -> ``y [M, N]``."""
    _check_format(weight_format, group_size, act_unsigned)
    if weight_format == "int4":
        a = packing.dequantize_int4_act(qact, ascales, group_size, unsigned=act_unsigned)
        w = packing.dequantize_int4_weight(qweight, wscales, group_size)
    else:
        if wtscale is None:
            raise ValueError("nvfp4 weights need their per-tensor scale `wtscale`")
        a = packing.dequantize_nvfp4_act(qact, ascales, group_size)
        w = packing.dequantize_nvfp4_weight(qweight, wscales, wtscale, group_size)
    y = a @ w.t()
    if lora_act is not None and lora_up is not None and lora_up.shape[-1] > 0:
        y = y + lora_act.float() @ lora_up.float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


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
    """``y = GEMM4(Q(x / smooth), qweight) + (x @ lora_down) @ lora_up.T + bias``, ``x [..., K]``."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    qact, ascales, lora_act = quantize_act_lora_down(
        x2, smooth, lora_down, act_format=weight_format, group_size=group_size, act_unsigned=act_unsigned
    )
    y = gemm_w4a4_lora_up(
        qact, ascales, qweight, wscales, lora_act, lora_up, bias, weight_format=weight_format,
        group_size=group_size, wtscale=wtscale, out_dtype=x.dtype, act_unsigned=act_unsigned,
    )
    return y.reshape(*lead, y.shape[-1])
