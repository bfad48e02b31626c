"""`genfoundry rtl` commands.

  genfoundry rtl WORKLOAD --array 16x16 --dataflow os,ws -o DIR
      compile WORKLOAD (gemm:MxNxK[:wB], conv2d:CxHxWxKxRxS, svdq:MxNxKxR[:rB], ..., or model:sana-0.6b /
      model:vila-u / model:dc-ae / model:sana-svdq / model:sana-svdq-r8) and write DIR/lego_top.v,
      DIR/tb_core.v, DIR/design.json and DIR/report.json. For model:NAME the RTL is the design of its
      first layer and report.json lists every layer with LEGO and Gemmini-like estimates.
  genfoundry rtl simulate DIR --inputs in.npz --outputs out.npz
      run DIR's Verilog on the tensors in in.npz (names as in the spec) and save the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from .ir import LegoError
from .simulate import SimulationError


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _compile_cmd(workload: str, array: str, dataflow: str, out: Path, pipelining: str, reduction: str) -> None:
    from . import baseline, workloads
    from .design import Arch, compile

    arch = Arch.parse(array, dataflow, pipelining=pipelining, reduction=reduction)
    layers = None
    spec = workload
    if workload.startswith("model:"):
        layers = workloads.model_layers(workload.split(":", 1)[1])
        spec = layers[0].spec
    design = compile(spec, arch)
    design.write_verilog(out)
    report = design.report()
    if layers is not None:
        rows = []
        for layer in layers:
            lego = baseline.estimate_lego(layer.spec, arch)
            gem = baseline.estimate_gemmini(layer.spec)
            rows.append({"layer": layer.name, "spec": layer.spec, "count": layer.count,
                         "once_per_image": layer.once_per_image,
                         "lego_cycles": lego["system_cycles"], "gemmini_cycles": gem["system_cycles"],
                         "lego_energy_pj": lego["energy_pj"]["total"], "gemmini_energy_pj": gem["energy_pj"]["total"]})
        report["model"] = {"name": workload, "rtl_layer": spec, "lego_array": array, "gemmini_array": "16x16", "layers": rows}
    from genfoundry import hub

    hub.write_json_atomic(out / "report.json", report)
    est = report["estimate"]
    typer.echo(f"wrote {out}/lego_top.v ({len(design.verilog.splitlines())} lines) and report.json: "
               f"{est['rtl_cycles']} cycles (RTL model), {est['utilisation']:.1%} utilisation")


def _simulate_cmd(directory: Path, inputs: Path, outputs: Path, simulator: str) -> None:
    from .design import load_design

    if not inputs.exists():
        _fail(f"--inputs {inputs}: file not found")
    design = load_design(directory)
    with np.load(inputs) as z:
        tensors = {k: z[k] for k in z.files}
    result, cycles = design.simulate(tensors, simulator=simulator)
    outputs.parent.mkdir(parents=True, exist_ok=True)
    np.savez(outputs, **result)
    typer.echo(f"simulated {design.workload.name}: {cycles} cycles; wrote {', '.join(result)} to {outputs}")


def register(app: typer.Typer) -> None:
    @app.command("rtl", context_settings={"allow_interspersed_args": True})
    def rtl(
        args: List[str] = typer.Argument(..., help="WORKLOAD, or: simulate DIR"),
        array: str = typer.Option("16x16", "--array", help="ROWSxCOLS of the FU array"),
        dataflow: str = typer.Option("os,ws", "--dataflow", help="comma-separated dataflows: os, ws, is, os-bcast, ws-tree"),
        out: Optional[Path] = typer.Option(None, "-o", "--out", help="output directory"),
        inputs: Optional[Path] = typer.Option(None, "--inputs", help="simulate: .npz of input tensors"),
        outputs: Optional[Path] = typer.Option(None, "--outputs", help="simulate: .npz to write"),
        simulator: str = typer.Option("auto", "--simulator", help="auto, verilator or icarus"),
        pipelining: str = typer.Option("lp", "--pipelining", help="delay matching: lp or naive"),
        reduction: str = typer.Option("tree", "--reduction", help="spatial partial-sum reduction: tree or chain"),
    ) -> None:
        """Generate a spatial accelerator (Verilog) for a tensor workload, or simulate one."""
        try:
            if args[0] == "simulate":
                if len(args) != 2 or inputs is None or outputs is None:
                    _fail("usage: genfoundry rtl simulate DIR --inputs in.npz --outputs out.npz")
                _simulate_cmd(Path(args[1]), inputs, outputs, simulator)
            else:
                if len(args) != 1 or out is None:
                    _fail("usage: genfoundry rtl WORKLOAD --array 16x16 --dataflow os,ws -o DIR")
                _compile_cmd(args[0], array, dataflow, out, pipelining, reduction)
        except (LegoError, SimulationError) as e:
            _fail(str(e))
