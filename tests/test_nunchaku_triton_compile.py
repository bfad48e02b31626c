"""The compiled (non-interpreter) path of the fused kernels is valid Triton: compile the Hopper INT4
GEMM ahead of time for sm_90 on this CPU-only machine (triton ships ptxas) and check that it runs on
the 8-bit warpgroup tensor cores (wgmma). The interpreter tests cannot see compile-only errors.

The compile runs in a fresh interpreter process: the Triton interpreter patches triton.language
while the other tests run, and compiling needs it untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

_COMPILE_SCRIPT = r"""
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from genfoundry.nunchaku.triton import gemm

pointers = {"qact_ptr": "*i8", "ascales_ptr": "*bf16", "qweight_ptr": "*i8", "wscales_ptr": "*bf16",
            "lora_act_ptr": "*fp32", "lora_up_ptr": "*bf16", "bias_ptr": "*bf16", "y_ptr": "*bf16"}
ints = {name: "i32" for name in ("M", "N", "K", "R", "M_BUCKET")}
constants = dict(GROUP=64, ACT_UNSIGNED=False, LORA_MODE=gemm.LORA_SPLIT16, R_PAD=32, HAS_BIAS=True,
                 INTERPRET=False, BLOCK_M=128, BLOCK_N=128, GROUP_M=8)
source = ASTSource(fn=gemm.gemm_int4_kernel, signature={**pointers, **ints, **{k: "constexpr" for k in constants}},
                   constexprs=constants)
kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": 2})
ptx = kernel.asm["ptx"]
print(json.dumps({"int8_wgmma": "wgmma.mma_async" in ptx and ".s32.s8.s8" in ptx,
                  "cubin_bytes": len(kernel.asm.get("cubin") or b"")}))
"""


def test_int4_gemm_compiles_to_int8_wgmma_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["int8_wgmma"]  # int8 x int8 -> int32 warpgroup MMA, Hopper's 8-bit tensor cores
    assert result["cubin_bytes"] > 0  # ptxas accepted the PTX
