"""Quantizers: fake-quant (quantize then dequantize, for the search) and packed forms.

Every fake-quant function here returns exactly ``dequantize(quantize_packed(x))`` because both go
through the same code path in `genfoundry.nunchaku.packing` (4-bit) or below (INT8, NF4).

- INT4: symmetric per group along the last dim (weights [-7, 7], activations [-8, 7]).
- NVFP4: E2M1 codes, group 16, FP8-E4M3 group scales (+ one fp32 tensor scale for weights).
- INT8: per output channel weights, per token activations (the W8A8 / SmoothQuant baseline).
- NF4: the 16 normal-float levels of QLoRA, per-block absmax (the W4A16 baseline).
"""

from __future__ import annotations

import torch

from genfoundry.nunchaku import packing
from genfoundry.nunchaku.packing import pack_nibbles, unpack_nibbles

# ----------------------------------------------------------------------------------------------
# 4-bit fake quant (the search uses these on fp32 tensors)


def _scale_groups(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    g = codes.float().reshape(*codes.shape[:-1], -1, group_size)
    return (g * scales.float().unsqueeze(-1)).reshape(codes.shape)


def fake_quant_weight(w: torch.Tensor, fmt: str, group_size: int, scale_dtype: torch.dtype = torch.float32
                      ) -> torch.Tensor:
    """``w [N, K]`` -> its dequantized 4-bit version (fp32), identical to the packed round trip."""
    if fmt == "int4":
        # the codes and scales `quantize_int4_weight` packs; packing itself is lossless
        codes, s = packing.int4_codes(w, group_size, qmin=-7, qmax=7, scale_dtype=scale_dtype)
        return _scale_groups(codes, s, group_size)
    if fmt == "nvfp4":
        q, s, t = packing.quantize_nvfp4_weight(w, group_size)
        return packing.dequantize_nvfp4_weight(q, s, t, group_size)
    if fmt == "nf4":
        return dequantize_nf4(*quantize_nf4(w, group_size, scale_dtype), group_size)
    if fmt == "int8":
        return dequantize_int8_weight(*quantize_int8_weight(w, scale_dtype))
    raise ValueError(f"unknown weight format {fmt!r}; expected int4, nvfp4, nf4 or int8")


def fake_quant_act(x: torch.Tensor, fmt: str | None, group_size: int, *, unsigned: bool = False,
                   scale_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x [M, K]`` (already smoothed) -> the dequantized activation the engine's GEMM would see.

    With ``unsigned`` the shift is removed again, so the result approximates x itself."""
    if fmt is None:
        return x.float()
    if fmt == "int4":
        xf = x.float()
        if unsigned:
            codes, s = packing.int4_codes(xf + packing.UNSIGNED_SHIFT, group_size, qmin=0, qmax=15,
                                          scale_dtype=scale_dtype, amax_eps=packing.AMAX_EPS)
            return _scale_groups(codes, s, group_size) - packing.UNSIGNED_SHIFT
        codes, s = packing.int4_codes(xf, group_size, qmin=-8, qmax=7, scale_dtype=scale_dtype,
                                      amax_eps=packing.AMAX_EPS)
        return _scale_groups(codes, s, group_size)
    if fmt == "nvfp4":
        q, s = packing.quantize_nvfp4_act(x, group_size)
        return packing.dequantize_nvfp4_act(q, s, group_size)
    if fmt == "int8":
        return dequantize_int8_act(*quantize_int8_act(x, scale_dtype))
    raise ValueError(f"unknown activation format {fmt!r}; expected int4, nvfp4, int8 or None")


# ----------------------------------------------------------------------------------------------
# INT8 (W8A8 baseline)


def quantize_int8_weight(w: torch.Tensor, scale_dtype: torch.dtype = torch.float32
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> ``(qweight int8 [N, K], wscales [N])``, per output channel, values in [-127, 127]."""
    amax = w.float().abs().amax(dim=-1)
    s = (amax / 127.0).to(scale_dtype)
    sf = s.float().unsqueeze(-1)
    q = torch.where(sf > 0, torch.round(w.float() / torch.where(sf > 0, sf, torch.ones_like(sf))),
                    torch.zeros_like(sf)).clamp_(-127, 127)
    return q.to(torch.int8), s


def dequantize_int8_weight(qweight: torch.Tensor, wscales: torch.Tensor) -> torch.Tensor:
    return qweight.float() * wscales.float().unsqueeze(-1)


def quantize_int8_act(x: torch.Tensor, scale_dtype: torch.dtype = torch.float32
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(q int8 [M, K], scales [M])``, dynamic per token."""
    amax = x.float().abs().amax(dim=-1).clamp_min(packing.AMAX_EPS)
    s = (amax / 127.0).to(scale_dtype)
    q = torch.round(x.float() / s.float().unsqueeze(-1)).clamp_(-128, 127)
    return q.to(torch.int8), s


def dequantize_int8_act(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return q.float() * s.float().unsqueeze(-1)


# ----------------------------------------------------------------------------------------------
# NF4 (W4A16 baseline)


def _nf4_levels() -> torch.Tensor:
    """The 16 NF4 levels: normal quantiles with an exact zero, 8 positive and 7 negative, in [-1, 1]
    (QLoRA's construction: quantile offset 0.9677, asymmetric halves)."""
    offset = 0.9677083
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg])
    levels = levels / levels.abs().max()
    return levels.sort().values.to(torch.float32)


NF4_LEVELS = _nf4_levels()


def quantize_nf4(w: torch.Tensor, group_size: int = 64, scale_dtype: torch.dtype = torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> ``(qweight int8 [N, K/2] of level indices 0..15, absmax [K/G, N])``."""
    packing.check_groups(w.shape[-1], group_size, "nf4 weight")
    g = w.float().reshape(w.shape[0], -1, group_size)
    absmax = g.abs().amax(dim=-1).to(scale_dtype)
    a = absmax.float().unsqueeze(-1)
    normed = torch.where(a > 0, g / torch.where(a > 0, a, torch.ones_like(a)), torch.zeros_like(g))
    levels = NF4_LEVELS.to(w.device)
    mids = (levels[1:] + levels[:-1]) / 2
    idx = torch.bucketize(normed, mids)
    return pack_nibbles(idx.reshape(w.shape)), absmax.t().contiguous()


def dequantize_nf4(qweight: torch.Tensor, absmax: torch.Tensor, group_size: int = 64) -> torch.Tensor:
    idx = unpack_nibbles(qweight, signed=False).to(torch.int64)
    vals = NF4_LEVELS.to(qweight.device)[idx]
    return (vals.reshape(vals.shape[0], -1, group_size) * absmax.t().float().unsqueeze(-1)).reshape(vals.shape)
