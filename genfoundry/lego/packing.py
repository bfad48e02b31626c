"""Sub-word packing and byte slicing: every stage runs on FUs with one `mac_bits`-bit multiplier.

An FU's multiplier is sized for `mac_bits`-bit operands (8 by default, the int8 MAC of the baseline).

Narrow operands (packing). A w x w-bit product needs about (w / mac_bits)^2 of that multiplier's
partial products, so a stage whose operands are at most mac_bits / 2 bits computes
L = (mac_bits // w)^2 products per FU per cycle (four int4 x int4 products in one int8 multiplier, as
Bit Fusion splits its fusion units): a dot product over L consecutive values of the reduction index.
The stage is rewritten over packed words: its reduction index takes ceil(K / L) values, each input
tensor's reduction axis holds L lanes per word (lane l in bits [l*w, (l+1)*w)), and the stage records
`lanes` and `lane_width` so the FU emits the lane dot product.

Wide operands (slicing). An operand wider than mac_bits is cut into n = ceil(w / mac_bits) slices,
x = sum_i 2^(mac_bits*i) x_i, the lower slices unsigned and the top one signed (exact in two's
complement), and the stage becomes one stage per pair of slices, whose products are shifted left
by mac_bits * (i + j) before they accumulate into the same output: an int16 x int16 GEMM is four
int8 GEMMs. The FU multiplier is then mac_bits + 1 bits wide (one extra bit zero-extends an unsigned
slice), and the slices cost cycles, as a composable multiplier would.

The logical workload (what users pass in and get back, and what `reference` computes) is unchanged;
`pack_inputs` turns the user's tensors into the packed or sliced ones the buffers hold. The SVDQuant
operator is the case this exists for: int4 X W on lanes, the int16 rank-R branch on byte slices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .ir import Access, Stage, Workload


@dataclass(frozen=True)
class PackedTensor:
    """Lanes of one axis packed into words (the tensor keeps its name)."""

    axis: int
    lanes: int
    lane_width: int


@dataclass(frozen=True)
class SlicedTensor:
    """Slice `index` (bits [index*bits, (index+1)*bits)) of tensor `source`; the top slice is signed."""

    source: str
    index: int
    bits: int
    top: bool


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


def _pack_stage(st: Stage, wl: Workload, mac_bits: int, readers: dict[str, int], shapes: dict, widths: dict,
                derived: dict) -> list[Stage] | None:
    lanes = stage_lanes(st, wl.widths, mac_bits)
    k = st.dim_index(st.roles[2])
    axes = [_packed_axis(st, a) for a in st.inputs]
    if not (lanes > 1 and all(ax is not None for ax in axes) and not st.output.A[:, k].any()
            and all(readers[a.tensor] == 1 and a.tensor in wl.inputs for a in st.inputs)):
        return None
    w = max(wl.widths[a.tensor] for a in st.inputs)
    bounds = list(st.bounds)
    bounds[k] = -(-bounds[k] // lanes)
    for acc, ax in zip(st.inputs, axes):
        derived[acc.tensor] = PackedTensor(ax, lanes, w)
        shape = list(shapes[acc.tensor])
        shape[ax] = -(-shape[ax] // lanes)
        shapes[acc.tensor] = tuple(shape)
        widths[acc.tensor] = lanes * w
    return [replace(st, bounds=tuple(bounds), lanes=lanes, lane_width=w)]


def _slice_stage(st: Stage, wl: Workload, mac_bits: int, shapes: dict, widths: dict, derived: dict) -> list[Stage] | None:
    ws = [wl.widths[a.tensor] for a in st.inputs]
    if len(st.inputs) != 2 or max(ws) <= mac_bits or not all(a.tensor in wl.inputs for a in st.inputs):
        return None
    slices = []
    for acc, w in zip(st.inputs, ws):
        n = -(-w // mac_bits)
        names = []
        for i in range(n):
            name = acc.tensor if n == 1 else f"{acc.tensor}_b{i}"
            if n > 1:
                top = i == n - 1
                derived[name] = SlicedTensor(acc.tensor, i, mac_bits, top)
                shapes[name] = shapes[acc.tensor]
                widths[name] = (w - mac_bits * i) if top else mac_bits
            names.append((name, i, n > 1 and i < n - 1))
        slices.append(names)
    out = []
    for (a, i, ua), (b, j, ub) in ((x, y) for x in slices[0] for y in slices[1]):
        inputs = (replace(st.inputs[0], tensor=a), replace(st.inputs[1], tensor=b))
        out.append(replace(st, name=f"{st.name}.s{i}{j}", inputs=inputs, shift=mac_bits * (i + j), unsigned=(ua, ub)))
    return out


def pack_workload(wl: Workload, mac_bits: int = 8) -> tuple[Workload, dict[str, PackedTensor | SlicedTensor]]:
    """The workload the hardware runs, and how each derived input tensor comes from the user's.

    Packed: a stage with two inputs of at most mac_bits / 2 bits, both indexed on one axis by exactly
    the reduction index, that no other stage reads, and an output that does not depend on that index.
    Sliced: a stage with two user-provided inputs, one of them wider than mac_bits.
    """
    readers: dict[str, int] = {}
    for st in wl.stages:
        for acc in st.inputs:
            readers[acc.tensor] = readers.get(acc.tensor, 0) + 1
    stages: list[Stage] = []
    derived: dict[str, PackedTensor | SlicedTensor] = {}
    shapes, widths = dict(wl.shapes), dict(wl.widths)
    for st in wl.stages:
        new = (_pack_stage(st, wl, mac_bits, readers, shapes, widths, derived)
               or _slice_stage(st, wl, mac_bits, shapes, widths, derived))
        stages.extend(new or [st])
    if not derived:
        return wl, {}
    sources = {p.source for p in derived.values() if isinstance(p, SlicedTensor)}
    used = {a.tensor for st in stages for a in st.inputs}
    inputs = tuple(n for n in wl.inputs if n not in sources or n in used) + tuple(
        n for n, p in derived.items() if isinstance(p, SlicedTensor))
    return replace(wl, stages=tuple(stages), shapes=shapes, widths=widths, inputs=inputs), derived


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


def slice_tensor(x: np.ndarray, p: SlicedTensor) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64) >> (p.index * p.bits)  # arithmetic shift: the top slice keeps the sign
    return x if p.top else x & ((1 << p.bits) - 1)


def pack_inputs(tensors: dict[str, np.ndarray], derived: dict[str, PackedTensor | SlicedTensor]) -> dict[str, np.ndarray]:
    out = dict(tensors)
    for name, p in derived.items():
        out[name] = pack_tensor(tensors[name], p) if isinstance(p, PackedTensor) else slice_tensor(tensors[p.source], p)
    return out
