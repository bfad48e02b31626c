"""LEGO report: generated accelerators vs a Gemmini-like baseline, measured side by side in one run.

Sections (all written to benchmarks/results/lego_report.{json,md}; --quick: lego_report_quick):
1. SANA-0.6B, VILA-U and SANA-0.6B with SVDQuant W4A4 linears (sana-svdq) at matched resources
   (256 int8 MACs = 16x16 FUs, 256 KB scratchpad, 16 GB/s): system cycles, FU utilisation and energy
   from the shared cost model (genfoundry/lego/cost.py), LEGO (os/ws/is/ws-tree fused, native conv,
   four int4 products per int8 multiplier) vs Gemmini-like (os/ws, int8 GEMM-only with im2col).
2. Yosys area (synth + stat) of single-dataflow designs vs the fused os+ws+is design, and of the
   int4-lane FU array vs the int8 one.
3. Pipeline-register bits inserted by LP delay matching vs naive (ASAP) balancing.
4. Generation + RTL verification time (compile, simulate, compare with numpy) vs array size.

Usage: python benchmarks/lego_report.py [--quick] [--simulator icarus|verilator|auto]
--quick uses a few layers, a 2x2 synthesis array and arrays up to 8x8 (a CPU smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from harness import write_results

from genfoundry import lego
from genfoundry.lego import baseline, workloads

MODELS = ("sana-0.6b", "vila-u", "sana-svdq", "sana-svdq-r8")
GENERATION_STEPS = 20  # SANA's default sampling steps (Flow-DPM-Solver)


def model_section(quick: bool) -> dict:
    out = {}
    for model in MODELS:
        layers = workloads.model_layers(model)
        if quick:
            layers = layers[:2] + [l for l in layers if l.spec.startswith("dwconv")][:1]
        rows = []
        tot = {"lego_cycles": 0, "gemmini_cycles": 0, "lego_energy_pj": 0.0, "gemmini_energy_pj": 0.0, "macs": 0,
               "lego_busy": 0.0, "gemmini_busy": 0.0}
        for layer in layers:
            t = time.perf_counter()
            c = baseline.compare(layer.spec)
            row = {"layer": layer.name, "spec": layer.spec, "count": layer.count,
                   "lego_cycles": c.lego["system_cycles"], "gemmini_cycles": c.gemmini["system_cycles"],
                   "lego_util": c.lego["utilisation"], "gemmini_util": c.gemmini["utilisation"],
                   "lego_energy_pj": c.lego["energy_pj"]["total"], "gemmini_energy_pj": c.gemmini["energy_pj"]["total"],
                   "lego_schedule": c.lego.get("schedule"), "speedup": c.speedup, "energy_ratio": c.energy_ratio,
                   "seconds": time.perf_counter() - t}
            rows.append(row)
            tot["lego_cycles"] += layer.count * row["lego_cycles"]
            tot["gemmini_cycles"] += layer.count * row["gemmini_cycles"]
            tot["lego_energy_pj"] += layer.count * row["lego_energy_pj"]
            tot["gemmini_energy_pj"] += layer.count * row["gemmini_energy_pj"]
            tot["macs"] += layer.count * lego.parse_workload(layer.spec).macs
            tot["lego_busy"] += layer.count * row["lego_util"] * row["lego_cycles"]
            tot["gemmini_busy"] += layer.count * row["gemmini_util"] * row["gemmini_cycles"]
            print(f"  {model:10s} {layer.name:36s} speedup {row['speedup']:.2f}x energy {row['energy_ratio']:.2f}x", flush=True)
        if any(layer.once_per_image for layer in layers):
            # a whole generation: the text-only layers (cross-attention K/V) run once, the rest every step
            gen = {"steps": GENERATION_STEPS}
            for key in ("lego_cycles", "gemmini_cycles", "lego_energy_pj", "gemmini_energy_pj"):
                gen[key] = workloads.generation_cycles([(layer, row[key]) for layer, row in zip(layers, rows)],
                                                       GENERATION_STEPS)
            gen["speedup"] = gen["gemmini_cycles"] / gen["lego_cycles"]
            gen["energy_ratio"] = gen["gemmini_energy_pj"] / gen["lego_energy_pj"]
            tot["generation"] = gen
        tot["speedup"] = tot["gemmini_cycles"] / tot["lego_cycles"]
        tot["energy_ratio"] = tot["gemmini_energy_pj"] / tot["lego_energy_pj"]
        tot["lego_util"] = tot.pop("lego_busy") / tot["lego_cycles"]
        tot["gemmini_util"] = tot.pop("gemmini_busy") / tot["gemmini_cycles"]
        out[model] = {"layers": rows, "total": tot}
    return out


def area_section(quick: bool) -> dict:
    n = 2 if quick else 4
    spec = f"gemm:{2 * n}x{2 * n}x{2 * n}"
    rows = {}
    for dfs in (("os",), ("ws",), ("is",), ("os", "ws", "is")):
        d = lego.compile(spec, lego.Arch(n, n, dfs))
        t = time.perf_counter()
        s = d.synthesize()
        rows["+".join(dfs)] = {k: s[k] for k in ("cells", "ff_bits", "muxes", "area_nand2")} | {
            "seconds": time.perf_counter() - t, "mode_muxes": d.muxes}
        print(f"  area {'+'.join(dfs):10s} {s['area_nand2']:.0f} NAND2-eq, {s['ff_bits']} FF bits", flush=True)
    largest = max(v["area_nand2"] for k, v in rows.items() if "+" not in k)
    fused = rows["os+ws+is"]["area_nand2"]
    # precision: the same ws array with int8 FUs, int4-lane FUs (4 products each), and the SVDQuant
    # operator's FUs (int4 lanes + the int16 low-rank multiply)
    precision = {}
    for label, pspec in (("int8 gemm", spec), ("int4 gemm, 4 lanes", f"{spec}:w4"),
                         ("svdq (int4 lanes + int16)", f"svdq:{2 * n}x{2 * n}x{2 * n}x{n}")):
        s = lego.compile(pspec, lego.Arch(n, n, ("ws",))).synthesize()
        precision[label] = {"spec": pspec} | {k: s[k] for k in ("cells", "ff_bits", "area_nand2")}
        print(f"  area {label:28s} {s['area_nand2']:.0f} NAND2-eq", flush=True)
    return {"array": f"{n}x{n}", "workload": spec, "designs": rows, "fused_over_largest_single": fused / largest,
            "precision": precision}


def register_section(quick: bool) -> dict:
    rows = []
    for n in ((2, 4) if quick else (4, 8, 16)):
        for dfs in (("os",), ("ws",), ("is",), ("os", "ws", "is")):
            d = lego.compile(f"gemm:{2 * n}x{2 * n}x{2 * n}", lego.Arch(n, n, dfs), emit_verilog=False)
            rows.append({"array": f"{n}x{n}", "dataflows": "+".join(dfs), "lp_bits": d.lp_register_bits,
                         "naive_bits": d.naive_register_bits,
                         "saving": 1 - d.lp_register_bits / d.naive_register_bits if d.naive_register_bits else 0.0})
    total_lp = sum(r["lp_bits"] for r in rows)
    total_nv = sum(r["naive_bits"] for r in rows)
    return {"rows": rows, "total_lp": total_lp, "total_naive": total_nv, "saving": 1 - total_lp / total_nv}


def reduction_section(quick: bool) -> dict:
    """ws-tree (no skew, spatial reduction over k) with neighbour chains vs balanced adder trees."""
    from genfoundry.lego import interconnect

    rows = []
    for n in ((2, 4) if quick else (4, 8, 16)):
        spec = f"gemm:{2 * n}x{n}x{n}"
        for red in ("chain", "tree"):
            d = lego.compile(spec, lego.Arch(n, n, ("ws-tree",), reduction=red), emit_verilog=False)
            m = d.modes[0]
            rows.append({"array": f"{n}x{n}", "workload": spec, "reduction": red,
                         "depth": interconnect.depth(m.output.tree), "lp_bits": d.lp_register_bits,
                         "compute_cycles": m.phases[1], "rtl_cycles": d.estimate()["rtl_cycles"]})
            print(f"  reduction {n}x{n} {red}: depth {rows[-1]['depth']}, {d.lp_register_bits} LP bits", flush=True)
    return {"rows": rows}


def timing_section(quick: bool, simulator: str) -> dict:
    import os
    import tempfile

    # a fresh build cache, so every row pays for its simulator build
    old = os.environ.get("GENFOUNDRY_CACHE")
    os.environ["GENFOUNDRY_CACHE"] = tempfile.mkdtemp(prefix="lego-bench-cache-")
    try:
        return _timing_rows(quick, simulator)
    finally:
        if old is None:
            os.environ.pop("GENFOUNDRY_CACHE", None)
        else:
            os.environ["GENFOUNDRY_CACHE"] = old


def _timing_rows(quick: bool, simulator: str) -> dict:
    rows = []
    for n in ((2, 4, 8) if quick else (4, 8, 16, 32)):
        spec = f"gemm:{n + 3}x{n + 1}x{n}"
        t = time.perf_counter()
        d = lego.compile(spec, lego.Arch(n, n, ("os", "ws")))
        t_gen = time.perf_counter() - t
        x = lego.random_inputs(d.workload, 0)
        t = time.perf_counter()
        out, cycles = d.simulate(x, simulator=simulator)
        t_ver = time.perf_counter() - t
        ok = bool(np.array_equal(out["C"], lego.reference(d.workload, x)["C"]))
        rows.append({"array": f"{n}x{n}", "workload": spec, "generate_s": t_gen, "verify_s": t_ver,
                     "total_s": t_gen + t_ver, "bit_exact": ok, "cycles": cycles,
                     "model_cycles": d.estimate()["rtl_cycles"], "verilog_lines": len(d.verilog.splitlines())})
        print(f"  {n}x{n}: generate {t_gen:.1f}s verify {t_ver:.1f}s bit-exact {ok}", flush=True)
    return {"simulator": lego.simulate.available_simulator(simulator), "rows": rows}


def markdown(res: dict) -> str:
    md = ["Same cost model for both designs (genfoundry/lego/cost.py); no accelerator needed.", "",
          "## Summary: LEGO over the Gemmini-like baseline at 256 MACs / 256 KB / 16 GB/s", "",
          "| model | speedup, one forward pass | energy efficiency, one pass | speedup, whole generation | "
          "energy efficiency, whole generation |", "| --- | ---: | ---: | ---: | ---: |"]
    for model, sec in res["models"].items():
        t, g = sec["total"], sec["total"].get("generation")
        whole = (f"{g['speedup']:.2f}x ({g['steps']} steps) | {g['energy_ratio']:.2f}x" if g else "| ")
        md.append(f"| {model} | {t['speedup']:.2f}x | {t['energy_ratio']:.2f}x | {whole} |")
    md += ["", "sana-svdq: SANA-0.6B with SVDQuant's W4A4 linears and their rank-32 branch in 16 bits (as SVDQuant "
           "deploys it); sana-svdq-r8: the same branch in int8 (its image quality: "
           "benchmarks/results/svdquant_sana_table.md). A whole generation computes the text-only layers "
           "(cross-attention K/V) once per image.", ""]
    for model, sec in res["models"].items():
        t = sec["total"]
        md += [f"## {model} at 256 MACs / 256 KB / 16 GB/s", "",
               "| layer | spec | count | LEGO cycles | Gemmini cycles | speedup | LEGO util | Gemmini util | energy ratio |",
               "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in sec["layers"]:
            md.append(f"| {r['layer']} | `{r['spec']}` | {r['count']} | {r['lego_cycles']} | {r['gemmini_cycles']} | "
                      f"{r['speedup']:.2f}x | {r['lego_util']:.1%} | {r['gemmini_util']:.1%} | {r['energy_ratio']:.2f}x |")
        md += [(f"| **total** | | | {t['lego_cycles']} | {t['gemmini_cycles']} | **{t['speedup']:.2f}x** | "
               f"{t['lego_util']:.1%} | {t['gemmini_util']:.1%} | **{t['energy_ratio']:.2f}x** |"), ""]
        # the same work with every LEGO FU multiplying every cycle: what better scheduling alone could reach
        busy = t["lego_cycles"] * t["lego_util"]
        wide = sum(r["lego_cycles"] * r["count"] for r in sec["layers"] if "int16" in r["layer"])
        md += [f"At 100% LEGO utilisation ({busy:.0f} cycles, the baseline unchanged) the speedup would be "
               f"{t['gemmini_cycles'] / busy:.2f}x." + (f" The separate 16-bit GEMMs take {wide / t['lego_cycles']:.0%} "
                                                       "of the LEGO cycles." if wide else ""), ""]
        if "generation" in t:
            g = t["generation"]
            md += [f"A {g['steps']}-step generation, the cross-attention K/V computed once per image (they depend on "
                   f"the text alone; genfoundry.sana's pipeline does this, same images): LEGO {g['lego_cycles']:.0f} "
                   f"cycles, Gemmini-like {g['gemmini_cycles']:.0f}: **{g['speedup']:.2f}x** speedup, "
                   f"**{g['energy_ratio']:.2f}x** energy efficiency.", ""]
    a = res["area"]
    md += [f"## Yosys area, {a['array']} array, `{a['workload']}`", "", "| dataflows | cells | FF bits | $_MUX_ | NAND2-eq | mode muxes |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k, v in a["designs"].items():
        md.append(f"| {k} | {v['cells']} | {v['ff_bits']} | {v['muxes']} | {v['area_nand2']:.0f} | {v['mode_muxes']} |")
    md += ["", f"Fused / largest single: **{a['fused_over_largest_single']:.2f}x**", ""]
    if a.get("precision"):
        md += [f"FU precision, `ws` dataflow, {a['array']} array:", "", "| FUs | spec | cells | FF bits | NAND2-eq |",
               "| --- | --- | ---: | ---: | ---: |"]
        for k, v in a["precision"].items():
            md.append(f"| {k} | `{v['spec']}` | {v['cells']} | {v['ff_bits']} | {v['area_nand2']:.0f} |")
        md.append("")
    r = res["registers"]
    md += ["## Pipeline-register bits: LP delay matching vs naive balancing", "", "| array | dataflows | LP bits | naive bits | saving |",
           "| --- | --- | ---: | ---: | ---: |"]
    for row in r["rows"]:
        md.append(f"| {row['array']} | {row['dataflows']} | {row['lp_bits']} | {row['naive_bits']} | {row['saving']:.0%} |")
    md += ["", f"Total: {r['total_lp']} vs {r['total_naive']} bits, **{r['saving']:.0%} fewer** with the LP.", ""]
    md += ["## Spatial reductions: neighbour chain vs balanced adder tree (`ws-tree` dataflow)", "",
           "| array | workload | reduction | depth (adders) | LP register bits | compute cycles / pass | RTL cycles |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row in res["reduction"]["rows"]:
        md.append(f"| {row['array']} | `{row['workload']}` | {row['reduction']} | {row['depth']} | {row['lp_bits']} | "
                  f"{row['compute_cycles']} | {row['rtl_cycles']} |")
    md.append("")
    tm = res["timing"]
    md += [f"## Generation + verification time ({tm['simulator']})", "", "| array | workload | generate s | verify s | total s | bit-exact | sim cycles | model cycles |",
           "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    for row in tm["rows"]:
        md.append(f"| {row['array']} | `{row['workload']}` | {row['generate_s']:.1f} | {row['verify_s']:.1f} | {row['total_s']:.1f} | "
                  f"{row['bit_exact']} | {row['cycles']} | {row['model_cycles']} |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--simulator", default="icarus", choices=["auto", "icarus", "verilator"])
    ap.add_argument("--skip-area", action="store_true", help="skip Yosys (slow on a busy machine)")
    args = ap.parse_args(argv)
    res = {"quick": args.quick}
    print("models", flush=True)
    res["models"] = model_section(args.quick)
    print("registers", flush=True)
    res["registers"] = register_section(args.quick)
    print("reduction", flush=True)
    res["reduction"] = reduction_section(args.quick)
    print("timing", flush=True)
    res["timing"] = timing_section(args.quick, args.simulator)
    if not args.skip_area:
        print("area", flush=True)
        res["area"] = area_section(args.quick)
    else:
        res["area"] = {"array": "-", "workload": "-", "designs": {}, "fused_over_largest_single": float("nan")}
    name = "lego_report_quick" if args.quick else "lego_report"
    json_path, _ = write_results(name, res, markdown(res), title="LEGO report")
    print(f"wrote {json_path.with_suffix('')}.json and .md", flush=True)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
