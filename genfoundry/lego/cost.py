"""Analytical cost model: cycles, PE utilisation, traffic and energy (Accelergy style).

Cycles come in two flavours:
- `rtl_cycles`: what the generated RTL + testbench take (buffer lines loaded one per cycle, pass
  phases PRE/COMP/FLUSH, output lines drained one per cycle, and the handshake constants below).
  Computed from counts, not by replaying the simulation; tests check it within 5% of simulated cycles.
- `system_cycles`: the design in a system with DRAM at `dram_gbps` and a scratchpad of
  `scratchpad_kib` (256 KiB by default, the baseline's): the pass loops are blocked so that a block's
  operand and output tiles fit the scratchpad double-buffered (`dram_blocking` searches the block
  sizes), every tile comes from DRAM once per block it is used in, and transfers overlap compute:
  cycles = first block's load + max(compute, DRAM transfer). With a scratchpad too small for one tile
  of each tensor, every pass reloads its tiles.

Energy = sum(action count x energy per action). The table (pJ, int8 datapath, 45 nm class) follows
Horowitz (ISSCC 2014: 8-bit multiply 0.2, 32-bit add 0.1, 64-bit read of an 8 KB SRAM 10 -> 1.25 per
byte, DRAM about 160 per byte); the register and idle-FU numbers are our assumptions. A multiplier's
energy scales with its partial products, wa * wb / (8 * 8) of the int8 one (an int4 x int4 product
costs a quarter, int16 x int16 four times); the 32-bit accumulate costs the same for every width.

Packed stages (packing.py) run `lanes` MACs per FU operation: cycles and traffic come from the packed
loop nest, MAC energy from the logical one. Utilisation is the fraction of FU-cycles that multiply
(a packed operation counts once, a wide product `wide_factor` times), so it compares arrays of the
same FUs whatever the precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENERGY_PJ = {
    "mul_int8": 0.20,  # 8x8 multiply
    "add_int32": 0.10,  # 32-bit accumulate
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
        return _reloads([(d, trip) for d, trip, _ in loops], rel)

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


SCRATCHPAD_KIB = 256


@dataclass
class Blocking:
    blocks: dict[str, int]  # pass loop -> passes of that loop per scratchpad block
    dram_bytes: int
    first_load_bytes: int
    system_cycles: int


def _block_options(trip: int) -> list[int]:
    opts, b = [], 1
    while b < trip:
        opts.append(b)
        b *= 2
    return opts + [trip]


def _reloads(loops: list[tuple[str, int]], rel: set[str]) -> int:
    """Times a tile keyed by the loops in `rel` changes while the loop nest runs (outermost first)."""
    n, prefix = 1, 1
    for lvl, (d, trip) in enumerate(loops):
        before, prefix = prefix, prefix * trip
        inner = any(dd in rel and tt > 1 for dd, tt in loops[lvl + 1:])
        if d in rel or inner:
            n += prefix - before
    return n


def wide_factor(plan, mac_bits: int = 8) -> int:
    """FU cycles per product when operands are wider than the multiplier's `mac_bits` (an int16 x int16
    product is four int8 partial products). The RTL keeps one wide multiplier per FU (exact and simple);
    the system model charges the area-matched int8 array's cycles instead."""
    if plan.stage.lanes > 1:
        return 1
    return int(np.prod([-(-sp.width // mac_bits) for sp in plan.slots[:2]]))


def dram_blocking(plan, dram_gbps: float = 16.0, clock_ghz: float = 1.0, scratchpad_kib: float = SCRATCHPAD_KIB,
                  acc_width: int = 32, mac_bits: int = 8) -> Blocking:
    """Block sizes of the pass loops for this scratchpad (exhaustive over powers of two per loop): the
    fewest steady-state cycles, then the least DRAM traffic (energy), then the smallest first load."""
    from itertools import product

    from .simulate import loop_nest

    st = plan.stage
    nest = loop_nest(plan)
    loops = [(d, trip) for d, trip, _ in nest]
    step = {d: stp for d, _, stp in nest}
    # (access, bytes per element, relevant loops, is output); a block moves the bounding box of the
    # elements it touches, so overlapping convolution windows are fetched once per block
    tensors = [(sp.access, sp.width / 8, _relevant(st, sp.access), False) for sp in plan.slots]
    tensors.append((st.output, acc_width / 8, _relevant(st, st.output), True))
    c = mode_counts(plan, acc_width=acc_width)
    compute = c.passes * (c.phase_cycles + START_OVERHEAD) * wide_factor(plan, mac_bits)
    bpc = dram_gbps / clock_ghz
    capacity = scratchpad_kib * 1024
    best, best_key = None, None
    for sizes in product(*[_block_options(t) for _, t in loops]):
        blk = dict(zip((d for d, _ in loops), sizes))
        span = np.array([min(blk[d] * step[d], st.bound(d)) - 1 for d in st.dims])
        foot = [nbytes * float(np.prod(np.abs(acc.A) @ span + 1)) for acc, nbytes, _, _ in tensors]
        if best is not None and 2 * sum(foot) > capacity:
            continue  # the all-ones blocking is always evaluated first, as the fallback
        outer = [(d, -(-t // blk[d])) for d, t in loops]
        traffic = sum(f * _reloads(outer, rel) for f, (_, _, rel, _) in zip(foot, tensors))
        first = sum(f for f, (_, _, _, is_out) in zip(foot, tensors) if not is_out)
        key = (max(compute, int(np.ceil(traffic / bpc))), int(traffic), int(first))
        if best is None or key < best_key:
            best, best_key = Blocking(blk, int(traffic), int(first), int(np.ceil(first / bpc)) + key[0]), key
    return best


def mode_cycles(plan) -> int:
    c = mode_counts(plan)
    return c.load_lines + c.drain_lines + c.passes * (c.phase_cycles + START_OVERHEAD) + FINISH_OVERHEAD


def mode_system_cycles(plan, dram_gbps: float = 16.0, clock_ghz: float = 1.0,
                       scratchpad_kib: float = SCRATCHPAD_KIB, mac_bits: int = 8) -> int:
    return dram_blocking(plan, dram_gbps, clock_ghz, scratchpad_kib, mac_bits=mac_bits).system_cycles


def estimate(design, dram_gbps: float = 16.0, clock_ghz: float = 1.0, scratchpad_kib: float = SCRATCHPAD_KIB) -> dict:
    """Cycles (RTL-exact and system-level), utilisation, traffic and energy of the scheduled design."""
    arch = design.arch
    nfu = arch.rows * arch.cols
    bytes_per_cycle = dram_gbps / clock_ghz
    rtl = system = 0
    macs = ops = busy = 0
    energy = dict.fromkeys(("mac", "registers", "sram", "dram", "idle"), 0.0)
    dram_bytes = sram_bytes = 0
    widths = design.workload.widths
    for s, stage in enumerate(design.workload.stages):
        plan = design.modes[design.choice[s]]
        c = mode_counts(plan, acc_width=arch.acc_width)
        rtl += c.load_lines + c.drain_lines + c.passes * (c.phase_cycles + START_OVERHEAD) + FINISH_OVERHEAD
        blocking = dram_blocking(plan, dram_gbps, clock_ghz, scratchpad_kib, arch.acc_width, arch.mac_bits)
        stage_system = blocking.system_cycles
        system += stage_system
        busy += plan.stage.macs * wide_factor(plan, arch.mac_bits)
        macs += stage.macs
        ops += plan.stage.macs
        wa, wb = (widths[a.tensor] for a in stage.inputs[:2]) if len(stage.inputs) > 1 else (widths[stage.inputs[0].tensor], 8)
        energy["mac"] += stage.macs * (ENERGY_PJ["mul_int8"] * wa * wb / 64 + ENERGY_PJ["add_int32"])
        busy_fu_cycles = c.passes * c.phase_cycles * nfu
        energy["idle"] += max(busy_fu_cycles - plan.stage.macs, 0) * ENERGY_PJ["fu_idle_cycle"]
        regs = pipeline_bits(plan)
        energy["registers"] += c.passes * plan.phases[1] * regs * ENERGY_PJ["reg_bit"]
        # scratchpad: written by every DRAM transfer, read by every tile load into the array's buffers;
        # the array's buffers: written once per loaded byte, read once per use by a memory-fed port
        reads = sum(_sram_reads(plan, sp) for sp in plan.slots) * c.passes
        sram = blocking.dram_bytes + 2 * (c.load_bytes + c.drain_bytes) + reads + 2 * c.drain_bytes
        sram_bytes += sram
        dram_bytes += blocking.dram_bytes
        energy["sram"] += sram * ENERGY_PJ["sram_byte"]
        energy["dram"] += blocking.dram_bytes * ENERGY_PJ["dram_byte"]
    total_pj = sum(energy.values())
    return {
        "rtl_cycles": int(rtl),
        "system_cycles": int(system),
        "macs": int(macs),
        "utilisation": busy / (system * nfu) if system else 0.0,  # FU-cycles spent multiplying
        "dram_bytes": int(dram_bytes),
        "sram_bytes": int(sram_bytes),
        "roofline_cycles": int(max(ops / nfu, dram_bytes / bytes_per_cycle)),
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
