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

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.vilau_validation import (
    VALIDATION_SEED,
    comparison_parser,
    model_pairs,
    models_to_compare,
)
from harness import environment, write_results  # noqa: E402 (on the path through vilau_validation)


def main() -> None:
    parser = comparison_parser(__doc__, "vilau_retrieval")
    parser.add_argument("--validation-images", type=int, default=500)
    parser.add_argument("--held-out-images", type=int, default=200, help="as `genfoundry eval vilau`")
    args = parser.parse_args()
    pairs = model_pairs(parser, args.models)

    from genfoundry.vilau.evaluate import HELD_OUT_SEED, evaluate_retrieval

    rows = []
    n_val, n_held = (12, 12) if args.quick else (args.validation_images, args.held_out_images)
    for label, where, model in models_to_compare(pairs, args.quick):
        t = time.perf_counter()
        validation = evaluate_retrieval(model, n_images=n_val, seed=VALIDATION_SEED)
        held_out = evaluate_retrieval(model, n_images=n_held, seed=HELD_OUT_SEED)
        rows.append({"label": label, "model": where, "validation": validation, "held_out": held_out,
                     "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)

    counts = (f"Validation: {rows[0]['validation']['images']} images, seed {VALIDATION_SEED}; held out: "
              f"{rows[0]['held_out']['images']} images, the seed of `genfoundry eval vilau`.")
    kinds = list(rows[0]["validation"]["edits_top1_per_kind"])
    md = [counts, "",
          ("The edit columns: the true caption against all its one-edit variants (`genfoundry.shapes.caption_edits`), "
           "and per kind of edit against that kind's variants (validation)."), "",
          "| model | folder | validation top-1 | held-out top-1 | validation, edits | held-out, edits | "
          + " | ".join(kinds) + " |",
          "| --- | --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |"]
    md += [f"| {r['label']} | `{r['model']}` | {r['validation']['top1']:.3f} | {r['held_out']['top1']:.3f} | "
           f"{r['validation']['edits_top1']:.3f} | {r['held_out']['edits_top1']:.3f} | "
           + " | ".join(f"{r['validation']['edits_top1_per_kind'].get(k, float('nan')):.2f}" for k in kinds) + " |"
           for r in rows]
    name = args.name + ("_quick" if args.quick else "")
    write_results(name, {"rows": rows}, "\n".join(md), out_dir=args.results, env=environment("cpu"),
                  title="VILA-U caption retrieval (1 true caption among 10; and among its one-edit variants)")
    print("\n".join(md))


if __name__ == "__main__":
    main()
