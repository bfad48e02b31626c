"""Small @triton.jit helpers shared by the kernels: rounding, casts, and the E2M1 code <-> value maps.

`INTERPRET` (a constexpr every kernel takes) selects code that is exact under the Triton interpreter
as well as compiled: the interpreter has no libdevice, and its fp32 -> bf16 cast truncates, so there
we round in fp32 bit arithmetic first; the following cast is then exact. Compiled kernels use the
hardware's round-to-nearest-even casts directly.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

# 1.5 * 2**23: adding then subtracting it rounds an fp32 |v| < 2**22 to an integer, ties to even
_RINT_MAGIC = tl.constexpr(12582912.0)
# the same trick at the fp8-e4m3 subnormal spacing 2**-9 (1.5 * 2**14)
_E4M3_SUBNORMAL_MAGIC = tl.constexpr(24576.0)
_E4M3_MIN_NORMAL = tl.constexpr(0.015625)  # 2**-6


@triton.jit
def round_half_even(v, INTERPRET: tl.constexpr):
    """fp32 -> nearest integer (as fp32), ties to even, like torch.round."""
    if INTERPRET:
        r = (v + _RINT_MAGIC) - _RINT_MAGIC
    else:
        r = libdevice.rint(v)
    return r


@triton.jit
def _round_fp32_mantissa(v, DROP_BITS: tl.constexpr):
    # round-to-nearest-even on the fp32 bit pattern, keeping 23 - DROP_BITS mantissa bits
    bits = v.to(tl.uint32, bitcast=True)
    keep = (bits >> DROP_BITS) & 1
    half: tl.constexpr = (1 << (DROP_BITS - 1)) - 1
    high_mask: tl.constexpr = (0xFFFFFFFF << DROP_BITS) & 0xFFFFFFFF
    rounded = (bits + half + keep) & high_mask
    return rounded.to(tl.float32, bitcast=True)


@triton.jit
def cast_rne(v, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 `v` -> DTYPE (fp32, fp16, bf16) with round-to-nearest-even, also under the interpreter."""
    if INTERPRET:
        if DTYPE == tl.bfloat16:
            v = _round_fp32_mantissa(v, 16)
    return v.to(DTYPE)


# FP8-E4M3 scales travel as raw bytes (uint8): Triton has no e4m3 type before sm_89, so the
# conversions are done in integer arithmetic, identically on every GPU and in the interpreter.


@triton.jit
def e4m3_round(v):
    """fp32 values in [0, 448] -> the nearest E4M3 value (ties to even), still as fp32."""
    normal = _round_fp32_mantissa(v, 20)  # 3 mantissa bits
    subnormal = (v + _E4M3_SUBNORMAL_MAGIC) - _E4M3_SUBNORMAL_MAGIC  # multiples of 2**-9
    return tl.where(v < _E4M3_MIN_NORMAL, subnormal, normal)


@triton.jit
def e4m3_to_byte(r):
    """fp32 values already on the non-negative E4M3 grid (`e4m3_round`) -> their uint8 encoding."""
    bits = r.to(tl.uint32, bitcast=True)
    exponent = ((bits >> 23) & 255).to(tl.int32) - 120  # rebias 127 -> 7
    mantissa = ((bits >> 20) & 7).to(tl.int32)
    normal = (exponent << 3) | mantissa
    subnormal = (r * 512.0).to(tl.int32)
    return tl.where(r < _E4M3_MIN_NORMAL, subnormal, normal).to(tl.uint8)


@triton.jit
def e4m3_from_byte(byte):
    """uint8 E4M3 encodings -> fp32 values."""
    b = byte.to(tl.int32) & 255
    exponent = (b >> 3) & 15
    mantissa = b & 7
    normal = (((exponent + 120) << 23) | (mantissa << 20)).to(tl.float32, bitcast=True)
    subnormal = mantissa.to(tl.float32) * 0.001953125
    mag = tl.where(exponent == 0, subnormal, normal)
    return tl.where((b & 128) != 0, -mag, mag)


@triton.jit
def e2m1_encode(v):
    """fp32 values -> E2M1 codes (int32 0..15): nearest of [0, .5, 1, 1.5, 2, 3, 4, 6], ties to the
    even code, saturating at 6; sign in bit 3, and a zero magnitude is +0 (code 0)."""
    mag = tl.abs(v)
    # strict '>' where the tie belongs to the lower (even) code, '>=' where to the upper one
    idx = (mag > 0.25).to(tl.int32)
    idx += (mag >= 0.75).to(tl.int32)
    idx += (mag > 1.25).to(tl.int32)
    idx += (mag >= 1.75).to(tl.int32)
    idx += (mag > 2.5).to(tl.int32)
    idx += (mag >= 3.5).to(tl.int32)
    idx += (mag > 5.0).to(tl.int32)
    negative = (v < 0) & (idx > 0)
    return idx | (negative.to(tl.int32) << 3)


@triton.jit
def e2m1_decode(code):
    """E2M1 codes (any int tensor, low 4 bits used) -> fp32 values."""
    c = code.to(tl.int32) & 15
    m = c & 7
    # twice the magnitude is an integer: 0 1 2 3 4 6 8 12
    twice = tl.where(m < 4, m, tl.where(m < 6, (m - 2) * 2, (m - 4) * 4))
    mag = twice.to(tl.float32) * 0.5
    return tl.where(c >= 8, -mag, mag)
