"""Compare VILA-U model folders on validation data before choosing one to ship.

Every model answers the same validation questions (per question type) and draws the same validation
prompts at one CFG scale, from streams of their own (seed 7919): neither the training streams nor the
held-out evaluation's (`genfoundry eval vilau`), so the choice does not touch the held-out numbers.

    python benchmarks/vilau_validation.py --models raster=runs/a/model grid=runs/b/model --name vilau_validation_grid
    python benchmarks/vilau_validation.py --quick            # random tiny model, a smoke test

Writes benchmarks/results/NAME{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from harness import environment, write_results  # noqa: E402

VALIDATION_SEED = 7919
MISTAKES_SHOWN = 12


def model_pairs(parser: argparse.ArgumentParser, models: list[str]) -> list[tuple[str, str]]:
    """`--models` values LABEL=FOLDER_OR_ZOO_NAME -> (label, folder) pairs, or a usage error."""
    pairs = [tuple(m.split("=", 1)) for m in models]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        parser.error(f"--models takes LABEL=FOLDER pairs, got {models}")
    return pairs


def models_to_compare(pairs: list[tuple[str, str]], quick: bool):
    """(label, folder, model) per pair, loaded one at a time; `quick`: a random tiny model for each."""
    from genfoundry.vilau.model import VilaU, VilaUConfig

    for label, where in pairs:
        if quick:
            torch.manual_seed(0)
            yield label, "random-tiny", VilaU(VilaUConfig.tiny()).eval()
        else:
            yield label, where, VilaU.from_pretrained(where)


def comparison_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The options every model-comparison script takes: --models, --quick, --name, --results."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vila-u-shapes=vila-u-shapes"],
                        help="LABEL=FOLDER_OR_ZOO_NAME pairs")
    parser.add_argument("--quick", action="store_true", help="A random tiny model for each (a smoke test).")
    parser.add_argument("--name", default=name, help="Results file name (benchmarks/results/NAME.{json,md}).")
    parser.add_argument("--results", type=Path, default=None, help="Results folder (default: benchmarks/results).")
    return parser


def main() -> None:
    parser = comparison_parser(__doc__, "vilau_validation")
    parser.add_argument("--vqa-images", type=int, default=150, help="validation images, 3 questions each")
    parser.add_argument("--per-category", type=int, default=60, help="generation prompts per category")
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED)
    args = parser.parse_args()
    pairs = model_pairs(parser, args.models)

    from genfoundry.vilau.evaluate import evaluate_generation, evaluate_vqa

    rows = []
    n_images, per_category = (4, 1) if args.quick else (args.vqa_images, args.per_category)
    for label, where, model in models_to_compare(pairs, args.quick):
        t = time.perf_counter()
        vqa = evaluate_vqa(model, n_images=n_images, seed=args.seed)
        gen = evaluate_generation(model, per_category, cfg=args.cfg, seed=args.seed)
        rows.append({"label": label, "model": where,
                     "image_position": model.config.image_position, "vqa": vqa, "generation": gen,
                     "seconds": time.perf_counter() - t})
        print(f"{label}: VQA {vqa['accuracy']:.3f} {vqa['per_type']}; generation {gen['score']:.3f} "
              f"{gen['per_category']}", flush=True)
    result = {"cfg": args.cfg, "validation_seed": args.seed, "rows": rows}
    name = f"{args.name}_quick" if args.quick else args.name
    types = sorted({k for r in rows for k in r["vqa"]["per_type"]})
    cats = list(rows[0]["generation"]["per_category"])
    md = [(f"Validation streams (seed {args.seed}), CPU: {rows[0]['vqa']['questions']} questions (greedy answers) "
           f"and {rows[0]['generation']['prompts']} prompts at cfg {args.cfg} (top-k 900, top-p 0.96)."), "",
          "| model | image tokens | VQA | " + " | ".join(f"VQA {t}" for t in types) + " | generation | "
          + " | ".join(cats) + " |",
          "| --- | --- | ---: | " + " | ".join("---:" for _ in types) + " | ---: | " + " | ".join("---:" for _ in cats) + " |"]
    for r in rows:
        md.append(f"| {r['label']} | {r['image_position']} | {r['vqa']['accuracy']:.3f} | "
                  + " | ".join(f"{r['vqa']['per_type'].get(t, float('nan')):.3f}" for t in types)
                  + f" | {r['generation']['score']:.3f} | "
                  + " | ".join(f"{r['generation']['per_category'][c]:.2f}" for c in cats) + " |")
    for r in rows:  # what went wrong, to read (all of them are in the JSON)
        shown = r["vqa"]["mistakes"][:MISTAKES_SHOWN]
        md += ["", f"{r['label']}: {len(r['vqa']['mistakes'])} wrong answers" + (", the first:" if shown else ".")]
        md += [f"- {m['caption']}: {m['question']} expected {m['expected']!r}, answered {m['answer']!r}" for m in shown]
    write_results(name, result, "\n".join(md), out_dir=args.results, env=environment("cpu"),
                  title="VILA-U validation comparison")
    print("\n".join(md))


if __name__ == "__main__":
    main()
