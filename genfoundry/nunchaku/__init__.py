"""Nunchaku: the inference engine for SVDQuant.

- `packing`: the packed INT4 / NVFP4 layouts (two 4-bit codes per int8) and their quantizers.
- `reference`: the W4A4 + low-rank operator in plain torch; defines the semantics.
- `ops`: `svdq_linear` and its two fused halves, dispatched to a backend (`reference`, `triton`).
- `triton/`: fused GPU kernels (quantize + lora_down; 4-bit GEMM + lora_up + bias).
"""

from genfoundry.nunchaku.ops import (
    BACKENDS,
    BackendUnavailable,
    available_backends,
    current_backend,
    gemm_w4a4_lora_up,
    get_backend,
    quantize_act_lora_down,
    resolve_backend,
    svdq_linear,
    use_backend,
)

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "available_backends",
    "current_backend",
    "gemm_w4a4_lora_up",
    "get_backend",
    "quantize_act_lora_down",
    "resolve_backend",
    "svdq_linear",
    "use_backend",
]
