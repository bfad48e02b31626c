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

Costs follow the stages the hardware runs (packing.py): a packed stage does `lanes` MACs per FU
operation at the lane width, a byte-sliced wide stage is several int8 stages. Utilisation is the
fraction of FU-cycles that multiply, so it compares arrays of the same FUs whatever the precision;
`macs` counts the logical workload's MACs.
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


def mode_counts(plan, widths: dict[str, int] | None = None, acc_width: int = 32, shared_slots: set[int] = frozenset(),
                drains: bool = True) -> ModeCounts:
    """Counts for running the whole stage in this mode, without enumerating passes.

    In an output group (Design.groups) the stage's passes for each output tile are one run among other
    stages' runs: `shared_slots` are the physical input slots another stage of the group also loads
    (so they are reloaded at the start of every run) and `drains` is False for all but the group's
    first stage (the group drains each tile once)."""
    from .simulate import loop_nest

    st = plan.stage
    loops = loop_nest(plan)
    trips = [n for _, n, _ in loops]
    npasses = int(np.prod(trips))
    out_rel = _relevant(st, st.output)
    runs = int(np.prod([n for d, n, _ in loops if d in out_rel]))
    inner = [(d, n) for d, n, _ in loops if d not in out_rel]

    def changes(rel: set[str]) -> int:
        return _reloads([(d, trip) for d, trip, _ in loops], rel)

    load_lines = load_bytes = 0
    for sp in plan.slots:
        rel = _relevant(st, sp.access)
        n = runs * _reloads(inner, rel) if sp.index in shared_slots else changes(rel)
        load_lines += n * sp.layout.depth
        load_bytes += n * sp.layout.depth * sp.layout.banks * sp.width // 8
    ndrain = changes(out_rel) if drains else 0
    drain_lines = ndrain * plan.output.layout.depth
    drain_bytes = drain_lines * plan.output.layout.banks * acc_width // 8
    return ModeCounts(npasses, load_lines, drain_lines, load_bytes, drain_bytes, sum(plan.phases))


SCRATCHPAD_KIB = 256


@dataclass
class Blocking:
    blocks: dict[str, int]  # pass loop -> passes of that loop per scratchpad block
    order: tuple[str, ...]  # block loops, outermost first
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


def dram_blocking(plan, dram_gbps: float = 16.0, clock_ghz: float = 1.0, scratchpad_kib: float = SCRATCHPAD_KIB,
                  acc_width: int = 32, resident: Blocking | None = None) -> Blocking:
    """Block sizes and block order for this scratchpad: exhaustive over powers of two per loop and over
    the orders of the output loops (the reduction loops stay innermost, so partial sums never leave the
    chip); the fewest steady-state cycles, then the least DRAM traffic (energy), then the smallest
    first load.

    `resident`: the blocking of an earlier stage of the same output group; this stage then adds into
    that stage's output blocks (same output-loop blocks and order) and moves no output itself."""
    from itertools import permutations, product

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
    compute = c.passes * (c.phase_cycles + START_OVERHEAD)
    bpc = dram_gbps / clock_ghz
    capacity = scratchpad_kib * 1024
    out_rel = _relevant(st, st.output)
    trips = dict(loops)
    out_loops = [d for d, _ in loops if d in out_rel]
    orders = [list(p) + [d for d, _ in loops if d not in out_rel] for p in permutations(out_loops)]
    options = [_block_options(t) for _, t in loops]
    if resident is not None and all(d in resident.blocks for d in out_loops):
        orders = [[d for d in resident.order if d in out_rel] + [d for d, _ in loops if d not in out_rel]]
        options = [[resident.blocks[d]] if d in out_rel else o for (d, _), o in zip(loops, options)]
        tensors[-1] = (*tensors[-1][:2], set(), True)  # the output stays on chip: no traffic of its own
    best, best_key = None, None
    for sizes in product(*options):
        blk = dict(zip((d for d, _ in loops), sizes))
        span = np.array([min(blk[d] * step[d], st.bound(d)) - 1 for d in st.dims])
        foot = [nbytes * float(np.prod(np.abs(acc.A) @ span + 1)) for acc, nbytes, _, _ in tensors]
        if best is not None and 2 * sum(foot) > capacity:
            continue  # the all-ones blocking is always evaluated first, as the fallback
        first = sum(f for f, (_, _, _, is_out) in zip(foot, tensors) if not is_out)
        for order in orders:
            outer = [(d, -(-trips[d] // blk[d])) for d in order]
            traffic = sum(f * _reloads(outer, rel) for f, (_, _, rel, is_out) in zip(foot, tensors)
                          if rel or not is_out)
            key = (max(compute, int(np.ceil(traffic / bpc))), int(traffic), int(first))
            if best is None or key < best_key:
                best, best_key = Blocking(blk, tuple(order), int(traffic), int(first),
                                          int(np.ceil(first / bpc)) + key[0]), key
    return best


def mode_cycles(plan) -> int:
    c = mode_counts(plan)
    return c.load_lines + c.drain_lines + c.passes * (c.phase_cycles + START_OVERHEAD) + FINISH_OVERHEAD


def mode_system_cycles(plan, dram_gbps: float = 16.0, clock_ghz: float = 1.0,
                       scratchpad_kib: float = SCRATCHPAD_KIB) -> int:
    return dram_blocking(plan, dram_gbps, clock_ghz, scratchpad_kib).system_cycles


def estimate(design, dram_gbps: float = 16.0, clock_ghz: float = 1.0, scratchpad_kib: float = SCRATCHPAD_KIB) -> dict:
    """Cycles (RTL-exact and system-level), utilisation, traffic and energy of the scheduled design."""
    arch = design.arch
    nfu = arch.rows * arch.cols
    bytes_per_cycle = dram_gbps / clock_ghz
    rtl = system = 0
    ops = 0
    energy = dict.fromkeys(("mac", "registers", "sram", "dram", "idle"), 0.0)
    dram_bytes = sram_bytes = 0
    widths = (design.hw_workload or design.workload).widths
    macs = design.workload.macs
    group_of = {s: g for g in (design.groups or [[s] for s in range(len(design.stages))]) for s in g}
    resident = None
    for s, stage in enumerate(design.stages):
        plan = design.modes[design.choice[s]]
        group = group_of[s]
        others = {sp.index for t in group if t != s for sp in design.modes[design.choice[t]].slots}
        lead = s == group[0]
        c = mode_counts(plan, acc_width=arch.acc_width, shared_slots=others, drains=lead)
        rtl += c.load_lines + c.drain_lines + c.passes * (c.phase_cycles + START_OVERHEAD) + (FINISH_OVERHEAD if lead else 0)
        blocking = dram_blocking(plan, dram_gbps, clock_ghz, scratchpad_kib, arch.acc_width, None if lead else resident)
        resident = blocking if lead else resident
        system += blocking.system_cycles if lead else blocking.system_cycles - int(np.ceil(blocking.first_load_bytes / bytes_per_cycle))
        ops += stage.macs
        bits = [stage.lane_width if stage.lanes > 1 else widths[a.tensor] for a in stage.inputs[:2]]
        wa, wb = bits if len(bits) == 2 else (bits[0], 8)
        energy["mac"] += stage.macs * stage.lanes * (ENERGY_PJ["mul_int8"] * wa * wb / 64 + ENERGY_PJ["add_int32"])
        busy_fu_cycles = c.passes * c.phase_cycles * nfu
        energy["idle"] += max(busy_fu_cycles - stage.macs, 0) * ENERGY_PJ["fu_idle_cycle"]
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
        "utilisation": ops / (system * nfu) if system else 0.0,  # FU-cycles spent multiplying
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
