"""Sub-word packing: low-precision stages run several multiplies per FU per cycle.

An FU's multiplier is sized for `mac_bits`-bit operands (8 by default, the int8 MAC of the baseline).
A w-bit x w-bit multiplier needs about (w / mac_bits)^2 of that array's partial products, so an FU whose
stage reads only operands of w <= mac_bits / 2 bits computes L = (mac_bits // w)^2 products per cycle
in the same partial-product budget (four int4 x int4 products in one int8 multiplier, as Bit Fusion
splits its fusion units): a dot product over L consecutive values of the reduction index.

The packing pass rewrites such a stage over packed words: its reduction index k takes ceil(K / L)
values, each input tensor's k axis is packed L lanes to a word (lane l in bits [l*w, (l+1)*w)), and the
stage records `lanes` and `lane_width` so the FU emits the lane dot product. The logical workload
(what users pass in and get back, and what `reference` computes) is unchanged; `pack_inputs` turns the
user's tensors into the packed ones the buffers hold. The SVDQuant operator's W4A4 stage is the case
this exists for: its 16-bit low-rank stage keeps one product per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .ir import Access, Stage, Workload


@dataclass(frozen=True)
class PackedTensor:
    axis: int
    lanes: int
    lane_width: int


def stage_lanes(stage: Stage, widths: dict[str, int], mac_bits: int) -> int:
    """Products per FU per cycle for this stage (1 = no packing)."""
    w = max(widths[a.tensor] for a in stage.inputs)
    if len(stage.inputs) != 2 or 2 * w > mac_bits:
        return 1
    return (mac_bits // w) ** 2


def _packed_axis(stage: Stage, acc: Access) -> int | None:
    """The tensor axis indexed by exactly the reduction index (coefficient 1, no offset), if any."""
    k = stage.dim_index(stage.roles[2])
    A, b = acc.A, acc.b
    for axis in range(A.shape[0]):
        unit = np.zeros(A.shape[1], dtype=np.int64)
        unit[k] = 1
        if np.array_equal(A[axis], unit) and b[axis] == 0 and not A[[i for i in range(A.shape[0]) if i != axis], k].any():
            return axis
    return None


def pack_workload(wl: Workload, mac_bits: int = 8) -> tuple[Workload, dict[str, PackedTensor]]:
    """The workload the hardware runs, and how each packed input tensor was packed.

    A stage is packed when it has two inputs of at most mac_bits / 2 bits, both indexed on one axis by
    exactly the reduction index, that no other stage reads, and its output does not depend on that index.
    """
    readers: dict[str, int] = {}
    for st in wl.stages:
        for acc in st.inputs:
            readers[acc.tensor] = readers.get(acc.tensor, 0) + 1
    stages, packed = [], {}
    shapes, widths = dict(wl.shapes), dict(wl.widths)
    for st in wl.stages:
        lanes = stage_lanes(st, wl.widths, mac_bits)
        k = st.dim_index(st.roles[2])
        axes = [_packed_axis(st, a) for a in st.inputs]
        ok = (lanes > 1 and all(ax is not None for ax in axes) and not st.output.A[:, k].any()
              and all(readers[a.tensor] == 1 and a.tensor in wl.inputs for a in st.inputs))
        if not ok:
            stages.append(st)
            continue
        w = max(wl.widths[a.tensor] for a in st.inputs)
        bounds = list(st.bounds)
        bounds[k] = -(-bounds[k] // lanes)
        stages.append(replace(st, bounds=tuple(bounds), lanes=lanes, lane_width=w))
        for acc, ax in zip(st.inputs, axes):
            packed[acc.tensor] = PackedTensor(ax, lanes, w)
            shape = list(shapes[acc.tensor])
            shape[ax] = -(-shape[ax] // lanes)
            shapes[acc.tensor] = tuple(shape)
            widths[acc.tensor] = lanes * w
    if not packed:
        return wl, {}
    return replace(wl, stages=tuple(stages), shapes=shapes, widths=widths), packed


def pack_tensor(x: np.ndarray, p: PackedTensor) -> np.ndarray:
    """Lanes of `p.axis` packed into words (zero-padded to a multiple of p.lanes), as non-negative ints."""
    x = np.moveaxis(np.asarray(x, dtype=np.int64), p.axis, -1)
    pad = (-x.shape[-1]) % p.lanes
    if pad:
        x = np.concatenate([x, np.zeros((*x.shape[:-1], pad), dtype=np.int64)], axis=-1)
    x = x.reshape(*x.shape[:-1], -1, p.lanes) & ((1 << p.lane_width) - 1)
    words = np.zeros(x.shape[:-1], dtype=np.int64)
    for lane in range(p.lanes):
        words |= x[..., lane] << (lane * p.lane_width)
    return np.moveaxis(words, -1, p.axis)


def pack_inputs(tensors: dict[str, np.ndarray], packed: dict[str, PackedTensor]) -> dict[str, np.ndarray]:
    return {n: pack_tensor(x, packed[n]) if n in packed else x for n, x in tensors.items()}
