"""Kernel 1: `quantize_act_lora_down` — one read of X gives the packed 4-bit activations, their
per-token-group scales, and the low-rank down projection lora_act = X @ lora_down (fp32).

One program owns one tile of BLOCK_M tokens x BLOCK_K channels (a multiple of the group size), so
the grid covers M x K and the kernel streams X at memory speed instead of walking K serially. The
tile is loaded once and split into its even / odd columns, which are exactly the low / high nibbles
of the packed bytes; the same two halves feed the two tl.dot calls of the down projection (a dot
product does not care in which order K is summed, as long as both operands agree). The partial
down projections of the K tiles meet in lora_act through fp32 atomic adds (lora_act starts at 0).
Semantics (bit-exact codes and scales) are those of `genfoundry.nunchaku.packing`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from genfoundry.nunchaku.triton.numerics import cast_rne, e2m1_encode, e4m3_round, e4m3_to_byte, round_half_even

FORMAT_INT4 = 0
FORMAT_NVFP4 = 1

_UNSIGNED_SHIFT = tl.constexpr(0.171875)
_AMAX_EPS = tl.constexpr(1e-5)
_FP8_MAX = tl.constexpr(448.0)
_FP8_MIN_SUBNORMAL = tl.constexpr(0.001953125)  # 2**-9


@triton.jit
def _quantize_int4_groups(v_lo, v_hi, SCALE_DTYPE: tl.constexpr, UNSIGNED: tl.constexpr,
                          INTERPRET: tl.constexpr):
    """[BM, NG, G/2] even / odd halves of each group -> (codes lo, codes hi int32, stored scale [BM, NG])."""
    if UNSIGNED:
        v_lo = v_lo + _UNSIGNED_SHIFT
        v_hi = v_hi + _UNSIGNED_SHIFT
        amax = tl.maximum(tl.max(v_lo, axis=2), tl.max(v_hi, axis=2))
        qmin: tl.constexpr = 0.0
        qmax: tl.constexpr = 15.0
    else:
        amax = tl.maximum(tl.max(tl.abs(v_lo), axis=2), tl.max(tl.abs(v_hi), axis=2))
        qmin: tl.constexpr = -8.0
        qmax: tl.constexpr = 7.0
    amax = tl.maximum(amax, _AMAX_EPS)
    scale = cast_rne(tl.math.div_rn(amax, qmax), SCALE_DTYPE, INTERPRET)
    # quantize with the *stored* scale so that code * scale is exactly the dequantized value
    s = scale.to(tl.float32)[:, :, None]
    q_lo = round_half_even(tl.math.div_rn(v_lo, s), INTERPRET)
    q_hi = round_half_even(tl.math.div_rn(v_hi, s), INTERPRET)
    q_lo = tl.minimum(tl.maximum(q_lo, qmin), qmax).to(tl.int32)
    q_hi = tl.minimum(tl.maximum(q_hi, qmin), qmax).to(tl.int32)
    return q_lo, q_hi, scale


@triton.jit
def _quantize_nvfp4_groups(v_lo, v_hi):
    """[BM, NG, 8] halves of each 16-group -> (E2M1 codes lo, hi int32, E4M3 scale bytes [BM, NG])."""
    amax = tl.maximum(tl.max(tl.abs(v_lo), axis=2), tl.max(tl.abs(v_hi), axis=2))
    s = e4m3_round(tl.minimum(tl.maximum(tl.math.div_rn(amax, 6.0), _FP8_MIN_SUBNORMAL), _FP8_MAX))
    sf = s[:, :, None]
    q_lo = e2m1_encode(tl.math.div_rn(v_lo, sf))
    q_hi = e2m1_encode(tl.math.div_rn(v_hi, sf))
    return q_lo, q_hi, e4m3_to_byte(s)


@triton.jit
def quantize_act_lora_down_kernel(
    x_ptr, smooth_ptr, lora_down_ptr, qact_ptr, ascales_ptr, lora_act_ptr,
    M, K, R, M_BUCKET,
    FORMAT: tl.constexpr, GROUP: tl.constexpr, ACT_UNSIGNED: tl.constexpr, HAS_SMOOTH: tl.constexpr,
    HAS_LORA: tl.constexpr, R_PAD: tl.constexpr, LORA_IEEE: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    HALF_K: tl.constexpr = BLOCK_K // 2
    GROUPS: tl.constexpr = BLOCK_K // GROUP
    HALF_G: tl.constexpr = GROUP // 2

    pid_m = tl.program_id(0)
    k0 = tl.program_id(1) * BLOCK_K
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    rows = offs_m.to(tl.int64)
    offs_byte = tl.arange(0, HALF_K)
    offs_g = tl.arange(0, GROUPS)
    half_k_total = K // 2

    cols = k0 + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + rows[:, None] * K + cols[None, :], mask=m_mask[:, None] & (cols < K)[None, :], other=0.0)
    x_lo, x_hi = tl.split(tl.reshape(x, (BLOCK_M, HALF_K, 2)))
    k_lo = k0 + 2 * offs_byte  # the K index of each low nibble; the high one is k_lo + 1
    k_ok = k_lo < K

    if HAS_LORA:
        offs_r = tl.arange(0, R_PAD)
        r_mask = offs_r < R
        down_mask = k_ok[:, None] & r_mask[None, :]
        d_lo = tl.load(lora_down_ptr + k_lo[:, None] * R + offs_r[None, :], mask=down_mask, other=0.0)
        d_hi = tl.load(lora_down_ptr + (k_lo + 1)[:, None] * R + offs_r[None, :], mask=down_mask, other=0.0)
        if LORA_IEEE:
            lora = tl.dot(x_lo.to(tl.float32), d_lo.to(tl.float32), input_precision="ieee")
            lora = tl.dot(x_hi.to(tl.float32), d_hi.to(tl.float32), lora, input_precision="ieee")
        else:
            lora = tl.dot(x_lo, d_lo.to(x_lo.dtype))
            lora = tl.dot(x_hi, d_hi.to(x_hi.dtype), lora)
        tl.atomic_add(lora_act_ptr + rows[:, None] * R + offs_r[None, :], lora,
                      mask=m_mask[:, None] & r_mask[None, :], sem="relaxed")

    v_lo = x_lo.to(tl.float32)
    v_hi = x_hi.to(tl.float32)
    if HAS_SMOOTH:
        s_lo = tl.load(smooth_ptr + k_lo, mask=k_ok, other=1.0).to(tl.float32)
        s_hi = tl.load(smooth_ptr + k_lo + 1, mask=k_ok, other=1.0).to(tl.float32)
        v_lo = tl.math.div_rn(v_lo, s_lo[None, :])
        v_hi = tl.math.div_rn(v_hi, s_hi[None, :])
    v_lo = tl.reshape(v_lo, (BLOCK_M, GROUPS, HALF_G))
    v_hi = tl.reshape(v_hi, (BLOCK_M, GROUPS, HALF_G))
    if FORMAT == 0:
        q_lo, q_hi, scale = _quantize_int4_groups(v_lo, v_hi, ascales_ptr.dtype.element_ty, ACT_UNSIGNED, INTERPRET)
    else:
        q_lo, q_hi, scale = _quantize_nvfp4_groups(v_lo, v_hi)
    q_lo = tl.reshape(q_lo, (BLOCK_M, HALF_K))
    q_hi = tl.reshape(q_hi, (BLOCK_M, HALF_K))
    packed = ((q_lo & 15) | ((q_hi & 15) << 4)).to(tl.int8)
    bytes_at = k0 // 2 + offs_byte
    tl.store(qact_ptr + rows[:, None] * half_k_total + bytes_at[None, :], packed, mask=m_mask[:, None] & k_ok[None, :])
    group_at = k0 // GROUP + offs_g
    tl.store(ascales_ptr + group_at[None, :].to(tl.int64) * M + offs_m[:, None], scale,
             mask=m_mask[:, None] & (group_at * GROUP < K)[None, :])
