"""Caption retrieval of VILA-U vision towers: validation and held-out top-1, side by side.

Built to judge stage 1b (`genfoundry train vilau --align-steps N`: the alignment head alone, trained
on the frozen tower's features) against the head each tower was trained with. The choice between
heads is made on the validation images (seed 7919, never trained on, not the held-out seed); the
held-out column uses `genfoundry eval vilau`'s images, candidates and seed, so it matches that table.

    python benchmarks/vilau_retrieval.py --models before=vila-u-shapes after=runs/vilau-align/model
    python benchmarks/vilau_retrieval.py --quick            # random tiny model, a smoke test

Writes benchmarks/results/NAME{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VALIDATION_SEED = 7919


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vila-u-shapes=vila-u-shapes"],
                        help="LABEL=FOLDER_OR_ZOO_NAME pairs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--validation-images", type=int, default=500)
    parser.add_argument("--held-out-images", type=int, default=200, help="as `genfoundry eval vilau`")
    parser.add_argument("--name", default="vilau_retrieval")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    pairs = [tuple(m.split("=", 1)) for m in args.models]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        parser.error(f"--models takes LABEL=FOLDER pairs, got {args.models}")

    from genfoundry import hub
    from genfoundry.vilau.evaluate import HELD_OUT_SEED, evaluate_retrieval
    from genfoundry.vilau.model import VilaU, VilaUConfig

    rows = []
    for label, where in pairs:
        if args.quick:
            torch.manual_seed(0)
            model, n_val, n_held = VilaU(VilaUConfig.tiny()).eval(), 12, 12
            where = "random tiny model"
        else:
            model, n_val, n_held = VilaU.from_pretrained(where), args.validation_images, args.held_out_images
        t = time.perf_counter()
        validation = evaluate_retrieval(model, n_images=n_val, seed=VALIDATION_SEED)
        held_out = evaluate_retrieval(model, n_images=n_held, seed=HELD_OUT_SEED)
        rows.append({"label": label, "model": where, "validation": validation, "held_out": held_out,
                     "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)

    md = ["# VILA-U caption retrieval (1 true caption among 10)", "",
          f"Validation: {rows[0]['validation']['images']} images, seed {VALIDATION_SEED}; held out: "
          f"{rows[0]['held_out']['images']} images, the seed of `genfoundry eval vilau`.", "",
          "| model | folder | validation top-1 | held-out top-1 |", "| --- | --- | ---: | ---: |"]
    md += [f"| {r['label']} | `{r['model']}` | {r['validation']['top1']:.3f} | {r['held_out']['top1']:.3f} |"
           for r in rows]
    name = args.name + ("_quick" if args.quick else "")
    hub.write_json_atomic(args.results / f"{name}.json", {"rows": rows})
    hub.write_text_atomic(args.results / f"{name}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
