"""Fused GPU kernels of the Nunchaku engine, written in Triton (the `triton` backend of
`genfoundry.nunchaku.ops`).

- `quantize.py`  kernel 1: one read of X -> packed 4-bit activations + group scales + X @ lora_down
- `gemm.py`      kernel 2: W4A4 GEMM with per-group scaling in the main loop; lora_up + bias epilogue
- `backend.py`   the public functions ops.py dispatches to, argument checks, autotuned launch
- `autotune.py`  tile configurations per GPU generation

`import genfoundry.nunchaku.triton` itself does not import triton; `backend` and the kernel modules do.
"""
