"""Reuse analysis: which (time, space) displacements touch the same tensor element.

FU s1 at t1 and FU s2 at t2 read the same element of a tensor with in-tile access matrix A iff
A F (dt, ds) = 0 (F: the dataflow's f_TS->I). We enumerate small integer solutions:

- dt = 0, ds != 0  -> direct link (a wire: broadcast of a read, or a combinational reduction)
- dt > 0, ds != 0  -> delay link (a FIFO of depth dt between neighbouring FUs: systolic)
- ds = 0           -> the element stays in the FU (stationary)
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from .ir import Access, Mapping


@dataclass(frozen=True)
class Reuse:
    tensor: str
    stationary: bool  # the element an FU touches does not change with time
    links: tuple[tuple[int, int, int], ...]  # (dt, ds0, ds1): FU s+ds at t+dt touches what FU s did at t


def analyse(mapping: Mapping, access: Access, max_delay: int = 4, max_hop: int = 1) -> Reuse:
    """Integer null vectors of A F with |ds| <= max_hop and 0 <= dt <= max_delay."""
    AF = mapping.col(access) @ mapping.F
    stationary = bool((AF[:, 0] == 0).all())
    links = []
    for dt, d0, d1 in product(range(0, max_delay + 1), range(-max_hop, max_hop + 1), range(-max_hop, max_hop + 1)):
        if d0 == 0 and d1 == 0:
            continue
        if (AF @ np.array([dt, d0, d1]) == 0).all():
            links.append((dt, d0, d1))
    return Reuse(access.tensor, stationary, tuple(links))
