"""`compile(workload, arch) -> Design`: the pass pipeline, and what a design can do afterwards."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cost as cost_model
from . import fuse, packing, pipelining, simulate as sim
from .graph import ModePlan, schedule_mode
from .ir import LegoError, Workload, bind
from .verilog import Hardware, emit, hardware_of
from .workloads import parse_workload, wrap


@dataclass(frozen=True)
class Arch:
    """Array and generator options. `dataflows`: names (os, ws, is, os-bcast) or Dataflow objects."""

    rows: int = 4
    cols: int = 4
    dataflows: tuple = ("os",)
    acc_width: int = 32
    max_time_tile: int = 256
    pipelining: str = "lp"  # "lp" or "naive"
    prefer_chains: bool = True  # fusion heuristic: reuse links other modes already built
    reduction: str = "tree"  # spatial (dt = 0) partial-sum reductions: balanced "tree" or "chain"
    mac_bits: int = 8  # operand width one FU multiplier is sized for; narrower stages pack lanes
    pack_subwords: bool = True  # narrow operands packed into lanes, wide ones cut into mac_bits slices

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise LegoError(f"array {self.rows}x{self.cols}: expected at least 1x1")
        if not self.dataflows:
            raise LegoError("arch: expected at least one dataflow")
        if self.pipelining not in ("lp", "naive"):
            raise LegoError(f"pipelining {self.pipelining!r}: expected 'lp' or 'naive'")
        if self.reduction not in ("tree", "chain"):
            raise LegoError(f"reduction {self.reduction!r}: expected 'tree' or 'chain'")
        if self.mac_bits < 2:
            raise LegoError(f"mac_bits {self.mac_bits}: expected at least 2")

    @classmethod
    def parse(cls, array: str = "4x4", dataflow: str = "os", **kw) -> "Arch":
        parts = array.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise LegoError(f"--array {array!r}: expected ROWSxCOLS like 16x16")
        dfs = tuple(d.strip() for d in dataflow.split(",") if d.strip())
        return cls(int(parts[0]), int(parts[1]), dfs, **kw)


@dataclass
class Design:
    workload: Workload
    arch: Arch
    modes: list[ModePlan]
    hw: Hardware
    verilog: str
    stage_modes: dict[int, list[int]]  # stage index -> modes that can run it
    choice: dict[int, int]  # stage index -> mode the schedule runs
    compile_seconds: float = 0.0
    naive_register_bits: int = 0
    lp_register_bits: int = 0
    muxes: int = 0
    hw_workload: Workload | None = None  # what the buffers hold: `workload` with sub-word stages packed
    packed: dict = field(default_factory=dict)  # derived input tensor -> packing.PackedTensor / SlicedTensor
    # runs of consecutive stages that add into the same output tiles: each tile gets every stage's
    # passes before one drain (the SVDQuant branches, byte slices), so the output leaves the chip once
    groups: list[list[int]] = field(default_factory=list)

    @property
    def stages(self) -> tuple:
        """The stages the hardware runs (packed / byte-sliced); `choice` and `stage_modes` index these."""
        return (self.hw_workload or self.workload).stages

    # ---------------------------------------------------------------- outputs
    def write_verilog(self, directory: str | Path) -> list[Path]:
        from genfoundry import hub

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = [d / "lego_top.v", d / "tb_core.v"]
        hub.write_text_atomic(files[0], self.verilog)
        hub.write_text_atomic(files[1], sim.testbench(self.hw, len(self.modes)))
        hub.write_json_atomic(d / "design.json", self.manifest())
        return files

    def manifest(self) -> dict:
        return {"workload": self.workload.name, "rows": self.arch.rows, "cols": self.arch.cols,
                "dataflows": [d if isinstance(d, str) else d.name for d in self.arch.dataflows],
                "acc_width": self.arch.acc_width, "max_time_tile": self.arch.max_time_tile,
                "pipelining": self.arch.pipelining, "prefer_chains": self.arch.prefer_chains,
                "reduction": self.arch.reduction, "mac_bits": self.arch.mac_bits,
                "pack_subwords": self.arch.pack_subwords}

    def report(self) -> dict:
        est = self.estimate()
        return {
            "workload": self.workload.name,
            "array": f"{self.arch.rows}x{self.arch.cols}",
            "modes": [{"index": m.index, "name": m.name, "phases": list(m.phases), "tile": dict(zip(m.mapping.dims, m.mapping.tile)),
                       "stationary_inputs": [sp.tensor for sp in m.slots if sp.stationary],
                       "output_stationary": m.output.stationary,
                       "banks": {sp.tensor: sp.layout.banks for sp in m.slots} | {m.output.tensor: m.output.layout.banks},
                       "multiport": [sp.tensor for sp in m.slots if sp.layout.multiport]} for m in self.modes],
            "schedule": {self.stages[s].name: self.modes[mi].name for s, mi in self.choice.items()},
            "lanes": {st.name: st.lanes for st in self.stages},
            "pipeline_register_bits": {"lp": self.lp_register_bits, "naive": self.naive_register_bits},
            "muxes": self.muxes,
            "estimate": est,
            "compile_seconds": self.compile_seconds,
        }

    # ---------------------------------------------------------------- analysis
    def resources(self) -> dict:
        """What the generated Verilog instantiates, counted from the generator's own plan (no synthesis):
        FUs and the multiplier lanes each packs per stage, on-chip buffer bits (input slots: width x
        banks x depth; output: accumulator width), pipeline-register bits and mode multiplexers."""
        hw = self.hw
        input_bits = sum(w * b * d for w, b, d in zip(hw.slot_width, hw.slot_banks, hw.slot_depth))
        return {"fus": hw.rows * hw.cols, "lanes": {st.name: st.lanes for st in self.stages},
                "input_buffer_bits": input_bits, "output_buffer_bits": hw.out_banks * hw.out_depth * hw.acc_width,
                "pipeline_register_bits": self.lp_register_bits if self.arch.pipelining == "lp" else self.naive_register_bits,
                "mode_muxes": self.muxes, "modes": len(self.modes)}

    def estimate(self, **kw) -> dict:
        return cost_model.estimate(self, **kw)

    def synthesize(self, **kw) -> dict:
        from . import synth

        return synth.synthesize(self.verilog, **kw)

    def simulate(self, inputs: dict[str, np.ndarray], simulator: str = "auto") -> tuple[dict[str, np.ndarray], int]:
        """Run the Verilog on `inputs`; returns (outputs, clock cycles)."""
        wl = self.workload
        missing = [n for n in wl.inputs if n not in inputs]
        if missing:
            raise LegoError(f"simulate: missing input tensor(s) {missing}; {wl.name} takes {list(wl.inputs)}")
        env: dict[str, np.ndarray] = {}
        for n in wl.inputs:
            x = np.asarray(inputs[n])
            if tuple(x.shape) != tuple(wl.shapes[n]):
                raise LegoError(f"simulate: tensor {n} has shape {tuple(x.shape)}; expected {tuple(wl.shapes[n])}")
            if not np.issubdtype(x.dtype, np.integer):
                raise LegoError(f"simulate: tensor {n} has dtype {x.dtype}; expected integers")
            lo, hi = -(1 << (wl.widths[n] - 1)), (1 << (wl.widths[n] - 1)) - 1
            if x.size and (x.min() < lo or x.max() > hi):
                raise LegoError(f"simulate: tensor {n} has values outside int{wl.widths[n]} [{lo}, {hi}]")
            env[n] = x.astype(np.int64)
        env = packing.pack_inputs(env, self.packed)
        if not self.verilog:
            raise LegoError("simulate: this design was compiled with emit_verilog=False")
        kind = sim.available_simulator(simulator)
        exe = sim.build(self.verilog, sim.testbench(self.hw, len(self.modes)), kind)
        total = 0
        produced: set[str] = set()
        for group in self.groups:
            plans = [self.modes[self.choice[s]] for s in group]
            plan = plans[0]
            out_name = plan.stage.output.tensor
            out = np.zeros(wl.shapes[out_name], dtype=np.int64)
            cmds, drains = sim.command_stream(plans, self.hw, env, {})
            data, cycles = sim.run(exe, kind, "\n".join(cmds + ["0 0 0 0"]) + "\n")
            total += cycles
            pos = 0
            for base, n in drains:
                lines = sim.parse_lines(data[pos:pos + n], n, self.hw.out_banks, plan.output.layout.banks, self.hw.acc_width)
                sim.scatter_output(plan, base, lines, out, self.arch.acc_width)
                pos += n
            if out_name in produced:  # a later stage adds into an earlier output (low-rank branch, byte slices)
                out = wrap(env[out_name] + out, wl.widths[out_name])
            env[out_name] = wrap(out, wl.widths[out_name])
            produced.add(out_name)
        return {n: env[n].astype(np.int32) for n in wl.outputs}, total


def _mappings(wl: Workload, arch: Arch) -> tuple[list, dict[int, list[int]]]:
    mappings, stage_modes = [], {}
    for s, stage in enumerate(wl.stages):
        for df in arch.dataflows:
            mp = bind(stage, df, arch.rows, arch.cols, arch.max_time_tile)
            stage_modes.setdefault(s, []).append(len(mappings))
            mappings.append(mp)
    return mappings, stage_modes


def compile(workload: str | Workload, arch: Arch | None = None, emit_verilog: bool = True) -> Design:
    """Run every pass: bind dataflows, plan (reuse, interconnect, memory), fuse, delay-match, emit.

    emit_verilog=False skips the Verilog text (for cost-model-only sweeps over large layers).
    """
    t_start = time.perf_counter()
    wl = parse_workload(workload) if isinstance(workload, str) else workload
    arch = arch or Arch()
    hw_wl, packed = packing.pack_workload(wl, arch.mac_bits) if arch.pack_subwords else (wl, {})
    mappings, stage_modes = _mappings(hw_wl, arch)
    widths = dict(hw_wl.widths)
    modes = fuse.plan_fused(mappings, widths, arch.acc_width, arch.prefer_chains, arch.reduction)
    lp_bits = naive_bits = 0
    for m in modes:
        r_lp = pipelining.lp_delay_match(m.graph)
        r_nv = pipelining.naive_balance(m.graph)
        lp_bits += pipelining.register_bits(m.graph, r_lp)[1]
        naive_bits += pipelining.register_bits(m.graph, r_nv)[1]
        schedule_mode(m, r=r_lp if arch.pipelining == "lp" else r_nv)
    hw = hardware_of(modes, arch.rows, arch.cols, arch.acc_width)
    verilog = emit(modes, hw) if emit_verilog else ""
    design = Design(wl, arch, modes, hw, verilog, stage_modes, {}, 0.0, naive_bits, lp_bits, fuse.count_muxes(modes),
                    hw_wl, packed)
    for s, ms in stage_modes.items():
        # run each stage in the mode the system-level model (16 GB/s DRAM) finds fastest
        design.choice[s] = min(ms, key=lambda mi: (cost_model.mode_system_cycles(modes[mi]), cost_model.mode_cycles(modes[mi])))
    for s in range(len(design.stages)):
        prev = design.groups[-1] if design.groups else None
        if prev and sim.shares_output_tiles(modes[design.choice[prev[0]]], modes[design.choice[s]]):
            prev.append(s)
        else:
            design.groups.append([s])
    design.compile_seconds = time.perf_counter() - t_start
    return design


def load_design(directory: str | Path) -> Design:
    """Rebuild the design a `write_verilog` directory holds (from its design.json manifest)."""
    d = Path(directory)
    f = d / "design.json"
    if not f.exists():
        raise LegoError(f"{d}: no design.json; expected a directory written by `genfoundry rtl`")
    man = json.loads(f.read_text())
    arch = Arch(man["rows"], man["cols"], tuple(man["dataflows"]), man["acc_width"], man["max_time_tile"],
                man["pipelining"], man["prefer_chains"], man.get("reduction", "tree"), man.get("mac_bits", 8),
                man.get("pack_subwords", True))
    design = compile(man["workload"], arch)
    on_disk = (d / "lego_top.v").read_text() if (d / "lego_top.v").exists() else None
    if on_disk is not None and on_disk != design.verilog:
        raise LegoError(f"{d / 'lego_top.v'} differs from what design.json regenerates; re-run `genfoundry rtl`")
    return design
