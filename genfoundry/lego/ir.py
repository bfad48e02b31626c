"""LEGO intermediate representation: workloads as affine loop nests, dataflows as affine maps.

A *stage* is one tensor contraction written as a perfect loop nest

    for d in dims (each 0 <= d < bound):  OUT[f_out(d)] += IN_0[f_0(d)] * IN_1[f_1(d)] * ...

where every access f_X is affine (an integer matrix times the iteration vector plus a constant): the
f_I->D maps of the LEGO paper. A *workload* is a sequence of stages (later stages may read the output
of earlier ones, e.g. linear attention computes K^T V and then Q (K^T V)).

A *dataflow* is an affine map from three of the stage's loop indices to (time, space0, space1): the
inverse of LEGO's f_TS->I restricted to one tile. The loop indices it names are the "in-tile" ones;
every other loop index is an outer temporal loop that the controller sequences as separate passes.
The matrix must be unimodular so that every (time, space) point holds exactly one integer iteration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from genfoundry.errors import InputError


class LegoError(InputError):
    """Bad input to the LEGO generator (a workload, dataflow or array that cannot be mapped)."""


class NonAffineAccessError(LegoError):
    """A tensor index is not an affine function of the loop indices."""


class SingularDataflowError(LegoError):
    """A dataflow matrix is singular / not unimodular, so (time, space) does not identify iterations."""


class DataflowCollisionError(LegoError):
    """A dataflow maps two different iterations to the same (time, space) point."""


class ArrayTooSmallError(LegoError):
    """The array is smaller than the spatial footprint the dataflow needs."""


@dataclass(frozen=True)
class Access:
    """Affine access `tensor[matrix @ iteration + offset]` (rows: tensor dims, cols: loop dims)."""

    tensor: str
    matrix: tuple[tuple[int, ...], ...]
    offset: tuple[int, ...]

    @property
    def A(self) -> np.ndarray:
        return np.array(self.matrix, dtype=np.int64).reshape(len(self.matrix), -1)

    @property
    def b(self) -> np.ndarray:
        return np.array(self.offset, dtype=np.int64)


@dataclass(frozen=True)
class Stage:
    """One contraction `output += prod(inputs)` over the loop nest `dims` with `bounds`."""

    name: str
    dims: tuple[str, ...]
    bounds: tuple[int, ...]
    output: Access
    inputs: tuple[Access, ...]
    roles: tuple[str, str, str]  # (m, n, k): output row, output column, reduction — for named dataflows
    lanes: int = 1  # products per FU per cycle over packed reduction lanes (see packing.py)
    lane_width: int = 0  # bits of one lane of a packed operand word (0: not packed)
    shift: int = 0  # products are shifted left by this many bits before they accumulate (byte slices)
    unsigned: tuple[bool, ...] = ()  # per input: its values are unsigned (lower byte slices); () = all signed

    def dim_index(self, dim: str) -> int:
        if dim not in self.dims:
            raise LegoError(f"stage {self.name!r}: unknown loop index {dim!r}; expected one of {self.dims}")
        return self.dims.index(dim)

    def bound(self, dim: str) -> int:
        return self.bounds[self.dim_index(dim)]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the loop nest (for a packed stage: FU operations of `lanes` MACs each)."""
        return int(np.prod(self.bounds))


@dataclass(frozen=True)
class Workload:
    """A sequence of stages plus the shapes and bit widths of every tensor."""

    name: str
    stages: tuple[Stage, ...]
    shapes: dict[str, tuple[int, ...]]
    widths: dict[str, int]
    inputs: tuple[str, ...]  # tensors the user provides
    outputs: tuple[str, ...]  # tensors the user gets back

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.stages)


# ----------------------------------------------------------------------------------------------
# Parsing affine index expressions


def parse_affine(expr: str, dims: tuple[str, ...], where: str) -> tuple[list[int], int]:
    """Parse `2*oy + r - 1` into (coefficients over dims, constant). Raises NonAffineAccessError."""
    text = expr.replace(" ", "")
    if not text:
        raise NonAffineAccessError(f"{where}: empty index expression")
    if any(op in text for op in ("/", "%", "**", "(", ")")):
        raise NonAffineAccessError(
            f"{where}: index {expr!r} is not affine (division, modulo, powers and calls are not allowed;"
            " expected a sum of integer * loop-index terms)"
        )
    coeffs = [0] * len(dims)
    const = 0
    pos = 0
    if text[0] not in "+-":
        text = "+" + text
    for m in re.finditer(r"([+-])([^+-]+)", text):
        if m.start() != pos:
            raise NonAffineAccessError(f"{where}: cannot parse index {expr!r}")
        pos = m.end()
        sign = -1 if m.group(1) == "-" else 1
        factors = m.group(2).split("*")
        coef = sign
        dim = None
        for f in factors:
            if re.fullmatch(r"\d+", f):
                coef *= int(f)
            elif f in dims:
                if dim is not None:
                    raise NonAffineAccessError(
                        f"{where}: term {m.group(2)!r} in index {expr!r} multiplies two loop indices;"
                        " expected an affine index (integer * loop index + ...)"
                    )
                dim = f
            else:
                raise NonAffineAccessError(f"{where}: {f!r} in index {expr!r} is neither an integer nor a loop index {dims}")
        if dim is None:
            const += coef
        else:
            coeffs[dims.index(dim)] += coef
    if pos != len(text):
        raise NonAffineAccessError(f"{where}: cannot parse index {expr!r}")
    return coeffs, const


_REF = re.compile(r"^\s*([A-Za-z_]\w*)\s*\[(.*)\]\s*$")


def parse_access(ref: str, dims: tuple[str, ...], stage: str) -> Access:
    m = _REF.match(ref)
    if not m:
        raise LegoError(f"stage {stage!r}: expected a tensor reference like X[i,j], got {ref!r}")
    name, body = m.group(1), m.group(2)
    rows, offs = [], []
    for part in body.split(","):
        c, k = parse_affine(part, dims, f"stage {stage!r}, tensor {name}")
        rows.append(tuple(c))
        offs.append(k)
    return Access(name, tuple(rows), tuple(offs))


def parse_stage(statement: str, bounds: dict[str, int], name: str = "stage",
                roles: tuple[str, str, str] | None = None) -> Stage:
    """Parse `C[m,n] += A[m,k] * B[k,n]` with loop bounds {m: .., n: .., k: ..}."""
    if "+=" not in statement:
        raise LegoError(f"stage {name!r}: expected 'OUT[...] += IN[...] * IN[...]', got {statement!r}")
    lhs, rhs = statement.split("+=", 1)
    dims = tuple(bounds)
    for d, b in bounds.items():
        if int(b) < 1:
            raise LegoError(f"stage {name!r}: loop {d!r} has bound {b}; expected >= 1")
    out = parse_access(lhs, dims, name)
    ins = tuple(parse_access(r, dims, name) for r in _split_product(rhs))
    if len(ins) < 1:
        raise LegoError(f"stage {name!r}: no input tensors in {statement!r}")
    if roles is None:
        roles = (dims[0], dims[1], dims[2]) if len(dims) >= 3 else (dims[0],) * 3
    return Stage(name, dims, tuple(int(bounds[d]) for d in dims), out, ins, roles)


def _split_product(rhs: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in rhs:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "*" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def tensor_extent(stage: Stage, acc: Access) -> tuple[int, ...]:
    """Smallest shape that holds every index the access touches (offsets assumed >= 0)."""
    A, b = acc.A, acc.b
    hi = b + np.clip(A, 0, None) @ (np.array(stage.bounds) - 1)
    return tuple(int(x) + 1 for x in hi)


# ----------------------------------------------------------------------------------------------
# Dataflows


@dataclass(frozen=True)
class Dataflow:
    """`time = sum(c*dim)`, `space_j = sum(c*dim)` over three loop indices of a stage.

    `untiled` lists loop indices that must stay whole inside one tile (e.g. a filter index whose
    reuse the dataflow exploits spatially); the array must be large enough to hold them.
    """

    name: str
    time: dict[str, int]
    space: tuple[dict[str, int], dict[str, int]]
    untiled: tuple[str, ...] = ()

    def rows(self) -> list[dict[str, int]]:
        return [self.time, self.space[0], self.space[1]]


def named_dataflow(name: str, stage: Stage) -> Dataflow:
    """The standard dataflows, written over the stage's (m, n, k) roles.

    os: output-stationary systolic (space m x n, operands skewed through the array)
    ws: weight-stationary (space k x n; the (k, n) operand stays, partial sums flow down)
    is: input-stationary (space k x m; the (m, k) operand stays, partial sums flow down as in ws)
    os-bcast: output-stationary with broadcast buses instead of systolic links (time = k)
    ws-tree: weight-stationary without skew (time = m): the (m, k) operand is broadcast along each row
             and the partial sums of a column meet in a balanced adder tree (Arch.reduction)
    """
    m, n, k = stage.roles
    table = {
        "os": Dataflow("os", {k: 1, m: 1, n: 1}, ({m: 1}, {n: 1})),
        "ws": Dataflow("ws", {m: 1, k: 1, n: 1}, ({k: 1}, {n: 1})),
        "is": Dataflow("is", {n: 1, m: 1, k: 1}, ({k: 1}, {m: 1})),
        "os-bcast": Dataflow("os-bcast", {k: 1}, ({m: 1}, {n: 1})),
        "ws-tree": Dataflow("ws-tree", {m: 1}, ({k: 1}, {n: 1})),
    }
    if name not in table:
        raise LegoError(f"unknown dataflow {name!r}; expected one of {sorted(table)} or a Dataflow object")
    return table[name]


@dataclass(frozen=True)
class Mapping:
    """A dataflow bound to one stage and one array: everything the passes need about the tile.

    `T` maps the in-tile iteration (relative to the tile base) to (t, s0, s1) before `shift` is
    subtracted; `F` is its integer inverse (LEGO's f_TS->I linear part).
    """

    stage: Stage
    dataflow: Dataflow
    rows: int
    cols: int
    dims: tuple[str, str, str]  # in-tile loop indices, in T's column order
    T: np.ndarray  # 3x3 int
    F: np.ndarray  # 3x3 int, T^-1
    shift: np.ndarray  # (t, s0, s1) offset so that the tile starts at t=0 and space (0, 0)
    tile: tuple[int, int, int]  # tile extent of each in-tile index
    outer: tuple[str, ...]  # loop indices sequenced by the controller, outermost first

    def col(self, acc: Access) -> np.ndarray:
        """Columns of an access matrix for the in-tile indices (rows x 3)."""
        A = acc.A
        return A[:, [self.stage.dim_index(d) for d in self.dims]]

    def box_points(self) -> np.ndarray:
        """All in-tile iterations (N x 3)."""
        g = np.meshgrid(*[np.arange(e) for e in self.tile], indexing="ij")
        return np.stack([x.reshape(-1) for x in g], axis=1)

    def iteration(self, t: int, s: tuple[int, int]) -> np.ndarray:
        return self.F @ (np.array([t, s[0], s[1]]) + self.shift)

    def valid_window(self, s: tuple[int, int]) -> tuple[int, int] | None:
        """Interval [lo, hi] of t at which FU s runs an in-tile iteration, or None."""
        lo, hi = -10**9, 10**9
        base = self.F @ (np.array([0, s[0], s[1]]) + self.shift)
        slope = self.F[:, 0]
        for d in range(3):
            a, c, e = int(slope[d]), int(base[d]), self.tile[d]
            if a == 0:
                if not 0 <= c < e:
                    return None
                continue
            # 0 <= a t + c <= e - 1
            l_, h_ = Fraction(-c, a), Fraction(e - 1 - c, a)
            if a < 0:
                l_, h_ = h_, l_
            lo = max(lo, -(-l_.numerator // l_.denominator))
            hi = min(hi, h_.numerator // h_.denominator)
        return (lo, hi) if lo <= hi else None


def _det(M: np.ndarray) -> int:
    return int(round(np.linalg.det(M.astype(float))))


def _int_inverse(T: np.ndarray) -> np.ndarray:
    d = _det(T)
    adj = np.round(np.linalg.inv(T.astype(float)) * d).astype(np.int64)
    return adj // d


def bind(stage: Stage, dataflow: Dataflow | str, rows: int, cols: int, max_time_tile: int = 256) -> Mapping:
    """Check a dataflow against a stage and an array, and choose tile sizes."""
    df = named_dataflow(dataflow, stage) if isinstance(dataflow, str) else dataflow
    used: list[str] = []
    for row in df.rows():
        for d, c in row.items():
            stage.dim_index(d)
            if c != 0 and d not in used:
                used.append(d)
    rows_m = np.array([[row.get(d, 0) for d in used] for row in df.rows()], dtype=np.int64)
    if len(used) > 3:
        # rank <= 3 < number of indices: some integer iteration difference maps to (0, 0, 0)
        null = _integer_null_vector(rows_m)
        a = {d: 0 for d in used}
        b = {d: int(max(0, -v)) for d, v in zip(used, null)}
        a = {d: b[d] + int(v) for d, v in zip(used, null)}
        raise DataflowCollisionError(
            f"dataflow {df.name!r} on stage {stage.name!r} uses {len(used)} loop indices {used} in 3 rows"
            f" (time, space0, space1), so it maps two iterations to the same (time, space): {a} and {b};"
            " expected a map over exactly three loop indices"
        )
    while len(used) < 3:
        extra = [d for d in stage.dims if d not in used]
        if not extra:
            break
        used.append(extra[0])
        rows_m = np.concatenate([rows_m, np.zeros((3, 1), dtype=np.int64)], axis=1)
    T = rows_m
    det = _det(T)
    if det == 0:
        raise SingularDataflowError(
            f"dataflow {df.name!r} on stage {stage.name!r}: the (time, space) matrix {T.tolist()} over {used}"
            " is singular (determinant 0), so distinct iterations share a (time, space) point;"
            " expected a unimodular matrix (determinant +-1)"
        )
    if abs(det) != 1:
        raise SingularDataflowError(
            f"dataflow {df.name!r} on stage {stage.name!r}: the matrix {T.tolist()} over {used} has"
            f" determinant {det}; expected +-1 (unimodular) so that every (time, space) point is one"
            " integer iteration"
        )
    F = _int_inverse(T)
    assert (F @ T == np.eye(3, dtype=np.int64)).all()
    tile = _choose_tiles(stage, df, used, T, rows, cols, max_time_tile)
    corners = np.array(np.meshgrid(*[[0, e - 1] for e in tile], indexing="ij")).reshape(3, -1)
    ts = T @ corners
    shift = ts.min(axis=1)
    outer = tuple(d for d in stage.dims if d not in used)
    return Mapping(stage, df, rows, cols, tuple(used), T, F, shift, tile, outer)


def _choose_tiles(stage: Stage, df: Dataflow, used: list[str], T: np.ndarray, rows: int, cols: int,
                  max_time_tile: int) -> tuple[int, int, int]:
    full = [stage.bound(d) for d in used]
    in_space = [bool(T[1, i] or T[2, i]) for i in range(3)]
    tile = [min(full[i], max_time_tile) if not in_space[i] else full[i] for i in range(3)]
    fixed = [d in df.untiled for d in used]
    sizes = (rows, cols)

    def footprint(j: int) -> int:
        return int(sum(abs(T[j + 1, i]) * (tile[i] - 1) for i in range(3))) + 1

    for j in range(2):
        while footprint(j) > sizes[j]:
            shrink = [i for i in range(3) if T[j + 1, i] and not fixed[i] and tile[i] > 1]
            if not shrink:
                need = footprint(j)
                raise ArrayTooSmallError(
                    f"dataflow {df.name!r} on stage {stage.name!r} needs {need} FUs along space dimension {j}"
                    f" (indices {[d for d, i in zip(used, range(3)) if T[j + 1, i]]} with tiles"
                    f" {dict(zip(used, tile))}), but the array has {sizes[j]}; expected an array of at least"
                    f" {need} along that dimension"
                )
            i = max(shrink, key=lambda i: tile[i])
            over = footprint(j) - sizes[j]
            tile[i] = max(1, tile[i] - -(-over // abs(int(T[j + 1, i]))))
    return tuple(int(x) for x in tile)


def _integer_null_vector(M: np.ndarray) -> list[int]:
    """One nonzero integer vector v with M v = 0 (M has more columns than rank): exact Gaussian
    elimination over the rationals, one free column set to 1, then cleared of denominators."""
    from math import lcm

    rows = [[Fraction(int(x)) for x in r] for r in M.tolist()]
    ncol = len(rows[0])
    pivots, r = [], 0
    for c in range(ncol):
        p = next((i for i in range(r, len(rows)) if rows[i][c] != 0), None)
        if p is None:
            continue
        rows[r], rows[p] = rows[p], rows[r]
        rows[r] = [x / rows[r][c] for x in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][c] != 0:
                f = rows[i][c]
                rows[i] = [a - f * b for a, b in zip(rows[i], rows[r])]
        pivots.append(c)
        r += 1
    free = next(c for c in range(ncol) if c not in pivots)
    v = [Fraction(0)] * ncol
    v[free] = Fraction(1)
    for i, c in enumerate(pivots):
        v[c] = -rows[i][free]
    den = lcm(*[x.denominator for x in v])
    return [int(x * den) for x in v]
