"""The packed 4-bit layouts of the engine, and the quantizers that produce them.

Every backend (the torch `reference`, the fused `triton` kernels) reads and writes exactly these
layouts; this module is their definition.

Nibble packing (both formats)
    A tensor of 4-bit codes ``[..., K]`` packs into int8 ``[..., K/2]``: element ``k = 2i`` goes to
    the LOW nibble and ``k = 2i + 1`` to the HIGH nibble of byte ``i`` (the int8 is the raw byte
    reinterpreted, so bytes >= 128 read negative). A signed INT4 code is the two's-complement nibble
    of a value in [-8, 7]; an unsigned INT4 code is a value in [0, 15]; an NVFP4 code is an E2M1 code.

INT4 (group G = 64 along K, symmetric, no zero point)
    weight ``w [N, K]``:   per (row n, group g): ``s = amax(|w[n, g]|) / 7`` stored as ``wscales[g, n]``
                           (dtype = the compute dtype: fp16/bf16; fp32 allowed on CPU);
                           ``q = clamp(round_half_even(w / s_stored), -7, 7)`` (0 where s == 0);
                           ``qweight [N, K/2]``, ``wscales [K/G, N]``.
    activation ``x [M, K]`` (dynamic, per token per group): ``amax = max(|x[m, g]|)`` in fp32,
                           ``s = max(amax, AMAX_EPS) / 7`` cast to the scale dtype,
                           ``q = clamp(round_half_even(x / s_stored), -8, 7)``; ``qact [M, K/2]``,
                           ``ascales [K/G, M]``. All arithmetic in fp32; division uses the *stored*
                           (rounded) scale so that ``q * s_stored`` is exactly the dequantized value.
    unsigned activation (post-GELU inputs): ``x' = x + UNSIGNED_SHIFT`` (0.171875), ``amax = max(x')``
                           over the group, ``s = max(amax, AMAX_EPS) / 15``,
                           ``q = clamp(round_half_even(x' / s_stored), 0, 15)``; the GEMM sees the
                           *shifted* value ``q * s`` (the layer folds ``-0.171875 * sum_k W`` into its bias).

NVFP4 (group 16 along K)
    E2M1 code: bit 3 = sign, bits 0-2 index ``E2M1_VALUES = [0, .5, 1, 1.5, 2, 3, 4, 6]``. Rounding is
    to the nearest grid value, ties to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2,
    2.5 -> 2, 3.5 -> 4, 5 -> 4); magnitudes above 6 saturate to 6; a zero magnitude is code 0 (+0).
    weight ``w [N, K]``:   ``wtscale = amax(|w|) / (6 * 448)`` (fp32 scalar; 1 if w == 0);
                           per (n, g): ``sg = min(amax(|w[n, g]|) / 6 / wtscale, 448)`` stored as
                           ``torch.float8_e4m3fn`` in ``wscales [K/16, N]``;
                           code = E2M1(w / (float(sg_stored) * wtscale)) (code 0 where the scale is 0).
    activation ``x [M, K]``: per (m, g): ``s = clamp(amax / 6, FP8_MIN_SUBNORMAL, 448)`` stored as
                           float8_e4m3fn in ``ascales [K/16, M]`` (no tensor scale);
                           code = E2M1(x / float(s_stored)).
    dequantized value = E2M1_VALUES[code] * sign * scale (* wtscale for weights).

GEMM semantics (both formats), fp32 accumulation:
    ``y[m, n] = (wtscale) * sum_g ascale[g, m] * wscale[g, n] * sum_{k in g} a[m, k] * w[n, k]``
    where a, w are the dequantized-without-scale values (integers for INT4, E2M1 values for NVFP4).
"""

from __future__ import annotations

import torch

INT4_GROUP = 64
NVFP4_GROUP = 16
UNSIGNED_SHIFT = 0.171875
AMAX_EPS = 1e-5
FP8_MAX = 448.0
FP8_MIN_SUBNORMAL = 2.0**-9
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# midpoints between neighbouring E2M1 magnitudes
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)

WEIGHT_FORMATS = ("int4", "nvfp4")


def default_group_size(fmt: str) -> int:
    if fmt == "int4":
        return INT4_GROUP
    if fmt == "nvfp4":
        return NVFP4_GROUP
    raise ValueError(f"unknown 4-bit format {fmt!r}; expected one of {WEIGHT_FORMATS}")


def scale_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """INT4 scales are kept in the compute dtype (fp16/bf16), fp32 for anything else (CPU fp32)."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32


def check_groups(k: int, group_size: int, what: str = "tensor") -> None:
    if group_size <= 0 or group_size % 2:
        raise ValueError(f"{what}: group size must be a positive even number, got {group_size}")
    if k % group_size:
        raise ValueError(
            f"{what}: group size {group_size} does not divide the input dimension K={k}; "
            f"K must be a multiple of the group size"
        )


# ----------------------------------------------------------------------------------------------
# nibble packing


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes ``[..., K]`` (any integer dtype; signed values use their two's-complement nibble)
    -> int8 ``[..., K/2]`` with element 2i in the low and 2i+1 in the high nibble of byte i."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_nibbles: the last dimension must be even, got {codes.shape[-1]}")
    c = codes.to(torch.int16) & 0xF
    byte = c[..., 0::2] | (c[..., 1::2] << 4)
    return byte.to(torch.uint8).view(torch.int8)


def unpack_nibbles(packed: torch.Tensor, signed: bool) -> torch.Tensor:
    """Inverse of `pack_nibbles`: int8 ``[..., K/2]`` -> int8 codes ``[..., K]``.

    signed=True sign-extends each nibble to [-8, 7]; signed=False gives [0, 15] (unsigned INT4 and
    NVFP4 codes)."""
    if packed.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"unpack_nibbles: expected an int8 packed tensor, got {packed.dtype}")
    b = packed.view(torch.uint8).to(torch.int16)
    low, high = b & 0xF, (b >> 4) & 0xF
    codes = torch.stack((low, high), dim=-1).flatten(-2)
    if signed:
        codes = codes - ((codes >= 8).to(torch.int16) << 4)
    return codes.to(torch.int8)


# ----------------------------------------------------------------------------------------------
# INT4


def _grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)


def int4_codes(
    x: torch.Tensor,
    group_size: int,
    *,
    qmin: int,
    qmax: int,
    scale_dtype: torch.dtype,
    amax_eps: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-group INT4 quantization along the last dim.

    Returns ``codes`` int8 ``[..., K]`` and the stored scales ``[..., K/G]`` (in `scale_dtype`).
    The scale is ``max(amax, amax_eps) / qmax``; with the unsigned range (qmin = 0) amax is the max
    value, otherwise the max magnitude."""
    check_groups(x.shape[-1], group_size)
    g = _grouped(x.float(), group_size)
    amax = g.amax(dim=-1) if qmin == 0 else g.abs().amax(dim=-1)
    scale = (amax.clamp_min(amax_eps) / qmax).to(scale_dtype)
    s = scale.float().unsqueeze(-1)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round(g / safe).clamp_(qmin, qmax)
    q = torch.where(s > 0, q, torch.zeros_like(q))
    return q.to(torch.int8).reshape(x.shape), scale


def quantize_int4_weight(
    w: torch.Tensor, group_size: int = INT4_GROUP, scale_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> ``(qweight int8 [N, K/2], wscales [K/G, N])`` (values in [-7, 7])."""
    if w.dim() != 2:
        raise ValueError(f"quantize_int4_weight: expected a 2-D weight [N, K], got shape {tuple(w.shape)}")
    scale_dtype = scale_dtype or scale_dtype_for(w.dtype)
    codes, scales = int4_codes(w, group_size, qmin=-7, qmax=7, scale_dtype=scale_dtype)
    return pack_nibbles(codes), scales.t().contiguous()


def dequantize_int4_weight(qweight: torch.Tensor, wscales: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(qweight [N, K/2], wscales [K/G, N])`` -> fp32 ``[N, K]``."""
    codes = unpack_nibbles(qweight, signed=True).float()
    return (_grouped(codes, group_size) * wscales.t().float().unsqueeze(-1)).reshape(codes.shape)


def quantize_int4_act(
    x: torch.Tensor,
    group_size: int = INT4_GROUP,
    *,
    unsigned: bool = False,
    scale_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` (already divided by the smoothing factor) -> ``(qact [M, K/2], ascales [K/G, M])``.

    ``unsigned`` adds `UNSIGNED_SHIFT` first and uses codes 0..15 (see the module docstring)."""
    scale_dtype = scale_dtype or scale_dtype_for(x.dtype)
    xf = x.float()
    if unsigned:
        codes, scales = int4_codes(xf + UNSIGNED_SHIFT, group_size, qmin=0, qmax=15,
                                   scale_dtype=scale_dtype, amax_eps=AMAX_EPS)
    else:
        codes, scales = int4_codes(xf, group_size, qmin=-8, qmax=7, scale_dtype=scale_dtype, amax_eps=AMAX_EPS)
    return pack_nibbles(codes), scales.t().contiguous()


def dequantize_int4_act(qact: torch.Tensor, ascales: torch.Tensor, group_size: int, *, unsigned: bool = False
                        ) -> torch.Tensor:
    """``(qact [M, K/2], ascales [K/G, M])`` -> fp32 ``[M, K]``; unsigned values stay shifted."""
    codes = unpack_nibbles(qact, signed=not unsigned).float()
    return (_grouped(codes, group_size) * ascales.t().float().unsqueeze(-1)).reshape(codes.shape)


# ----------------------------------------------------------------------------------------------
# NVFP4


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """Round fp32 values to the nearest E2M1 value (ties to even code, saturating at 6) -> int8 codes."""
    mag = v.float().abs()
    bounds = torch.tensor(_E2M1_MIDPOINTS, dtype=torch.float32, device=v.device)
    idx = torch.bucketize(mag, bounds, right=False)  # a tie lands on the lower neighbour
    at_bound = bounds[idx.clamp(max=len(_E2M1_MIDPOINTS) - 1)]
    bump = (idx < len(_E2M1_MIDPOINTS)) & (mag == at_bound) & (idx % 2 == 1)
    idx = idx + bump.to(idx.dtype)
    sign = ((v < 0) & (idx > 0)).to(idx.dtype) << 3
    return (idx | sign).to(torch.int8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """int8 E2M1 codes (0..15) -> fp32 values."""
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    c = codes.to(torch.int64) & 0xF
    mag = table[c & 7]
    return torch.where(c >= 8, -mag, mag)


def _fp8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, FP8_MAX).to(torch.float8_e4m3fn)


def quantize_nvfp4_weight(
    w: torch.Tensor, group_size: int = NVFP4_GROUP
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> ``(qweight int8 [N, K/2], wscales float8_e4m3fn [K/G, N], wtscale fp32 [])``."""
    if w.dim() != 2:
        raise ValueError(f"quantize_nvfp4_weight: expected a 2-D weight [N, K], got shape {tuple(w.shape)}")
    check_groups(w.shape[-1], group_size, "nvfp4 weight")
    g = _grouped(w.float(), group_size)
    amax = w.float().abs().amax()
    wtscale = torch.where(amax > 0, amax / (6.0 * FP8_MAX), torch.ones_like(amax))
    sg = _fp8(g.abs().amax(dim=-1) / 6.0 / wtscale)
    eff = (sg.float() * wtscale).unsqueeze(-1)
    scaled = torch.where(eff > 0, g / torch.where(eff > 0, eff, torch.ones_like(eff)), torch.zeros_like(g))
    codes = e2m1_encode(scaled).reshape(w.shape)
    return pack_nibbles(codes), sg.t().contiguous(), wtscale.to(torch.float32)


def dequantize_nvfp4_weight(qweight: torch.Tensor, wscales: torch.Tensor, wtscale: torch.Tensor,
                            group_size: int = NVFP4_GROUP) -> torch.Tensor:
    vals = e2m1_decode(unpack_nibbles(qweight, signed=False))
    out = _grouped(vals, group_size) * wscales.t().float().unsqueeze(-1) * wtscale.float()
    return out.reshape(vals.shape)


def quantize_nvfp4_act(x: torch.Tensor, group_size: int = NVFP4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(qact int8 [M, K/2], ascales float8_e4m3fn [K/G, M])``."""
    check_groups(x.shape[-1], group_size, "nvfp4 activation")
    g = _grouped(x.float(), group_size)
    s = (g.abs().amax(dim=-1) / 6.0).clamp(FP8_MIN_SUBNORMAL, FP8_MAX).to(torch.float8_e4m3fn)
    codes = e2m1_encode(g / s.float().unsqueeze(-1)).reshape(x.shape)
    return pack_nibbles(codes), s.t().contiguous()


def dequantize_nvfp4_act(qact: torch.Tensor, ascales: torch.Tensor, group_size: int = NVFP4_GROUP) -> torch.Tensor:
    vals = e2m1_decode(unpack_nibbles(qact, signed=False))
    return (_grouped(vals, group_size) * ascales.t().float().unsqueeze(-1)).reshape(vals.shape)
