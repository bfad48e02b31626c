"""Dataflow fusion: several (stage, dataflow) modes share one array, buffers and FUs.

Modes are planned one after another; each new mode's arborescences prefer link edges that earlier
modes already built (interconnect.PREFER_DISCOUNT), so fused designs reuse the same reuse chains and
need fewer muxes. The emitter then muxes only where modes disagree on a source (`case (mode)`) and
trims every mux whose inputs agree to a wire, and every primitive no mode uses is never emitted.
"""

from __future__ import annotations

from itertools import permutations

from .graph import ModePlan, mux_edges, plan_mode
from .interconnect import MEMORY
from .ir import Mapping


def _overlap(plan: ModePlan, prefer: dict[str, set], stationary: dict[int, set]) -> int:
    """How much of this mode's interconnect earlier modes already built (higher: fewer muxes)."""
    score = 0
    for key, edges in mux_edges(plan).items():
        score += len(edges & prefer.get(key, set()))
    for sp in plan.slots:
        score += len(plan.active) * (sp.stationary in stationary.get(sp.index, set()))
    return score


def plan_fused(mappings: list[Mapping], widths: dict[str, int], acc_width: int, prefer_chains: bool = True,
               reduction: str = "tree") -> list[ModePlan]:
    """Plan every mode; with prefer_chains each mode also picks the assignment of its inputs to
    physical operand slots that shares the most links and stationary registers with earlier modes."""
    modes: list[ModePlan] = []
    prefer: dict[str, set] = {}
    stationary: dict[int, set] = {}
    for i, mp in enumerate(mappings):
        n = len(mp.stage.inputs)
        orders = list(permutations(range(n))) if prefer_chains and modes and n <= 3 else [tuple(range(n))]
        candidates = [plan_mode(i, mp, widths, acc_width, prefer=prefer if prefer_chains else None, slot_order=o,
                                reduction=reduction) for o in orders]
        plan = max(candidates, key=lambda p: _overlap(p, prefer, stationary))
        modes.append(plan)
        for sp in plan.slots:
            stationary.setdefault(sp.index, set()).add(sp.stationary)
        for key, edges in mux_edges(plan).items():
            prefer.setdefault(key, set()).update(edges)
    return modes


def count_muxes(modes: list[ModePlan]) -> int:
    """Number of operand / partial-sum inputs whose source differs between modes (each is a mux)."""
    if len(modes) < 2:
        return 0
    fus = sorted({s for m in modes for s in m.active})
    muxes = 0
    nslots = max(len(m.slots) for m in modes)
    for s in fus:
        for j in range(nslots):
            sources = set()
            for m in modes:
                sp = m.slot(j)
                if s not in m.active or sp is None:
                    continue
                if sp.stationary:
                    sources.add(("stationary",))
                else:
                    p = sp.tree.parent[s]
                    sources.add(("mem", sp.bank_port[s]) if p == MEMORY else ("fu",) + tuple(p))
            muxes += len(sources) > 1
        kids = set()
        for m in modes:
            if s not in m.active:
                continue
            if m.output.stationary:
                kids.add(("self",))
            else:
                kids.add(tuple(sorted((c, pa[1]) for c, pa in m.output.tree.parent.items() if pa != MEMORY and pa[0] == s)))
        muxes += len(kids) > 1
    return muxes
