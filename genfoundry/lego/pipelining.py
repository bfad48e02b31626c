"""Delay matching: place pipeline registers so every reconvergent path is balanced.

Each primitive v has a latency L(v) and gets a schedule offset r(v): it handles logical time t in
physical cycle t + r(v). An edge u -> v with logical delay dt (a reuse FIFO of depth dt, mandatory)
needs w(e) = r(v) - r(u) - L(v) + dt registers, at least max(dt - L(v), 0) (the FIFO, of which v's own
output register is one stage). Every source drives one shared shift
register tapped by its consumers, so u costs width(u) * max_e w(e) register bits (the fan-out model
of Leiserson & Saxe). The LP minimises the total, sum_u width(u) * m(u) with m(u) >= w(e): difference
constraints, solved with HiGHS; its optimum is integral (network-flow dual) and we check that.
`naive_balance` is the as-soon-as-possible schedule: each join waits for its latest input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np



@dataclass
class Node:
    latency: int
    width: int


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    dt: int = 0  # logical delay (reuse FIFO depth); these registers are mandatory


@dataclass
class PrimGraph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    source: str = "cnt"

    def add(self, name: str, latency: int, width: int) -> str:
        self.nodes[name] = Node(latency, width)
        return name

    def connect(self, src: str, dst: str, dt: int = 0) -> None:
        self.edges.append(Edge(src, dst, dt))


def min_depth(g: PrimGraph, e: Edge) -> int:
    """Registers a reuse link must keep: its FIFO depth, less the destination's own register stage."""
    return max(e.dt - g.nodes[e.dst].latency, 0)


def tap(g: PrimGraph, r: dict[str, int], e: Edge) -> int:
    return r[e.dst] - r[e.src] - g.nodes[e.dst].latency + e.dt


def line_depths(g: PrimGraph, r: dict[str, int]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for e in g.edges:
        depth[e.src] = max(depth.get(e.src, 0), tap(g, r, e))
    return depth


def register_bits(g: PrimGraph, r: dict[str, int]) -> tuple[int, int]:
    """(total delay-line bits, inserted bits = total minus the mandatory reuse FIFOs)."""
    depth = line_depths(g, r)
    mandatory: dict[str, int] = {}
    for e in g.edges:
        mandatory[e.src] = max(mandatory.get(e.src, 0), min_depth(g, e))
    total = sum(g.nodes[u].width * d for u, d in depth.items())
    return total, total - sum(g.nodes[u].width * d for u, d in mandatory.items())


def check_schedule(g: PrimGraph, r: dict[str, int]) -> None:
    for e in g.edges:
        if tap(g, r, e) < min_depth(g, e):
            raise AssertionError(f"schedule violates edge {e}: tap {tap(g, r, e)} < {min_depth(g, e)}")


def naive_balance(g: PrimGraph) -> dict[str, int]:
    preds: dict[str, list[Edge]] = {v: [] for v in g.nodes}
    for e in g.edges:
        preds[e.dst].append(e)
    r: dict[str, int] = {}

    def visit(v: str, stack: frozenset = frozenset()) -> int:
        if v in r:
            return r[v]
        if v in stack:
            raise ValueError(f"primitive graph has a cycle through {v}")
        ins = preds[v]
        r[v] = max((visit(e.src, stack | {v}) + g.nodes[v].latency - e.dt + min_depth(g, e) for e in ins), default=0)
        return r[v]

    for v in g.nodes:
        visit(v)
    return r


def lp_delay_match(g: PrimGraph) -> dict[str, int]:
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    names = list(g.nodes)
    idx = {n: i for i, n in enumerate(names)}
    srcs = sorted({e.src for e in g.edges})
    midx = {u: len(names) + i for i, u in enumerate(srcs)}
    nvar = len(names) + len(srcs)
    from scipy.sparse import coo_matrix

    ri, ci, vals, rhs = [], [], [], []
    for e in g.edges:
        L = g.nodes[e.dst].latency
        u, v, m = idx[e.src], idx[e.dst], midx[e.src]
        k = len(rhs)
        # w >= min_depth  <=>  r_u - r_v <= dt - L - min_depth
        ri += [k, k]
        ci += [u, v]
        vals += [1.0, -1.0]
        rhs.append(e.dt - L - min_depth(g, e))
        # m_u >= w  <=>  r_v - r_u - m_u <= L - dt
        ri += [k + 1, k + 1, k + 1]
        ci += [v, u, m]
        vals += [1.0, -1.0, -1.0]
        rhs.append(L - e.dt)
    c = np.zeros(nvar)
    for u in srcs:
        c[midx[u]] = g.nodes[u].width
    # a tiny pull towards early schedules picks the shortest pipeline among equal-cost optima
    for n in names:
        c[idx[n]] += 1e-6
    big = 10 * (len(names) + 10)
    bounds = [(0, 0) if n == g.source else (-big, big) for n in names] + [(0, None)] * len(srcs)
    A = coo_matrix((vals, (ri, ci)), shape=(len(rhs), nvar)).tocsr()
    b = np.array(rhs, dtype=float)
    res = linprog(c, A_ub=A, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"delay-matching LP failed: {res.message}")
    x = res.x
    if np.abs(x - np.round(x)).max() > 1e-6:
        lo = np.array([bd[0] for bd in bounds], dtype=float)
        hi = np.array([np.inf if bd[1] is None else bd[1] for bd in bounds], dtype=float)
        res = milp(c, constraints=LinearConstraint(A, -np.inf, b), bounds=Bounds(lo, hi),
                   integrality=np.ones(nvar))
        x = res.x
    r = {n: int(round(x[idx[n]])) for n in names}
    # normalise so the earliest primitive sits at offset 0 relative to the source
    check_schedule(g, r)
    return r
