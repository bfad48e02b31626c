"""Gemmini-like baseline: a 16x16 int8 systolic mesh, OS or WS chosen at run time, 32-bit accumulate,
256 KiB scratchpad, 16 GB/s DRAM, generated as RTL by the same generator and costed by the same model.

What makes it Gemmini-like rather than LEGO: it runs int8 GEMMs only. Convolutions go through im2col
(the lowered input matrix is what moves from DRAM), depthwise convolutions become one GEMM per
channel (N = 1), MTTKRP first materialises the Khatri-Rao product, and the SVDQuant operator runs its
int4 GEMM in int8 lanes and its int16 low-rank GEMM as four byte-slice GEMMs. LEGO instead maps each
tensor operation natively, packs four int4 products into each int8 multiplier (packing.py), and picks
among all its fused dataflows per layer, including `ws-tree`
(no systolic skew: operands broadcast along rows, partial sums reduced by balanced adder trees), which
spends fewer fill and drain cycles per pass than a systolic mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .design import Arch, Design, compile
from .ir import LegoError
from .workloads import parse_workload

GEMMINI_ARCH = Arch(16, 16, ("os", "ws"), max_time_tile=256)
LEGO_ARCH = Arch(16, 16, ("os", "ws", "is", "ws-tree"), max_time_tile=256)


def _slices(bits: int) -> int:
    """int8 byte-slice products per B-bit x B-bit product."""
    return (-(-bits // 8)) ** 2


def gemm_lowering(spec: str) -> list[str]:
    """The GEMM specs a GEMM-only accelerator runs for one workload spec."""
    kind, rest = spec.split(":", 1)
    if kind == "gemm" and ":" in rest:
        # narrower operands sit in int8 lanes; a B-bit product (B > 8) is ceil(B/8)^2 byte-slice products
        rest, wb = rest.split(":", 1)
        M, N, K = (int(x) for x in rest.split("x"))
        return [f"gemm:{M}x{N}x{K * _slices(int(wb[1:]))}"]
    lowrank_bits = 16
    if kind == "svdq" and ":" in rest:
        rest = rest.split(":", 1)[0]
        lowrank_bits = parse_workload(spec).widths["L"]
    stride = 1
    if kind in ("conv2d", "dwconv") and ":" in rest:
        rest, st = rest.split(":", 1)
        stride = int(st[1:])
    d = [int(x) for x in rest.split("x")]
    if kind == "conv2d":
        C, H, W, K, R, S = d
        oh, ow = (H - R) // stride + 1, (W - S) // stride + 1
        return [f"gemm:{oh * ow}x{K}x{C * R * S}"]
    if kind == "dwconv":
        C, H, W, R, S = d
        oh, ow = (H - R) // stride + 1, (W - S) // stride + 1
        return [f"bgemm:{C}x{oh * ow}x1x{R * S}"]
    if kind == "mttkrp":
        I, J, K, L = d
        return [f"gemm:{I}x{J}x{K * L}"]
    if kind == "svdq":
        # int4 operands sit in int8 lanes (one product per MAC per cycle); an int16 x int16 product is
        # four int8 byte-slice products, so the rank-R branch is a GEMM with a 4R-long reduction
        M, N, K, R = d
        return [f"gemm:{M}x{N}x{K}", f"gemm:{M}x{N}x{_slices(lowrank_bits) * R}"]
    if kind == "linattn":
        N, D, E = d
        return [f"gemm:{D}x{E}x{N}", f"gemm:{N}x{E}x{D}"]
    if kind in ("gemm", "bgemm", "attn"):
        return [spec]
    raise LegoError(f"baseline: no GEMM lowering for {spec!r}")


@dataclass
class Comparison:
    spec: str
    lego: dict
    gemmini: dict

    @property
    def speedup(self) -> float:
        return self.gemmini["system_cycles"] / max(self.lego["system_cycles"], 1)

    @property
    def energy_ratio(self) -> float:
        return self.gemmini["energy_pj"]["total"] / max(self.lego["energy_pj"]["total"], 1e-9)


def _sum_estimates(ests: list[dict]) -> dict:
    out = {"system_cycles": 0, "rtl_cycles": 0, "macs": 0, "dram_bytes": 0, "energy_pj": {"total": 0.0}}
    for e in ests:
        for k in ("system_cycles", "rtl_cycles", "macs", "dram_bytes"):
            out[k] += e[k]
        out["energy_pj"]["total"] += e["energy_pj"]["total"]
    return out


def _lowered_workloads(spec: str) -> list:
    """What the baseline compiles: its GEMM specs; the SVDQuant operator's two GEMMs as one two-stage
    workload, so that (like LEGO) its accumulator keeps the shared output tiles across both."""
    lowered = gemm_lowering(spec)
    if not spec.startswith("svdq:"):
        return lowered
    M, N, K, R = (int(x) for x in spec.split(":")[1].split("x"))
    # the same operator with int8 operands and the byte slices as a longer low-rank reduction
    wl = parse_workload(f"svdq:{M}x{N}x{K}x{_slices(parse_workload(spec).widths['L']) * R}")
    return [replace(wl, name=spec, widths={n: 8 for n in wl.inputs} | {"Y": 32})]


def estimate_gemmini(spec: str, dram_gbps: float = 16.0, arch: Arch = GEMMINI_ARCH) -> dict:
    """The baseline's estimate for `spec` (`arch`: another mesh size of the same baseline)."""
    designs = [compile(w, arch, emit_verilog=False) for w in _lowered_workloads(spec)]
    ests = [d.estimate(dram_gbps=dram_gbps) for d in designs]
    est = _sum_estimates(ests)
    # FU-cycles spent multiplying (byte-slice and int4-in-int8 products included), as for LEGO
    est["utilisation"] = sum(e["utilisation"] * e["system_cycles"] for e in ests) / max(est["system_cycles"], 1)
    est["macs"] = parse_workload(spec).macs  # useful work, not the lowering's
    return est


def estimate_lego(spec: str, arch: Arch = LEGO_ARCH, dram_gbps: float = 16.0) -> dict:
    d: Design = compile(spec, arch, emit_verilog=False)
    est = d.estimate(dram_gbps=dram_gbps)
    est["schedule"] = {d.stages[s].name: d.modes[m].name for s, m in d.choice.items()}
    return est


def compare(spec: str, dram_gbps: float = 16.0, arch: Arch = LEGO_ARCH) -> Comparison:
    return Comparison(spec, estimate_lego(spec, arch, dram_gbps), estimate_gemmini(spec, dram_gbps))


def gemmini_design(spec: str = "gemm:16x16x16", emit_verilog: bool = True, arch: Arch = GEMMINI_ARCH) -> Design:
    """The baseline as RTL (for synthesis / simulation), for its first lowered workload (for the SVDQuant
    operator: both of its GEMMs, with int8 operands)."""
    return compile(_lowered_workloads(spec)[0], arch, emit_verilog=emit_verilog)
