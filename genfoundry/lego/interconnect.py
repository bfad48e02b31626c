"""Interconnect synthesis: one minimum spanning arborescence per tensor (Chu-Liu/Edmonds).

Candidate edges come from the reuse links; memory is the root. For an input tensor an edge p -> c
means FU c takes the operand FU p had `dt` cycles earlier. For the output tensor the edge direction
is the consumer: p -> c means FU c sends its partial sum to FU p, which adds it `dt` cycles later;
children of memory are the FUs that write results back (the ends of the reduction chains).
Cost: a memory port costs MEMORY_COST, a link costs its FIFO depth plus a small wire-length term.
Edges named in `prefer` (already built for another dataflow in a fused design) are discounted so that
fusion reuses existing chains and needs fewer muxes.

Reduction trees: partial sums joined through direct (dt = 0) links all belong to one output element at
one time, so any tree over them adds the same terms. The arborescence links neighbours into chains (N
registered adders in a row: N cycles of latency that the pipelining LP must match with registers on
every operand path); `balance_reductions` rewires each such group into a binary tree of depth
ceil(log2 N), keeping the FU that writes memory (or passes on through a delay link) as its root.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .reuse import Reuse

FU = tuple[int, int]
MEMORY = "mem"
MEMORY_COST = 1000.0
PREFER_DISCOUNT = 0.5


@dataclass(frozen=True)
class Tree:
    """parent[c] is MEMORY or (fu, dt); for outputs 'parent' is the FU that consumes c's partial sum."""

    tensor: str
    is_output: bool
    parent: dict[FU, object]

    def children(self) -> dict[FU, list[tuple[FU, int]]]:
        out: dict[FU, list[tuple[FU, int]]] = {}
        for c, p in self.parent.items():
            if p != MEMORY:
                fu, dt = p
                out.setdefault(fu, []).append((c, dt))
        return out

    def roots(self) -> list[FU]:
        return sorted(c for c, p in self.parent.items() if p == MEMORY)

    def edges(self) -> set[tuple]:
        return {(p[0], c, p[1]) for c, p in self.parent.items() if p != MEMORY}


def build_tree(reuse: Reuse, fus: list[FU], is_output: bool, prefer: set[tuple] | None = None,
               balanced: bool = True) -> Tree:
    """The cheapest tree over the reuse links; with `balanced`, output reductions become binary trees."""
    import networkx as nx

    prefer = prefer or set()
    active = set(fus)
    g = nx.DiGraph()
    g.add_node(MEMORY)
    for s in fus:
        g.add_edge(MEMORY, s, weight=MEMORY_COST, dt=0)
    if not reuse.stationary:
        for s in fus:
            for dt, d0, d1 in reuse.links:
                if dt == 0 and (d0, d1) < (0, 0):
                    # a direct link works both ways (if ds is a reuse vector at dt = 0, so is -ds); one
                    # direction keeps zero-delay 2-cycles out of the graph, which Edmonds contracts slowly
                    continue
                if is_output:
                    # s at t contributes to the element s+ds handles at t+dt: s sends to consumer s+ds
                    src, dst = (s[0] + d0, s[1] + d1), s
                else:
                    src, dst = (s[0] - d0, s[1] - d1), s
                if src not in active or src == dst:
                    continue
                cost = dt + 0.01 * (abs(d0) + abs(d1))
                if (src, dst, dt) in prefer:
                    cost *= PREFER_DISCOUNT
                if g.has_edge(src, dst) and g[src][dst]["weight"] <= cost:
                    continue
                g.add_edge(src, dst, weight=cost, dt=dt)
    arb = nx.minimum_spanning_arborescence(g, attr="weight", preserve_attrs=True)
    parent: dict[FU, object] = {}
    for u, v, data in arb.edges(data=True):
        parent[v] = MEMORY if u == MEMORY else (u, int(g[u][v]["dt"]))
    tree = Tree(reuse.tensor, is_output, parent)
    return balance_reductions(tree) if is_output and balanced else tree


def balance_reductions(tree: Tree) -> Tree:
    """Rewire every group of FUs joined by dt = 0 partial-sum links into a binary (heap-shaped) tree."""
    zero_kids: dict[FU, list[FU]] = {}
    for c, p in tree.parent.items():
        if p != MEMORY and p[1] == 0:
            zero_kids.setdefault(p[0], []).append(c)
    parent = dict(tree.parent)
    for root in sorted(zero_kids):
        p = tree.parent[root]
        if p != MEMORY and p[1] == 0:
            continue  # not the top of its group
        order, queue = [root], deque([root])  # breadth-first: members nearest the root come first
        while queue:
            for c in sorted(zero_kids.get(queue.popleft(), [])):
                order.append(c)
                queue.append(c)
        for i in range(1, len(order)):
            parent[order[i]] = (order[(i - 1) // 2], 0)
    return Tree(tree.tensor, tree.is_output, parent)


def depth(tree: Tree) -> int:
    """Most links between an FU and memory (the reduction depth for an output tree)."""
    memo: dict[FU, int] = {}

    def hops(s: FU) -> int:
        if s not in memo:
            p = tree.parent[s]
            memo[s] = 0 if p == MEMORY else 1 + hops(p[0])
        return memo[s]

    return max((hops(s) for s in tree.parent), default=0)
