"""Tile configurations of the fused kernels, per GPU generation, and the autotuning keys.

The kernels are written once (`quantize.py`, `gemm.py`); this module decides which tile shapes
`triton.autotune` tries. Autotuning is keyed on (M bucket, N, K[, rank]) so that a model's layers
tune once per shape and the token count only re-tunes when it changes power-of-two bucket.
Under the Triton interpreter (CPU) no tuning happens: `interpreter_*_config` gives one small tile.
"""

from __future__ import annotations

import triton


def m_bucket(m: int) -> int:
    """Power-of-two bucket of the token count (the autotune key for M)."""
    return min(1 << max(m - 1, 1).bit_length(), 1 << 16)


def rank_pad(rank: int) -> int:
    """Low-rank width padded to a power of two >= 16 (tl.dot needs every dim >= 16)."""
    return max(16, 1 << max(rank - 1, 0).bit_length())


def _fast_bench(kernel_call, quantiles):
    # short warm-up/repeat windows keep a whole model's worth of tuning inside seconds
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


AUTOTUNE_OPTIONS = {"do_bench": _fast_bench}


def quantize_configs(capability: tuple[int, int]) -> list[triton.Config]:
    """Kernel 1 is memory-bound: one M x K tile per program, enough programs to fill the GPU."""
    shapes = ((32, 256, 4), (16, 256, 4), (64, 128, 4), (32, 128, 4), (64, 256, 8))
    return [triton.Config({"BLOCK_M": bm, "BLOCK_K": bk}, num_warps=w, num_stages=2) for bm, bk, w in shapes]


def int4_gemm_configs(capability: tuple[int, int]) -> list[triton.Config]:
    """INT4 GEMM tiles (one group of 64 per K step). Large tiles amortise the operand unpacking;
    small ones leave registers for several programs per SM, whose promotions then overlap each
    other's tensor-core work. Hopper's list leads with warpgroup-sized (64-row multiple) tiles."""
    if capability >= (9, 0):
        shapes = ((128, 128, 8), (64, 128, 4), (128, 256, 8), (64, 256, 8), (128, 64, 4), (256, 128, 8),
                  (64, 64, 4))
    else:
        shapes = ((128, 128, 8), (64, 128, 4), (128, 64, 4), (64, 64, 4), (128, 256, 8), (128, 128, 4))
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8}, num_warps=w, num_stages=2)
            for bm, bn, w in shapes]


def nvfp4_gemm_configs(capability: tuple[int, int]) -> list[triton.Config]:
    """NVFP4 GEMM tiles: codes are expanded to 16-bit (scale folded in, exact) and run on the bf16
    tensor cores, so K tiles are plain multiples of the group of 16."""
    if capability >= (9, 0):
        shapes = ((128, 128, 64, 8, 4), (128, 128, 128, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4),
                  (128, 64, 128, 4, 4))
    else:
        shapes = ((128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 64, 64, 4, 4))
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in shapes
    ]


# One fixed tile for the interpreter: the smallest shapes tl.dot accepts, so CPU tests stay fast.
INTERPRETER_QUANTIZE_CONFIG = {"BLOCK_M": 16, "BLOCK_K": 128}
INTERPRETER_INT4_GEMM_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32, "GROUP_M": 4}
INTERPRETER_NVFP4_GEMM_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 4}
