"""RTL simulation: a host driver that tiles tensors into passes, and a file-driven testbench run by
Verilator (or Icarus Verilog as a fallback).

The testbench `tb_core` reads commands from `cmds.txt`, one per line, and drives `lego_top`:
  1 SLOT LINE HEXDATA   load one buffer line (1 cycle)
  2 MODE 0 0            start a pass and wait for `done`
  3 LINE 0 0            drain one output line (1 cycle; the line is written to out.txt)
  0 0 0 0               finish; out.txt ends with `cycles N` (clock cycles from the first command)
Builds are cached by a hash of the Verilog, so re-simulating a design with new tensors only reruns.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import product

from genfoundry.errors import GenfoundryError
from pathlib import Path

import numpy as np

from .graph import ModePlan
from .ir import LegoError
from .verilog import Hardware, _bits


class SimulationError(GenfoundryError, RuntimeError):
    """The simulator is missing, failed to build, or produced unexpected output."""


def cache_root() -> Path:
    base = os.environ.get("GENFOUNDRY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genfoundry")
    return Path(base) / "lego"


# ----------------------------------------------------------------------------------------------
# Pass schedule (shared with the cost model)


@dataclass(frozen=True)
class Pass:
    mode: int
    base: dict  # loop index -> value of the tile base (in-tile indices) or the loop value (outer ones)
    loads: tuple[int, ...]  # input slots reloaded before this pass
    drain: bool  # drain the output buffer after this pass


def _relevant(stage, acc) -> set[str]:
    A = acc.A
    return {d for i, d in enumerate(stage.dims) if A[:, i].any()}


def loop_nest(plan: ModePlan) -> list[tuple[str, int, int]]:
    """(index, trip count, step) of the pass loops, output-relevant loops outermost."""
    mp = plan.mapping
    st = mp.stage
    loops = []
    for d in st.dims:
        if d in mp.dims:
            step = mp.tile[mp.dims.index(d)]
            loops.append((d, -(-st.bound(d) // step), step))
        else:
            loops.append((d, st.bound(d), 1))
    out_rel = _relevant(st, st.output)
    return sorted(loops, key=lambda x: (x[0] not in out_rel))


def passes(plan: ModePlan) -> list[Pass]:
    st = plan.stage
    loops = loop_nest(plan)
    rel = [_relevant(st, acc) for acc in st.inputs]
    out_rel = _relevant(st, st.output)
    seq = []
    for idx in product(*[range(n) for _, n, _ in loops]):
        seq.append({d: i * step for (d, _, step), i in zip(loops, idx)})
    result = []
    prev = None
    for k, base in enumerate(seq):
        loads = tuple(j for j, r in enumerate(rel) if prev is None or any(base[d] != prev[d] for d in r))
        nxt = seq[k + 1] if k + 1 < len(seq) else None
        drain = nxt is None or any(base[d] != nxt[d] for d in out_rel)
        result.append(Pass(plan.index, base, loads, drain))
        prev = base
    return result


# ----------------------------------------------------------------------------------------------
# Host side: buffer images and output reconstruction


def _full_iteration(plan: ModePlan, base: dict, pts: np.ndarray) -> np.ndarray:
    st = plan.stage
    I = np.zeros((len(pts), len(st.dims)), dtype=np.int64)
    for i, d in enumerate(st.dims):
        I[:, i] = base[d]
    for c, d in enumerate(plan.mapping.dims):
        I[:, st.dim_index(d)] += pts[:, c]
    return I


def buffer_image(plan: ModePlan, slot: int, base: dict, tensor: np.ndarray) -> np.ndarray:
    """depth x banks array of the buffer contents for one pass (zero where the tensor has no element)."""
    sp = plan.slots[slot]
    lay = sp.layout
    pts = plan.mapping.box_points()
    I = _full_iteration(plan, base, pts)
    coords = I @ sp.access.A.T + sp.access.b
    ok = np.all((coords >= 0) & (coords < np.array(tensor.shape)), axis=1)
    vals = np.zeros(len(pts), dtype=np.int64)
    vals[ok] = tensor[tuple(coords[ok].T)]
    rel = pts @ lay.coef.T - lay.cmin if len(lay.ext) else np.zeros((len(pts), 0), dtype=np.int64)
    bank, off = lay.locate(rel)
    img = np.zeros((lay.depth, lay.banks), dtype=np.int64)
    img[off, bank] = vals
    return img


def _drain_coords(plan: ModePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, banks, output coordinates relative to the tile origin) of every drained buffer word."""
    lay = plan.output.layout
    C = plan.mapping.col(plan.output.access)
    keep = [i for i in range(C.shape[0]) if C[i].any()]
    offs, banks = np.meshgrid(np.arange(lay.depth), np.arange(lay.banks), indexing="ij")
    offs, banks = offs.reshape(-1), banks.reshape(-1)
    rel = np.stack([lay.unlocate(int(b), int(o)) for b, o in zip(banks, offs)]) if len(lay.ext) else np.zeros((len(offs), 0), dtype=np.int64)
    coords = np.zeros((len(offs), C.shape[0]), dtype=np.int64)
    for k, row in enumerate(keep):
        coords[:, row] += rel[:, k] + lay.cmin[k]
    return offs, banks, coords


def _tile_origin(plan: ModePlan, base: dict) -> np.ndarray:
    acc = plan.output.access
    return acc.A @ _full_iteration(plan, base, np.zeros((1, 3), dtype=np.int64))[0] + acc.b


def scatter_output(plan: ModePlan, base: dict, lines: np.ndarray, out: np.ndarray, bits: int) -> None:
    """Add the drained output buffer (depth x banks) into the output tensor (wrapping to `bits`)."""
    from .workloads import wrap

    offs, banks, rel = _drain_coords(plan)
    coords = rel + _tile_origin(plan, base)
    ok = np.all((coords >= 0) & (coords < np.array(out.shape)), axis=1)
    vals = lines[offs, banks]
    np.add.at(out, tuple(coords[ok].T), vals[ok])
    out[...] = wrap(out, bits)


def output_runs(plan: ModePlan) -> list[list[Pass]]:
    """The passes in runs that accumulate into one output tile (each run ends with its drain)."""
    runs, cur = [], []
    for ps in passes(plan):
        cur.append(ps)
        if ps.drain:
            runs.append(cur)
            cur = []
    return runs


def shares_output_tiles(a: ModePlan, b: ModePlan) -> bool:
    """Whether b's passes can add into a's output tiles before one drain: the same output tensor, buffer
    layout and word -> element map, and the same sequence of tiles."""
    if a.output.tensor != b.output.tensor or (a.output.layout.depth, a.output.layout.banks) != (b.output.layout.depth, b.output.layout.banks):
        return False
    if any(not np.array_equal(x, y) for x, y in zip(_drain_coords(a), _drain_coords(b))):
        return False
    return _tile_origins(a) == _tile_origins(b)


def _tile_origins(plan: ModePlan) -> list[tuple[int, ...]]:
    """Origins of the output tiles in pass order (the output-relevant loops are the outer ones)."""
    st = plan.stage
    out_rel = _relevant(st, st.output)
    loops = [(d, n, step) for d, n, step in loop_nest(plan) if d in out_rel]
    fixed = {d: 0 for d in st.dims}
    origins = []
    for idx in product(*[range(n) for _, n, _ in loops]):
        base = fixed | {d: i * step for (d, _, step), i in zip(loops, idx)}
        origins.append(tuple(int(x) for x in _tile_origin(plan, base)))
    return origins


def _hex_line(words: np.ndarray, width: int) -> str:
    v = 0
    mask = (1 << width) - 1
    for b, x in enumerate(words.tolist()):
        v |= (int(x) & mask) << (b * width)
    return format(v, "x")


# ----------------------------------------------------------------------------------------------
# Testbench and simulators


def testbench(hw: Hardware, nmodes: int) -> str:
    lw, ob, ow = hw.line_width, hw.out_addr_bits, hw.out_banks * hw.acc_width
    sb, ab, mb = _bits(len(hw.slot_width)), hw.load_addr_bits, _bits(nmodes)
    return f"""// file-driven testbench for lego_top (see genfoundry/lego/simulate.py)
module tb_core(input clk);
  reg rst = 1'b1; reg load_en = 1'b0; reg [{sb - 1}:0] load_sel = 0; reg [{ab - 1}:0] load_addr = 0;
  reg [{lw - 1}:0] load_data = 0; reg start = 1'b0; reg [{mb - 1}:0] start_mode = 0;
  reg drain_en = 1'b0; reg [{ob - 1}:0] drain_addr = 0;
  wire busy, done; wire [{ow - 1}:0] drain_data;
  lego_top dut(.clk(clk), .rst(rst), .load_en(load_en), .load_sel(load_sel), .load_addr(load_addr),
    .load_data(load_data), .start(start), .start_mode(start_mode), .busy(busy), .done(done),
    .drain_en(drain_en), .drain_addr(drain_addr), .drain_data(drain_data));
  integer fin, fout, op, a, b, r, cycles, boot;
  reg [{lw - 1}:0] data;
  reg waiting, finishing, pend;
  initial begin cycles = 0; boot = 0; waiting = 1'b0; finishing = 1'b0; pend = 1'b0; end
  always @(posedge clk) begin
    if (boot == 0) begin fin = $fopen("cmds.txt", "r"); fout = $fopen("out.txt", "w"); end
    if (boot < 2) begin boot <= boot + 1; rst <= 1'b1; end
    else begin
      rst <= 1'b0;
      cycles <= cycles + 1;
      load_en <= 1'b0; start <= 1'b0; drain_en <= 1'b0;
      pend <= drain_en;
      if (pend) $fwrite(fout, "%h\\n", drain_data);
      if (waiting) begin
        if (done) waiting <= 1'b0;
      end else if (finishing) begin
        if (!pend && !drain_en) begin $fwrite(fout, "cycles %0d\\n", cycles); $fclose(fout); $finish; end
      end else begin
        op = 0; if (fin == 0) $display("tb_core: cannot open cmds.txt");
        r = $fscanf(fin, "%d %d %d %h\\n", op, a, b, data);
        if (op == 1) begin
          load_en <= 1'b1; load_sel <= a; load_addr <= b; load_data <= data;
        end else if (op == 2) begin
          start <= 1'b1; start_mode <= a; waiting <= 1'b1;
        end else if (op == 3) begin
          drain_en <= 1'b1; drain_addr <= a;
        end else finishing <= 1'b1;
      end
    end
  end
endmodule
"""


_ICARUS_CLOCK = """module tb_clock;
  reg clk = 1'b0;
  always #1 clk = ~clk;
  tb_core core(.clk(clk));
endmodule
"""

_VERILATOR_MAIN = """#include "Vtb_core.h"
#include "verilated.h"
int main(int argc, char** argv) {
  VerilatedContext* ctx = new VerilatedContext;
  ctx->commandArgs(argc, argv);
  Vtb_core* top = new Vtb_core{ctx};
  top->clk = 0; top->eval();
  for (long i = 0; i < 2000000000L && !ctx->gotFinish(); ++i) {
    top->clk = 1; top->eval(); top->clk = 0; top->eval();
  }
  top->final(); delete top; delete ctx; return 0;
}
"""


def available_simulator(preferred: str = "auto") -> str:
    if preferred not in ("auto", "verilator", "icarus"):
        raise LegoError(f"unknown simulator {preferred!r}; expected auto, verilator or icarus")
    have_v = shutil.which("verilator") is not None
    have_i = shutil.which("iverilog") is not None and shutil.which("vvp") is not None
    if preferred == "verilator" and have_v or preferred == "auto" and have_v:
        return "verilator"
    if preferred in ("icarus", "auto") and have_i:
        return "icarus"
    raise SimulationError(f"no RTL simulator for {preferred!r}: install verilator or iverilog (apt-get install verilator iverilog)")


def build(verilog: str, tb: str, simulator: str) -> Path:
    """Compile (cached) and return the path of the simulator executable."""
    key = hashlib.sha256((simulator + "\0" + verilog + "\0" + tb).encode()).hexdigest()[:20]
    d = cache_root() / f"{simulator}-{key}"
    exe = d / ("sim.vvp" if simulator == "icarus" else "obj/Vtb_core")
    if exe.exists():
        return exe
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=cache_root().mkdir(parents=True, exist_ok=True) or cache_root()))
    (tmp / "lego_top.v").write_text(verilog)
    (tmp / "tb_core.v").write_text(tb)
    if simulator == "icarus":
        (tmp / "tb_clock.v").write_text(_ICARUS_CLOCK)
        cmd = ["iverilog", "-g2005", "-o", "sim.vvp", "-s", "tb_clock", "tb_clock.v", "tb_core.v", "lego_top.v"]
    else:
        (tmp / "main.cpp").write_text(_VERILATOR_MAIN)
        cmd = ["verilator", "--cc", "--exe", "--build", "-O1", "-Wno-fatal", "-Wno-lint", "-Wno-style",
               "-Wno-MULTIDRIVEN", "--top-module", "tb_core", "-Mdir", "obj", "-o", "Vtb_core",
               "tb_core.v", "lego_top.v", "main.cpp", "-CFLAGS", "-O1", "-j", "2"]
    res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    if res.returncode != 0:
        raise SimulationError(f"{simulator} build failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    if d.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, d)
    return exe


def run(exe: Path, simulator: str, commands: str) -> tuple[list[str], int]:
    with tempfile.TemporaryDirectory(prefix="lego-sim-") as wd:
        (Path(wd) / "cmds.txt").write_text(commands)
        cmd = ["vvp", "-n", str(exe)] if simulator == "icarus" else [str(exe)]
        res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True)
        out = Path(wd) / "out.txt"
        if res.returncode != 0 or not out.exists():
            raise SimulationError(f"{simulator} run failed (rc {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        lines = out.read_text().split()
    if len(lines) < 2 or lines[-2] != "cycles":
        raise SimulationError("testbench output has no cycle count; the simulation did not finish")
    data = lines[:-2]
    return data, int(lines[-1])


def command_stream(plans: ModePlan | list[ModePlan], hw: Hardware, tensors: dict[str, np.ndarray],
                   loaded: dict[int, object]) -> tuple[list[str], list[tuple[dict, int]]]:
    """Commands for every pass of one mode, or of several modes that share output tiles (each tile gets
    every mode's passes, then one drain); returns (commands, [(base of the drained pass, n lines)])."""
    plans = [plans] if isinstance(plans, ModePlan) else list(plans)
    cmds: list[str] = []
    drains = []
    for tile in zip(*[output_runs(p) for p in plans]):
        for plan, run in zip(plans, tile):
            st = plan.stage
            for ps in run:
                for pos, sp in enumerate(plan.slots):
                    j = sp.index  # the physical slot this input is loaded into
                    rel = _relevant(st, sp.access)
                    key = (plan.index, j, tuple(sorted((d, ps.base[d]) for d in rel)))
                    if loaded.get(j) == key:
                        continue
                    img = buffer_image(plan, pos, ps.base, tensors[sp.tensor])
                    for line in range(img.shape[0]):
                        cmds.append(f"1 {j} {line} {_hex_line(img[line], hw.slot_width[j])}")
                    loaded[j] = key
                cmds.append(f"2 {plan.index} 0 0")
        n = plans[0].output.layout.depth
        cmds.extend(f"3 {line} 0 0" for line in range(n))
        drains.append((tile[0][-1].base, n))
    return cmds, drains


def parse_lines(data: list[str], n: int, banks_hw: int, banks: int, width: int) -> np.ndarray:
    """Drained hex lines -> (n, banks) signed integers."""
    mask = (1 << width) - 1
    out = np.zeros((n, banks), dtype=np.int64)
    for i in range(n):
        v = int(data[i], 16)
        for b in range(banks):
            x = (v >> (b * width)) & mask
            out[i, b] = x - (1 << width) if x >> (width - 1) else x
    return out
