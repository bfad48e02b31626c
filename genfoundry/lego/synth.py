"""Logic synthesis with Yosys (`synth -flatten` + `stat`): cells, flip-flop bits, muxes, area.

The area estimate weights Yosys' internal gate cells by NAND2 equivalents (typical standard-cell
ratios: NOT 0.67, NAND/NOR 1, AND/OR/ANDNOT/ORNOT 1.33, AOI3/OAI3 1.67, AOI4/OAI4 2, XOR/XNOR/MUX
2.33, a flip-flop 4.33 and 5.33 with enable or synchronous reset). Buffers are mapped to flip-flops
(Yosys' default memory_map), so memory bits are part of the flip-flop count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .simulate import SimulationError

NAND2_EQ = {"$_NOT_": 0.67, "$_NAND_": 1.0, "$_NOR_": 1.0, "$_AND_": 1.33, "$_OR_": 1.33, "$_ANDNOT_": 1.33,
            "$_ORNOT_": 1.33, "$_AOI3_": 1.67, "$_OAI3_": 1.67, "$_AOI4_": 2.0, "$_OAI4_": 2.0,
            "$_XOR_": 2.33, "$_XNOR_": 2.33, "$_MUX_": 2.33, "$_NMUX_": 2.33, "$_BUF_": 0.5}
FF_PLAIN, FF_CONTROLLED = 4.33, 5.33


def parse_stat(text: str) -> dict:
    cells: dict[str, int] = {}
    for m in re.finditer(r"^\s+(\$\S+)\s+(\d+)\s*$", text, re.M):
        cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    total = re.search(r"Number of cells:\s+(\d+)", text)
    ff = sum(n for c, n in cells.items() if "DFF" in c or "DLATCH" in c)
    area = 0.0
    for c, n in cells.items():
        if "DFF" in c or "DLATCH" in c:
            area += n * (FF_PLAIN if c in ("$_DFF_P_", "$_DFF_N_") else FF_CONTROLLED)
        else:
            area += n * NAND2_EQ.get(c, 2.0)
    return {"cells": int(total.group(1)) if total else sum(cells.values()), "ff_bits": ff,
            "muxes": cells.get("$_MUX_", 0) + cells.get("$_NMUX_", 0), "area_nand2": round(area, 1),
            "cell_types": cells}


def synthesize(verilog: str, top: str = "lego_top", timeout: float = 900.0) -> dict:
    if shutil.which("yosys") is None:
        raise SimulationError("yosys not found: install it (apt-get install yosys)")
    with tempfile.TemporaryDirectory(prefix="lego-synth-") as wd:
        Path(wd, "design.v").write_text(verilog)
        script = f"read_verilog design.v; synth -top {top} -flatten; tee -o stat.txt stat"
        res = subprocess.run(["yosys", "-q", "-p", script], cwd=wd, capture_output=True, text=True, timeout=timeout)
        stat = Path(wd, "stat.txt")
        if res.returncode != 0 or not stat.exists():
            raise SimulationError(f"yosys failed (rc {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        return parse_stat(stat.read_text())
