"""VILA-U ablation: a vision tower trained with vs without the text-contrastive loss.

    genfoundry eval vilau --model genfoundry/zoo/vila-u-shapes --out benchmarks/results/vilau_eval_1800.json
    genfoundry eval vilau --model runs/vilau-noalign/model --cfgs 3 --out benchmarks/results/vilau_eval_noalign.json
    python benchmarks/vilau_ablation.py

The two models must have the same training: both results are at 1,800 stage-2 steps (vila-u-shapes
was evaluated before it was trained on to 3,600 steps; its final numbers are in vilau_eval.md).

Both models come from the same recipe except `--no-contrastive` (the paper's ablation: text alignment
is what makes the discrete tokens useful for understanding); both were scored by the same held-out
evaluation (`genfoundry.vilau.evaluate.evaluate_all`: same images, questions, prompts and seeds).
This script puts the two result files side by side in benchmarks/results/vilau_ablation.{json,md}
(`--quick`: the same, written as vilau_ablation_quick: there is nothing to shrink).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import RESULTS, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aligned", type=Path, default=RESULTS / "vilau_eval_1800.json")
    parser.add_argument("--unaligned", type=Path, default=RESULTS / "vilau_eval_noalign.json")
    parser.add_argument("--cfg", default="3.0", help="Which CFG scale's generation score to compare.")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="write vilau_ablation_quick (a smoke test)")
    parser.add_argument("--steps-note", default="both at 1,800 stage-2 steps (the shipped vila-u-shapes was later "
                        "trained on to 3,600 steps: benchmarks/results/vilau_eval.md)",
                        help="How the two models were trained, for the table's caption.")
    args = parser.parse_args()

    rows = {}
    for name, path in (("with contrastive", args.aligned), ("without contrastive", args.unaligned)):
        if not path.is_file():
            sys.exit(f"missing {path}: run `genfoundry eval vilau --out {path}` on that model first")
        rows[name] = json.loads(path.read_text())
        if args.cfg not in rows[name]["generation"]:
            sys.exit(f"{path} has no generation score at cfg {args.cfg} (has {sorted(rows[name]['generation'])})")
    names = list(rows)
    md = [f"Held-out ShapeWorld, the same evaluation for both; generation at cfg {args.cfg}; {args.steps_note}.", "",
          "| metric | " + " | ".join(names) + " |", "| --- | " + " | ".join("---:" for _ in names) + " |"]

    def row(label: str, values: list[float], fmt: str = "{:.3f}") -> None:
        md.append(f"| {label} | " + " | ".join(fmt.format(v) for v in values) + " |")

    row("VQA accuracy", [rows[n]["vqa"]["accuracy"] for n in names])
    for kind in rows[names[0]]["vqa"]["per_type"]:
        row(f"VQA {kind}", [rows[n]["vqa"]["per_type"].get(kind, float("nan")) for n in names])
    row("caption retrieval top-1 (1 of 10)", [rows[n]["retrieval"]["top1"] for n in names])
    row("reconstruction PSNR (dB)", [rows[n]["reconstruction"]["psnr_db"] for n in names], "{:.2f}")
    row(f"generation score (cfg {args.cfg})", [rows[n]["generation"][args.cfg]["score"] for n in names])
    for category in rows[names[0]]["generation"][args.cfg]["per_category"]:
        row(f"generation {category}", [rows[n]["generation"][args.cfg]["per_category"][category] for n in names])
    md += ["", "Models: " + "; ".join(f"{n}: `{rows[n].get('model', '?')}`" for n in names)]
    write_results("vilau_ablation" + ("_quick" if args.quick else ""), {"cfg": args.cfg, "models": rows},
                  "\n".join(md), out_dir=args.results, title="VILA-U ablation: text alignment of the vision tower")
    print("\n".join(md))


if __name__ == "__main__":
    main()
