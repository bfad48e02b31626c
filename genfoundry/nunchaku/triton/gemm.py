"""Kernel 2: `gemm_w4a4_lora_up` — packed 4-bit activations x packed 4-bit weights, per-group scaling
in the main loop, and an epilogue that adds lora_act @ lora_up^T and the bias before the one write of Y.

INT4 (group 64). Nibbles are unpacked in registers to int8 and multiplied on the 8-bit tensor cores
(tl.dot int8 x int8 -> int32, exact): Hopper (sm_90) has no 4-bit MMA, but its int8 wgmma runs at
twice the bf16 rate; the same code runs the int8 mma of Ampere/Ada. The low nibbles of a group's
32 bytes hold its even K indices and the high nibbles its odd ones, so a group is two K=32 dots
(lo x lo + hi x hi) into one int32 partial sum, never an interleave. Each group's partial sum is
promoted to fp32 with ascale[m] * wscale[n] in the loop.

Both kernels prefetch the next K step into registers by hand: Triton's software pipeliner only
stages loads that feed tl.dot directly, and here every load is unpacked first.

NVFP4 (group 16). The FP8-E4M3 scales arrive as raw bytes (decoded in integer arithmetic, so the
kernel also runs before sm_89). An E2M1 value times its E4M3 group scale has at most 6 significant
bits, so it is *exact* in bf16: codes are decoded, multiplied by their group scale and fed to the bf16
tensor cores with fp32 accumulation; the scales ride in the operands and the loop needs no promotion.
The per-tensor weight scale multiplies the accumulator once, in the epilogue.

The low-rank epilogue keeps lora_act in fp32: with 16-bit lora_up it runs as two 16-bit dots
(lora_act split into a 16-bit head and a 16-bit remainder, ~16 mantissa bits, i.e. fp32-like at
the output's precision); with fp32 lora_up as one IEEE fp32 dot.
"""

from __future__ import annotations

import triton
import triton.language as tl

from genfoundry.nunchaku.triton.numerics import cast_rne, e2m1_decode, e4m3_from_byte

LORA_NONE = 0
LORA_IEEE = 1  # fp32 lora_up: one fp32 dot
LORA_SPLIT16 = 2  # 16-bit lora_up: fp32 lora_act split into two 16-bit dots


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # grouped ordering: GROUP_M row tiles share each column tile while it is hot in L2
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    group = pid // per_group
    first_m = group * GROUP_M
    size_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    return pid_m, pid_n


@triton.jit
def _epilogue(acc, offs_m, offs_n, m_mask, n_mask, lora_act_ptr, lora_up_ptr, bias_ptr, y_ptr, M, N, R,
              LORA_MODE: tl.constexpr, R_PAD: tl.constexpr, HAS_BIAS: tl.constexpr, INTERPRET: tl.constexpr):
    rows = offs_m.to(tl.int64)
    if LORA_MODE != 0:
        offs_r = tl.arange(0, R_PAD)
        r_mask = offs_r < R
        la = tl.load(lora_act_ptr + rows[:, None] * R + offs_r[None, :],
                     mask=m_mask[:, None] & r_mask[None, :], other=0.0)
        up = tl.load(lora_up_ptr + offs_n[None, :].to(tl.int64) * R + offs_r[:, None],
                     mask=r_mask[:, None] & n_mask[None, :], other=0.0)
        if LORA_MODE == 1:
            acc = tl.dot(la, up.to(tl.float32), acc, input_precision="ieee")
        else:
            head = la.to(up.dtype)
            tail = (la - head.to(tl.float32)).to(up.dtype)
            acc = tl.dot(head, up, acc)
            acc = tl.dot(tail, up, acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = cast_rne(acc, y_ptr.dtype.element_ty, INTERPRET)
    tl.store(y_ptr + rows[:, None] * N + offs_n[None, :], out, mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _int4_load_group(a_rows, w_cols, ascales_ptr, wscales_ptr, g, num_groups, offs_b, offs_m, offs_n,
                     m_mask, n_mask, M, N, HALF_G: tl.constexpr):
    """Packed bytes and scales of group g ([BM, G/2], [G/2, BN], [BM], [BN]); zeros past K."""
    live_b = (g + offs_b * 0) < num_groups  # vector form: also valid when g is a Python int (interpreter)
    a = tl.load(a_rows + g * HALF_G, mask=m_mask[:, None] & live_b[None, :], other=0)
    w = tl.load(w_cols + g * HALF_G, mask=live_b[:, None] & n_mask[None, :], other=0)
    sa = tl.load(ascales_ptr + g * M + offs_m, mask=m_mask & ((g + offs_m * 0) < num_groups), other=0.0)
    sw = tl.load(wscales_ptr + g * N + offs_n, mask=n_mask & ((g + offs_n * 0) < num_groups), other=0.0)
    return a, w, sa.to(tl.float32), sw.to(tl.float32)


@triton.jit
def _int4_group_dot(a, w, ACT_UNSIGNED: tl.constexpr):
    """int32 partial sum of one group: unpack the nibbles to int8, lo x lo + hi x hi."""
    if ACT_UNSIGNED:
        a_lo = a & 15
        a_hi = (a >> 4) & 15
    else:
        a_lo = (a << 4) >> 4  # arithmetic shift sign-extends the low nibble
        a_hi = a >> 4
    w_lo = (w << 4) >> 4
    w_hi = w >> 4
    part = tl.dot(a_lo, w_lo, out_dtype=tl.int32)
    return tl.dot(a_hi, w_hi, part, out_dtype=tl.int32)


@triton.jit
def gemm_int4_kernel(
    qact_ptr, ascales_ptr, qweight_ptr, wscales_ptr, lora_act_ptr, lora_up_ptr, bias_ptr, y_ptr,
    M, N, K, R, M_BUCKET,
    GROUP: tl.constexpr, ACT_UNSIGNED: tl.constexpr, LORA_MODE: tl.constexpr, R_PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
):
    """One group of 64 per iteration. The next group's bytes and scales are loaded into registers
    before this group's dots: Triton's pipeliner does not stage loads whose values are unpacked
    before the dot, so the prefetch is explicit. (Promoting the previous group's partial sum after
    issuing the next group's dots does not overlap them: Triton waits on every wgmma at once here.)"""
    HALF_G: tl.constexpr = GROUP // 2
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_b = tl.arange(0, HALF_G)
    k_bytes = K // 2
    num_groups = K // GROUP
    a_rows = qact_ptr + offs_m.to(tl.int64)[:, None] * k_bytes + offs_b[None, :]  # [BM, G/2]
    w_cols = qweight_ptr + offs_n.to(tl.int64)[None, :] * k_bytes + offs_b[:, None]  # [G/2, BN]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    a, w, sa, sw = _int4_load_group(a_rows, w_cols, ascales_ptr, wscales_ptr, 0, num_groups, offs_b, offs_m, offs_n,
                                    m_mask, n_mask, M, N, HALF_G)
    for g in range(0, num_groups):
        a_next, w_next, sa_next, sw_next = _int4_load_group(a_rows, w_cols, ascales_ptr, wscales_ptr, g + 1,
                                                            num_groups, offs_b, offs_m, offs_n, m_mask, n_mask,
                                                            M, N, HALF_G)
        part = _int4_group_dot(a, w, ACT_UNSIGNED)
        acc += part.to(tl.float32) * (sa[:, None] * sw[None, :])
        a, w, sa, sw = a_next, w_next, sa_next, sw_next

    _epilogue(acc, offs_m, offs_n, m_mask, n_mask, lora_act_ptr, lora_up_ptr, bias_ptr, y_ptr, M, N, R,
              LORA_MODE, R_PAD, HAS_BIAS, INTERPRET)


@triton.jit
def _nvfp4_load_tile(a_rows, w_cols, ascales_ptr, wscales_ptr, k0, K, num_groups, offs_b, offs_g, offs_m, offs_n,
                     m_mask, n_mask, M, N, GROUP: tl.constexpr):
    """Packed bytes [BM, BK/2], [BK/2, BN] and E4M3 scale bytes [BM, BK/16], [BK/16, BN] of the K tile at k0."""
    byte_ok = (k0 // 2 + offs_b) < K // 2
    g = k0 // GROUP + offs_g
    g_ok = g < num_groups
    a = tl.load(a_rows + k0 // 2, mask=m_mask[:, None] & byte_ok[None, :], other=0)
    w = tl.load(w_cols + k0 // 2, mask=byte_ok[:, None] & n_mask[None, :], other=0)
    sa = tl.load(ascales_ptr + g[None, :] * M + offs_m[:, None], mask=m_mask[:, None] & g_ok[None, :], other=0)
    sw = tl.load(wscales_ptr + g[:, None] * N + offs_n[None, :], mask=g_ok[:, None] & n_mask[None, :], other=0)
    return a, w, sa, sw


@triton.jit
def gemm_nvfp4_kernel(
    qact_ptr, ascales_ptr, qweight_ptr, wscales_ptr, wtscale_ptr, lora_act_ptr, lora_up_ptr, bias_ptr, y_ptr,
    M, N, K, R, M_BUCKET,
    GROUP: tl.constexpr, LORA_MODE: tl.constexpr, R_PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
    INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    HALF_K: tl.constexpr = BLOCK_K // 2
    HALF_G: tl.constexpr = GROUP // 2
    GROUPS: tl.constexpr = BLOCK_K // GROUP
    # the interpreter's bf16 dot is not faithful; the decoded operands are exact in fp32 as well
    if INTERPRET:
        op_dtype: tl.constexpr = tl.float32
    else:
        op_dtype: tl.constexpr = tl.bfloat16
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_b = tl.arange(0, HALF_K)
    offs_g = tl.arange(0, GROUPS)
    k_bytes = K // 2
    num_groups = K // GROUP
    a_rows = qact_ptr + offs_m.to(tl.int64)[:, None] * k_bytes + offs_b[None, :]  # [BM, BK/2]
    w_cols = qweight_ptr + offs_n.to(tl.int64)[None, :] * k_bytes + offs_b[:, None]  # [BK/2, BN]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    a, w, sa8, sw8 = _nvfp4_load_tile(a_rows, w_cols, ascales_ptr, wscales_ptr, 0, K, num_groups, offs_b, offs_g,
                                      offs_m, offs_n, m_mask, n_mask, M, N, GROUP)
    for k0 in range(0, K, BLOCK_K):
        # explicit register prefetch of the next K tile (see gemm_int4_kernel)
        a_next, w_next, sa8_next, sw8_next = _nvfp4_load_tile(a_rows, w_cols, ascales_ptr, wscales_ptr, k0 + BLOCK_K,
                                                              K, num_groups, offs_b, offs_g, offs_m, offs_n, m_mask,
                                                              n_mask, M, N, GROUP)
        sa = e4m3_from_byte(sa8)  # [BM, GROUPS]
        sw = e4m3_from_byte(sw8)  # [GROUPS, BN]
        a_lo = tl.reshape(tl.reshape(e2m1_decode(a), (BLOCK_M, GROUPS, HALF_G)) * sa[:, :, None],
                          (BLOCK_M, HALF_K))
        a_hi = tl.reshape(tl.reshape(e2m1_decode(a >> 4), (BLOCK_M, GROUPS, HALF_G)) * sa[:, :, None],
                          (BLOCK_M, HALF_K))
        w_lo = tl.reshape(tl.reshape(e2m1_decode(w), (GROUPS, HALF_G, BLOCK_N)) * sw[:, None, :],
                          (HALF_K, BLOCK_N))
        w_hi = tl.reshape(tl.reshape(e2m1_decode(w >> 4), (GROUPS, HALF_G, BLOCK_N)) * sw[:, None, :],
                          (HALF_K, BLOCK_N))
        acc = tl.dot(a_lo.to(op_dtype), w_lo.to(op_dtype), acc)
        acc = tl.dot(a_hi.to(op_dtype), w_hi.to(op_dtype), acc)
        a, w, sa8, sw8 = a_next, w_next, sa8_next, sw8_next

    acc = acc * tl.load(wtscale_ptr).to(tl.float32)
    _epilogue(acc, offs_m, offs_n, m_mask, n_mask, lora_act_ptr, lora_up_ptr, bias_ptr, y_ptr, M, N, R,
              LORA_MODE, R_PAD, HAS_BIAS, INTERPRET)
