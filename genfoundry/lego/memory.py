"""Memory synthesis: on-chip buffer layout, banking and address generators per tensor.

A tile of a tensor is stored by its in-tile coordinates (the rows of the access matrix that depend on
in-tile loop indices), relative to their minimum over the tile. Banking picks coordinates that are
constant per memory port (independent of time) and tell all concurrently active ports apart, so each
bank has one port per cycle; the bank id is their mixed-radix value, the in-bank offset the
mixed-radix value of the remaining coordinates. When no such choice exists the buffer keeps one bank
with several ports (reported as `multiport`).

An address generator is the affine function of the time counter c that a port uses:
coordinate_k(c) = alpha_k * c + gamma_k, offset(c) = sum_k stride_k * coordinate_k(c).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .ir import Access, Mapping

FU = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    coef: np.ndarray  # ncoord x 3: in-tile access rows
    cmin: np.ndarray
    ext: np.ndarray
    bank_coords: tuple[int, ...]
    multiport: bool

    @property
    def banks(self) -> int:
        return int(np.prod([self.ext[k] for k in self.bank_coords])) if self.bank_coords else 1

    @property
    def offset_coords(self) -> tuple[int, ...]:
        return tuple(k for k in range(len(self.ext)) if k not in self.bank_coords)

    @property
    def depth(self) -> int:
        return int(np.prod([self.ext[k] for k in self.offset_coords])) if self.offset_coords else 1

    def strides(self, coords: tuple[int, ...]) -> dict[int, int]:
        out, acc = {}, 1
        for k in reversed(coords):
            out[k] = acc
            acc *= int(self.ext[k])
        return out

    def locate(self, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bank, offset) of relative coordinates rel (N x ncoord)."""
        bs, os_ = self.strides(self.bank_coords), self.strides(self.offset_coords)
        bank = sum((rel[:, k] * v for k, v in bs.items()), np.zeros(len(rel), dtype=np.int64))
        off = sum((rel[:, k] * v for k, v in os_.items()), np.zeros(len(rel), dtype=np.int64))
        return bank, off

    def unlocate(self, bank: int, off: int) -> np.ndarray:
        rel = np.zeros(len(self.ext), dtype=np.int64)
        for coords, v in ((self.bank_coords, bank), (self.offset_coords, off)):
            for k in reversed(coords):
                rel[k] = v % int(self.ext[k])
                v //= int(self.ext[k])
        return rel


@dataclass(frozen=True)
class Port:
    """Affine address generator of one FU's memory port: rel_coord_k(t) = alpha_k t + beta_k."""

    fu: FU
    alpha: np.ndarray
    beta: np.ndarray

    def bank(self, layout: Layout) -> int:
        return int(layout.locate(self.beta[None, :])[0][0])

    def offset_affine(self, layout: Layout) -> tuple[int, int]:
        """offset(t) = a t + b over the non-bank coordinates."""
        st = layout.strides(layout.offset_coords)
        a = sum(int(self.alpha[k]) * v for k, v in st.items())
        b = sum(int(self.beta[k]) * v for k, v in st.items())
        return a, b


def coordinates(mapping: Mapping, access: Access) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-tile coordinate rows of an access and their minimum and extent over the tile."""
    C = mapping.col(access)
    keep = [i for i in range(C.shape[0]) if C[i].any()]
    coef = C[keep] if keep else np.zeros((0, 3), dtype=np.int64)
    pts = mapping.box_points()
    vals = pts @ coef.T if keep else np.zeros((len(pts), 0), dtype=np.int64)
    cmin = vals.min(axis=0) if keep else np.zeros(0, dtype=np.int64)
    ext = vals.max(axis=0) - cmin + 1 if keep else np.zeros(0, dtype=np.int64)
    return coef, cmin.astype(np.int64), ext.astype(np.int64)


def port(mapping: Mapping, coef: np.ndarray, cmin: np.ndarray, fu: FU) -> Port:
    M = coef @ mapping.F
    alpha = M[:, 0]
    beta = M @ (np.array([0, fu[0], fu[1]]) + mapping.shift) - cmin
    return Port(fu, alpha.astype(np.int64), beta.astype(np.int64))


def bank_streaming(coef: np.ndarray, cmin: np.ndarray, ext: np.ndarray, ports: list[Port]) -> Layout:
    """Bank so that every concurrently active port owns one bank (fewest banks that separate them)."""
    n = len(ext)
    const = [k for k in range(n) if all(p.alpha[k] == 0 for p in ports)]
    if len(ports) <= 1:
        return Layout(coef, cmin, ext, (), False)
    best = None
    for size in range(1, len(const) + 1):
        for subset in combinations(const, size):
            keys = {tuple(int(p.beta[k]) for k in subset) for p in ports}
            if len(keys) == len(ports):
                banks = int(np.prod([ext[k] for k in subset]))
                if best is None or banks < best[0]:
                    best = (banks, subset)
        if best is not None:
            break
    if best is None:
        return Layout(coef, cmin, ext, (), True)
    return Layout(coef, cmin, ext, tuple(best[1]), False)


def bank_sequential(coef: np.ndarray, cmin: np.ndarray, ext: np.ndarray, ports: list[Port], max_banks: int,
                    share: bool = True) -> Layout:
    """Bank a buffer whose ports run one after another (preload, flush): spread ports over banks.

    share=True: ports reading the same address are served in the same cycle (a preload broadcast);
    share=False: every port needs its own cycle (a flush that accumulates into the buffer).
    """
    n = len(ext)
    best = ((), max(1, len(ports)))
    for size in range(1, n + 1):
        for subset in combinations(range(n), size):
            banks = int(np.prod([ext[k] for k in subset]))
            if banks > max_banks:
                continue
            per_bank: dict[tuple, list] = {}
            for p in ports:
                key = tuple(int(p.beta[k]) for k in subset)
                per_bank.setdefault(key, []).append(tuple(int(x) for x in p.beta))
            if share:
                per_bank = {k: list(set(v)) for k, v in per_bank.items()}
            slots = max(len(v) for v in per_bank.values()) if per_bank else 0
            if slots < best[1] or (slots == best[1] and len(subset) < len(best[0])):
                best = (subset, slots)
    return Layout(coef, cmin, ext, tuple(best[0]), False)


def sequential_schedule(layout: Layout, ports: list[Port]) -> dict[int, list[tuple[int, list[FU]]]]:
    """bank -> list of (offset, FUs served) in slot order: one distinct address per bank per cycle."""
    sched: dict[int, dict[int, list[FU]]] = {}
    for p in ports:
        b = p.bank(layout)
        off = p.offset_affine(layout)[1]
        sched.setdefault(b, {}).setdefault(off, []).append(p.fu)
    return {b: sorted(v.items()) for b, v in sched.items()}
