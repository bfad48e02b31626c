"""From a quantized model to its accelerator: SVDQuant meets LEGO.

- `svdq_layer_specs(module, tokens)`: every W4A4 layer of a quantized model as a LEGO workload, the svdq
  operator ``svdq:MxNxKxR`` (int4 GEMM + low-rank up projection) and the low-rank down projection
  ``gemm:MxRxK:w16`` that feeds it, for `tokens` rows (one image's tokens for SANA).
- `capture_input(module, layer, run)`: the input one layer sees in a real forward pass.
- `layer_accelerator(...)`: generate the accelerator of one layer of a quantized SANA pipeline, simulate
  its Verilog on that layer's own integer operands (genfoundry.svdquant.integer) and compare it, and
  every other quantized layer, with the Gemmini-like baseline under the same cost model.

genfoundry.lego sees workloads and integer tensors only; this module is where the model meets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genfoundry.errors import InputError

DEFAULT_LAYER = "transformer_blocks.0.attn1.to_q"


def svdq_layer_specs(module: nn.Module, tokens: int) -> dict[str, dict]:
    """layer name -> {"spec": svdq:..., "down_spec": gemm:...:w16 or None} for every SVDQLinear (the
    pointwise convolutions included: a 1x1 conv over `tokens` pixels is the same GEMM)."""
    from genfoundry.svdquant import SVDQLinear
    from genfoundry.svdquant.linear import PointwiseConv

    out = {}
    wrapped = {f"{n}.linear": n for n, m in module.named_modules() if isinstance(m, PointwiseConv)}
    for name, m in module.named_modules():
        if isinstance(m, SVDQLinear):
            name = wrapped.get(name, name)
            rank = max(m.rank, 1)  # lego's svdq needs R >= 1; a rank-0 layer gets an all-zero branch
            bits = "" if m.lowrank_bits == 16 else f":r{m.lowrank_bits}"
            out[name] = {"spec": f"svdq:{tokens}x{m.out_features}x{m.in_features}x{rank}{bits}",
                         "down_spec": f"gemm:{tokens}x{m.rank}x{m.in_features}:w{m.lowrank_bits}" if m.rank else None}
    return out


def capture_input(module: nn.Module, layer: str, run: Callable[[], object]) -> torch.Tensor:
    """The input [*, K] of `module.<layer>` at its first call while `run()` executes."""
    target = dict(module.named_modules()).get(layer)
    if target is None:
        raise InputError(f"no layer {layer!r} in {type(module).__name__}")
    seen: list[torch.Tensor] = []

    def hook(_mod, args):
        if not seen:
            seen.append(args[0].detach().clone())

    handle = target.register_forward_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    if not seen:
        raise InputError(f"layer {layer!r} never ran")
    return seen[0]


def _estimates(spec: str, archs: tuple, cache: dict) -> tuple[dict, dict]:
    """(LEGO, Gemmini-like) estimates of `spec` on the two archs, each computed once per call."""
    from genfoundry.lego import baseline

    if spec not in cache:
        cache[spec] = (baseline.estimate_lego(spec, archs[0]), baseline.estimate_gemmini(spec, arch=archs[1]))
    return cache[spec]


def layer_accelerator(pipe, caption: str, seed: int, folder: Path, layer: str | None = None,
                      array: str = "8x8", dataflows: str | None = None, simulator: str = "auto") -> dict:
    """Build, simulate and compare the accelerator of one W4A4 layer of a quantized SANA pipeline.

    The layer's input is captured in the first denoising step of `caption` (the conditional branch);
    its integer operands go through the generated Verilog (Verilator or Icarus) and must match the
    numpy reference bit for bit. Without a simulator the cycles come from the cycle model (said in
    `cycles_from`). LEGO (`array`, its fused dataflows os/ws/is/ws-tree unless `dataflows` says) is
    compared with the Gemmini-like baseline at the same array size (os/ws systolic mesh, int8 lanes)
    under one cost model; every quantized layer of the first block is costed, the totals cover all."""
    from genfoundry import hub, lego
    from genfoundry.lego import baseline
    from genfoundry.lego.simulate import SimulationError, available_simulator
    from genfoundry.svdquant import SVDQLinear
    from genfoundry.svdquant.integer import integer_operands

    transformer = pipe.transformer
    layer = layer or DEFAULT_LAYER
    module = dict(transformer.named_modules()).get(layer)
    if not isinstance(module, SVDQLinear):
        choices = [n for n, m in transformer.named_modules() if isinstance(m, SVDQLinear)]
        raise InputError(f"layer {layer!r} is not a W4A4 (SVDQLinear) layer of this model; some that are: "
                         f"{', '.join(choices[:6])}")
    x = capture_input(transformer, layer, lambda: pipe([caption], steps=2, seed=[seed], progress=False,
                                                       warn_unknown_words=False))
    x = x.reshape(-1, x.shape[-2], x.shape[-1])[-1] if x.dim() == 3 else x.reshape(-1, x.shape[-1])
    operands = integer_operands(module, x)
    with torch.no_grad():
        expected = module(x).double().numpy()
    recon_error = float(np.linalg.norm(operands.dequantized_output() - expected) / max(np.linalg.norm(expected), 1e-30))
    tokens = x.shape[0]
    specs = svdq_layer_specs(transformer, tokens)
    spec = specs[layer]["spec"]

    arch = lego.Arch.parse(array, dataflows or ",".join(baseline.LEGO_ARCH.dataflows),
                           max_time_tile=baseline.LEGO_ARCH.max_time_tile)
    gemmini_arch = replace(baseline.GEMMINI_ARCH, rows=arch.rows, cols=arch.cols)
    design = lego.compile(spec, arch)
    files = design.write_verilog(folder)
    np.savez(folder / "inputs.npz", **operands.tensors())
    reference = lego.reference(design.workload, operands.tensors())["Y"]
    result: dict = {"layer": layer, "spec": spec, "array": f"{arch.rows}x{arch.cols}",
                    "dataflows": [d if isinstance(d, str) else d.name for d in arch.dataflows],
                    "verilog": [p.relative_to(folder.parent).as_posix() for p in files],
                    "verilog_lines": len(design.verilog.splitlines()),
                    "operand_bits": {k: design.workload.widths[k] for k in ("X", "W", "L", "U", "Y")},
                    "integer_reconstruction_rel_error": recon_error, "compile_seconds": design.compile_seconds}
    estimate = design.estimate()
    try:
        kind = available_simulator(simulator)
    except SimulationError as err:
        result.update(cycles=estimate["rtl_cycles"], cycles_from="cycle model (no Verilator or Icarus installed)",
                      simulator=None, simulator_note=str(err), bit_exact=None)
    else:
        outputs, cycles = design.simulate(operands.tensors(), simulator=kind)
        np.savez(folder / "outputs.npz", **outputs)
        result.update(cycles=cycles, cycles_from=f"RTL simulation ({kind})", simulator=kind,
                      bit_exact=bool(np.array_equal(outputs["Y"], reference)),
                      cycle_model_rtl_cycles=estimate["rtl_cycles"])
    gemmini = baseline.estimate_gemmini(spec, arch=gemmini_arch)
    result.update(system_cycles=estimate["system_cycles"], gemmini_system_cycles=gemmini["system_cycles"],
                  speedup=gemmini["system_cycles"] / max(estimate["system_cycles"], 1),
                  utilisation=estimate["utilisation"], gemmini_utilisation=gemmini["utilisation"],
                  energy_ratio=gemmini["energy_pj"]["total"] / max(estimate["energy_pj"]["total"], 1e-9),
                  resources=design.resources(),
                  gemmini_resources=baseline.gemmini_design(spec, emit_verilog=False, arch=gemmini_arch).resources())
    result["layers"] = _layer_table(specs, (arch, gemmini_arch), {spec: (estimate, gemmini)})
    hub.write_json_atomic(folder / "report.json", result)
    return result


def _layer_table(specs: dict[str, dict], archs: tuple, cache: dict) -> dict:
    """Cycles of every quantized layer of the first block (low-rank down projection included) for
    LEGO and the Gemmini-like baseline, and the totals over every quantized layer of the model."""
    rows = []
    total_lego = total_gemmini = 0
    for name, layer in specs.items():
        cycles = {"lego": 0, "gemmini": 0}
        for spec in filter(None, (layer["spec"], layer["down_spec"])):
            lego_est, gem_est = _estimates(spec, archs, cache)
            cycles["lego"] += lego_est["system_cycles"]
            cycles["gemmini"] += gem_est["system_cycles"]
        total_lego += cycles["lego"]
        total_gemmini += cycles["gemmini"]
        if name.startswith("transformer_blocks.0.") or not name.startswith("transformer_blocks."):
            rows.append({"layer": name, **layer, "lego_cycles": cycles["lego"], "gemmini_cycles": cycles["gemmini"],
                         "speedup": cycles["gemmini"] / max(cycles["lego"], 1)})
    return {"rows": rows, "quantized_layers": len(specs), "lego_cycles": total_lego, "gemmini_cycles": total_gemmini,
            "speedup": total_gemmini / max(total_lego, 1)}
