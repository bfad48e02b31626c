"""Architecture graph of one dataflow (a *mode*) and its lowering to a primitive graph.

`plan_mode` runs the front end for one (stage, dataflow) pair on one array: reuse analysis,
interconnect trees, memory banking and address generators, the logical time window of the compute
phase, and the primitive graph (counter, address generators, memory read ports, operand wires,
valid logic, multipliers, accumulators, write ports) that delay matching schedules.

Microarchitecture of a pass (one tile): PRE (stationary operands are read bank by bank and captured
by their FUs), COMP (a time counter drives address generators; operands stream from memory or from
neighbours through reuse links; each FU multiplies when its iteration is inside the tile and adds
into its accumulator, or into the partial sum passed along the reduction tree, whose ends write back
with read-modify-write), FLUSH (stationary accumulators are added into the output banks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import interconnect, memory, pipelining, reuse
from .interconnect import FU, MEMORY, Tree
from .ir import Access, Mapping, Stage
from .memory import Layout, Port
from .pipelining import PrimGraph


@dataclass
class SlotPlan:
    index: int
    access: Access
    width: int
    stationary: bool
    layout: Layout
    tree: Tree | None
    ports: dict[FU, Port]  # memory-fed FUs (stream) or every active FU (stationary)
    bank_port: dict[FU, tuple[int, int]] = field(default_factory=dict)  # FU -> (bank, read port)
    preload: dict[int, list[tuple[int, list[FU]]]] = field(default_factory=dict)

    @property
    def tensor(self) -> str:
        return self.access.tensor


@dataclass
class OutputPlan:
    access: Access
    layout: Layout
    stationary: bool
    tree: Tree | None
    writers: dict[FU, Port] = field(default_factory=dict)
    bank_port: dict[FU, tuple[int, int]] = field(default_factory=dict)
    windows: dict[FU, tuple[int, int]] = field(default_factory=dict)
    flush: dict[int, list[tuple[int, FU]]] = field(default_factory=dict)

    @property
    def tensor(self) -> str:
        return self.access.tensor


@dataclass
class ModePlan:
    index: int
    name: str
    mapping: Mapping
    active: dict[FU, tuple[int, int]]
    slots: list[SlotPlan]
    output: OutputPlan
    t0: int
    t_end: int
    graph: PrimGraph
    r: dict[str, int] = field(default_factory=dict)
    phases: tuple[int, int, int] = (0, 0, 0)  # PRE, COMP, FLUSH lengths in cycles

    @property
    def stage(self) -> Stage:
        return self.mapping.stage

    def slot(self, physical: int) -> SlotPlan | None:
        """The input this mode feeds through physical operand slot `physical` (None if unused)."""
        return next((sp for sp in self.slots if sp.index == physical), None)

    def taps(self) -> dict[tuple[str, str], int]:
        return {(e.src, e.dst): pipelining.tap(self.graph, self.r, e) for e in self.graph.edges}


def _path_delays(tree: Tree, fus: list[FU]) -> dict[FU, int]:
    """Total link delay from the memory root to each FU (inputs) / from each FU to memory (outputs)."""
    out: dict[FU, int] = {}

    def delay(s: FU) -> int:
        if s not in out:
            p = tree.parent[s]
            out[s] = 0 if p == MEMORY else delay(p[0]) + p[1]
        return out[s]

    for s in fus:
        delay(s)
    return out


def _root_of(tree: Tree, s: FU) -> FU:
    while tree.parent[s] != MEMORY:
        s = tree.parent[s][0]
    return s


def _bits(n: int) -> int:
    return max(1, int(n - 1).bit_length()) if n > 1 else 1


def plan_mode(index: int, mapping: Mapping, widths: dict[str, int], acc_width: int,
              prefer: dict[str, set] | None = None, slot_order: tuple[int, ...] | None = None,
              reduction: str = "tree") -> ModePlan:
    """slot_order[j]: the physical operand slot that feeds the stage's j-th input (default j);
    reduction: "tree" (balanced adder trees for spatial reductions) or "chain" (neighbour to neighbour)."""
    prefer = prefer or {}
    slot_order = slot_order or tuple(range(len(mapping.stage.inputs)))
    stage = mapping.stage
    fus_all = [(i, j) for i in range(mapping.rows) for j in range(mapping.cols)]
    active = {s: w for s in fus_all if (w := mapping.valid_window(s)) is not None}
    fus = sorted(active)
    max_banks = max(mapping.rows, mapping.cols)

    slots: list[SlotPlan] = []
    for pos, acc in enumerate(stage.inputs):
        j = slot_order[pos]
        ru = reuse.analyse(mapping, acc)
        coef, cmin, ext = memory.coordinates(mapping, acc)
        if ru.stationary:
            ports = {s: memory.port(mapping, coef, cmin, s) for s in fus}
            layout = memory.bank_sequential(coef, cmin, ext, list(ports.values()), max_banks, share=True)
            sp = SlotPlan(j, acc, widths[acc.tensor], True, layout, None, ports)
            sp.preload = memory.sequential_schedule(layout, list(ports.values()))
            sp.bank_port = {s: (p.bank(layout), 0) for s, p in ports.items()}
        else:
            tree = interconnect.build_tree(ru, fus, is_output=False, prefer=prefer.get(f"in{j}"))
            ports = {s: memory.port(mapping, coef, cmin, s) for s in tree.roots()}
            layout = memory.bank_streaming(coef, cmin, ext, list(ports.values()))
            sp = SlotPlan(j, acc, widths[acc.tensor], False, layout, tree, ports)
            used: dict[int, int] = {}
            for s, p in sorted(ports.items()):
                b = p.bank(layout)
                sp.bank_port[s] = (b, used.get(b, 0))
                used[b] = used.get(b, 0) + 1
        slots.append(sp)

    oacc = stage.output
    ru = reuse.analyse(mapping, oacc)
    coef, cmin, ext = memory.coordinates(mapping, oacc)
    if ru.stationary:
        ports = {s: memory.port(mapping, coef, cmin, s) for s in fus}
        layout = memory.bank_sequential(coef, cmin, ext, list(ports.values()), max_banks, share=False)
        out = OutputPlan(oacc, layout, True, None)
        for s, p in ports.items():
            b = p.bank(layout)
            out.flush.setdefault(b, []).append((p.offset_affine(layout)[1], s))
            out.writers[s] = p
    else:
        tree = interconnect.build_tree(ru, fus, is_output=True, prefer=prefer.get("out"),
                                       balanced=reduction == "tree")
        ports = {s: memory.port(mapping, coef, cmin, s) for s in tree.roots()}
        layout = memory.bank_streaming(coef, cmin, ext, list(ports.values()))
        out = OutputPlan(oacc, layout, False, tree, writers=ports)
        used = {}
        for s, p in sorted(ports.items()):
            b = p.bank(layout)
            out.bank_port[s] = (b, used.get(b, 0))
            used[b] = used.get(b, 0) + 1
        down = _path_delays(tree, fus)
        for s in fus:
            w = _root_of(tree, s)
            lo, hi = active[s][0] + down[s], active[s][1] + down[s]
            cur = out.windows.get(w)
            out.windows[w] = (lo, hi) if cur is None else (min(cur[0], lo), max(cur[1], hi))

    # logical time window of the compute phase: every value a valid FU needs is produced in-phase
    t0 = min(lo for lo, _ in active.values())
    t_end = max(hi for _, hi in active.values())
    for sp in slots:
        if sp.tree is not None:
            d = _path_delays(sp.tree, fus)
            t0 = min(t0, min(active[s][0] - d[s] for s in fus))
    if out.tree is not None:
        down = _path_delays(out.tree, fus)
        for s in fus:
            w = _root_of(out.tree, s)
            t0 = min(t0, out.windows[w][0] - down[s])
        t_end = max(t_end, max(hi for _, hi in out.windows.values()))

    graph = _lower(mapping, slots, out, active, t_end - t0 + 64, acc_width)
    return ModePlan(index, f"{stage.name}:{mapping.dataflow.name}", mapping, active, slots, out, t0, t_end, graph)


def _lower(mapping: Mapping, slots: list[SlotPlan], out: OutputPlan, active: dict[FU, tuple[int, int]],
           horizon: int, acc_width: int) -> PrimGraph:
    g = PrimGraph()
    cbits = _bits(horizon)
    g.add("cnt", 0, cbits + 1)
    for sp in slots:
        if sp.stationary:
            continue
        abits = _bits(sp.layout.depth)
        for s, (b, k) in sp.bank_port.items():
            ag, rd = f"ag{sp.index}_{b}_{k}", f"rd{sp.index}_{b}_{k}"
            g.add(ag, 0, abits + 1)
            g.add(rd, 1, sp.width)
            g.connect("cnt", ag)
            g.connect(ag, rd)
        for s in active:
            g.add(f"op{sp.index}_{s[0]}_{s[1]}", 0, sp.width)
        for s in active:
            p = sp.tree.parent[s]
            dst = f"op{sp.index}_{s[0]}_{s[1]}"
            if p == MEMORY:
                b, k = sp.bank_port[s]
                g.connect(f"rd{sp.index}_{b}_{k}", dst)
            else:
                g.connect(f"op{sp.index}_{p[0][0]}_{p[0][1]}", dst, p[1])
    for s in active:
        v, m, a = f"val_{s[0]}_{s[1]}", f"mul_{s[0]}_{s[1]}", f"acc_{s[0]}_{s[1]}"
        g.add(v, 0, 1)
        g.add(m, 1, acc_width)
        g.add(a, 1, acc_width)
        g.connect("cnt", v)
        g.connect(v, m)
        for sp in slots:
            if not sp.stationary:
                g.connect(f"op{sp.index}_{s[0]}_{s[1]}", m)
        g.connect(m, a)
    if out.tree is not None:
        abits = _bits(out.layout.depth)
        for c, p in out.tree.parent.items():
            if p != MEMORY:
                g.connect(f"acc_{c[0]}_{c[1]}", f"acc_{p[0][0]}_{p[0][1]}", p[1])
        for s, (b, k) in out.bank_port.items():
            agw, wr = f"agw_{b}_{k}", f"wr_{b}_{k}"
            g.add(agw, 0, abits + 1)
            g.add(wr, 0, 0)
            g.connect("cnt", agw)
            g.connect(agw, wr)
            g.connect(f"acc_{s[0]}_{s[1]}", wr)
    return g


def schedule_mode(plan: ModePlan, method: str = "lp", r: dict[str, int] | None = None) -> None:
    """Delay-match the mode's primitive graph (or take schedule `r`) and derive its phase lengths."""
    if r is not None:
        plan.r = r
    elif method == "lp":
        plan.r = pipelining.lp_delay_match(plan.graph)
    elif method == "naive":
        plan.r = pipelining.naive_balance(plan.graph)
    else:
        raise ValueError(f"unknown pipelining method {method!r}; expected 'lp' or 'naive'")
    span = plan.t_end - plan.t0
    if plan.output.stationary:
        comp = span + max(plan.r[f"acc_{s[0]}_{s[1]}"] for s in plan.active)
        flush = max(len(v) for v in plan.output.flush.values())
    else:
        comp = span + 1 + max(plan.r[n] for n in plan.graph.nodes if n.startswith("wr_"))
        flush = 0
    # one distinct address per bank per cycle, plus one cycle of read latency
    pre = max((max(len(v) for v in sp.preload.values()) + 1 for sp in plan.slots if sp.stationary), default=0)
    plan.phases = (pre, comp, flush)


def mux_edges(plan: ModePlan) -> dict[str, set]:
    """The link edges of this mode, keyed like `plan_mode`'s `prefer` argument (for fusion)."""
    out: dict[str, set] = {}
    for sp in plan.slots:
        if sp.tree is not None:
            out[f"in{sp.index}"] = sp.tree.edges()
    if plan.output.tree is not None:
        out["out"] = plan.output.tree.edges()
    return out
