"""Analytical cost model: cycles, PE utilisation, traffic and energy (Accelergy style).

Cycles come in two flavours:
- `rtl_cycles`: what the generated RTL + testbench take (buffer lines loaded one per cycle, pass
  phases PRE/COMP/FLUSH, output lines drained one per cycle, and the handshake constants below).
  Computed from counts, not by replaying the simulation; tests check it within 5% of simulated cycles.
- `system_cycles`: the design in a system with DRAM at `dram_gbps` and a double-buffered scratchpad:
  each pass takes max(compute, DRAM transfer of what it loads/stores); the first load is exposed.

Energy = sum(action count x energy per action). The table (pJ, int8 datapath, 45 nm class) follows
Horowitz (ISSCC 2014: 8-bit multiply 0.2, 32-bit add 0.1, 64-bit read of an 8 KB SRAM 10 -> 1.25 per
byte, DRAM about 160 per byte); the register and idle-FU numbers are our assumptions. Multiplier and
adder energies scale linearly with the operand width relative to 8 / 32 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENERGY_PJ = {
    "mac_int8": 0.30,  # 8x8 multiply (0.2) + 32-bit accumulate (0.1)
    "reg_bit": 0.0025,  # one flip-flop bit written (delay lines, operand/accumulator registers)
    "sram_byte": 1.25,  # on-chip buffer read or write, per byte
    "dram_byte": 160.0,  # off-chip transfer, per byte
    "fu_idle_cycle": 0.01,  # clock + leakage of one FU for one cycle
}

# handshake constants of the testbench protocol (see simulate.py): a pass costs START_OVERHEAD
# cycles beyond its phases, and a simulation run ends FINISH_OVERHEAD cycles after its last command.
START_OVERHEAD = 3
FINISH_OVERHEAD = 2


@dataclass
class ModeCounts:
    passes: int
    load_lines: int
    drain_lines: int
    load_bytes: int
    drain_bytes: int
    phase_cycles: int  # PRE + COMP + FLUSH of one pass


def _relevant(stage, acc) -> set[str]:
    A = acc.A
    return {d for i, d in enumerate(stage.dims) if A[:, i].any()}


def mode_counts(plan, widths: dict[str, int] | None = None, acc_width: int = 32) -> ModeCounts:
    """Counts for running the whole stage in this mode, without enumerating passes."""
    from .simulate import loop_nest

    st = plan.stage
    loops = loop_nest(plan)
    trips = [n for _, n, _ in loops]
    npasses = int(np.prod(trips))

    def changes(rel: set[str]) -> int:
        # number of distinct consecutive keys: 1 + the loop transitions after which a loop the key
        # depends on holds a different value (the advancing loop, or an inner one that wraps)
        n, prefix = 1, 1
        for lvl, (d, trip, _) in enumerate(loops):
            before, prefix = prefix, prefix * trip
            inner = any(dd in rel and tt > 1 for dd, tt, _ in loops[lvl + 1:])
            if d in rel or inner:
                n += prefix - before
        return n

    load_lines = load_bytes = 0
    for sp in plan.slots:
        n = changes(_relevant(st, sp.access))
        load_lines += n * sp.layout.depth
        load_bytes += n * sp.layout.depth * sp.layout.banks * sp.width // 8
    out_rel = _relevant(st, st.output)
    ndrain = changes(out_rel)
    drain_lines = ndrain * plan.output.layout.depth
    drain_bytes = drain_lines * plan.output.layout.banks * acc_width // 8
    return ModeCounts(npasses, load_lines, drain_lines, load_bytes, drain_bytes, sum(plan.phases))


def mode_cycles(plan) -> int:
    c = mode_counts(plan)
    return c.load_lines + c.drain_lines + c.passes * (c.phase_cycles + START_OVERHEAD) + FINISH_OVERHEAD


def _system_cycles(c: ModeCounts, bytes_per_cycle: float) -> int:
    """Double-buffered passes: each takes max(compute, DRAM traffic); the first load is exposed."""
    compute = c.phase_cycles + START_OVERHEAD
    transfer = (c.load_bytes + c.drain_bytes) / max(c.passes, 1) / bytes_per_cycle
    first = (c.load_bytes / max(c.passes, 1)) / bytes_per_cycle
    return int(np.ceil(first + c.passes * max(compute, transfer)))


def mode_system_cycles(plan, dram_gbps: float = 16.0, clock_ghz: float = 1.0) -> int:
    return _system_cycles(mode_counts(plan), dram_gbps / clock_ghz)


def estimate(design, dram_gbps: float = 16.0, clock_ghz: float = 1.0) -> dict:
    """Cycles (RTL-exact and system-level), utilisation, traffic and energy of the scheduled design."""
    arch = design.arch
    nfu = arch.rows * arch.cols
    bytes_per_cycle = dram_gbps / clock_ghz
    rtl = system = 0
    macs = 0
    energy = dict.fromkeys(("mac", "registers", "sram", "dram", "idle"), 0.0)
    dram_bytes = sram_bytes = 0
    for s, stage in enumerate(design.workload.stages):
        plan = design.modes[design.choice[s]]
        c = mode_counts(plan, acc_width=arch.acc_width)
        rtl += c.load_lines + c.drain_lines + c.passes * (c.phase_cycles + START_OVERHEAD) + FINISH_OVERHEAD
        system += _system_cycles(c, bytes_per_cycle)
        macs += stage.macs
        width_scale = np.prod([max(8, sp.width) / 8 for sp in plan.slots[:2]])
        energy["mac"] += stage.macs * ENERGY_PJ["mac_int8"] * width_scale
        busy_fu_cycles = c.passes * c.phase_cycles * nfu
        energy["idle"] += max(busy_fu_cycles - stage.macs, 0) * ENERGY_PJ["fu_idle_cycle"]
        regs = pipeline_bits(plan)
        energy["registers"] += c.passes * plan.phases[1] * regs * ENERGY_PJ["reg_bit"]
        # every loaded byte is written once and read once per use by a memory-fed port
        reads = sum(_sram_reads(plan, sp) for sp in plan.slots) * c.passes
        sram = c.load_bytes + c.drain_bytes + reads + 2 * c.drain_bytes
        sram_bytes += sram
        dram_bytes += c.load_bytes + c.drain_bytes
        energy["sram"] += sram * ENERGY_PJ["sram_byte"]
        energy["dram"] += (c.load_bytes + c.drain_bytes) * ENERGY_PJ["dram_byte"]
    total_pj = sum(energy.values())
    return {
        "rtl_cycles": int(rtl),
        "system_cycles": int(system),
        "macs": int(macs),
        "utilisation": macs / (system * nfu) if system else 0.0,
        "dram_bytes": int(dram_bytes),
        "sram_bytes": int(sram_bytes),
        "roofline_cycles": int(max(macs / nfu, dram_bytes / bytes_per_cycle)),
        "energy_pj": {k: float(v) for k, v in energy.items()} | {"total": float(total_pj)},
    }


def pipeline_bits(plan) -> int:
    from .pipelining import register_bits

    return register_bits(plan.graph, plan.r)[0] if plan.r else 0


def _sram_reads(plan, sp) -> int:
    """Bytes one pass reads from a slot's banks: each memory port reads once per compute cycle."""
    if sp.stationary:
        return sum(len(v) for v in sp.preload.values()) * sp.width // 8
    return len(sp.ports) * plan.phases[1] * max(sp.width, 8) // 8
