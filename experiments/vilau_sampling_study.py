"""VILA-U sampling study: generation score vs temperature and top-k on validation prompts.

The embedded model samples with the official VILA-U settings (top-k 900, top-p 0.96, temperature 1;
its codebook has 512 codes, so top-k 900 keeps all of them). A small model may draw cleaner shapes
from a sharper distribution. Every setting draws the same validation prompts (a prompt stream of its
own, neither the training streams nor the held-out evaluation's) with the same seeds, at cfg 3.

    python experiments/vilau_sampling_study.py                 # 100 prompts per setting, a few minutes on 2 CPU cores
    python experiments/vilau_sampling_study.py --quick         # random tiny model, a smoke test

Writes experiments/results/vilau_sampling_study{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from paths import RESULTS

from harness import environment, write_results  # noqa: E402 (benchmarks/ is on the path through paths)

VALIDATION_SEED = 7919
SETTINGS = [  # (temperature, top_k); top_p 0.96 throughout
    (1.0, None), (1.0, 50), (1.0, 10), (0.8, None), (0.6, None), (0.0, None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vila-u-shapes")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--per-category", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED, help="validation prompt stream")
    parser.add_argument("--settings", default=None,
                        help="temperature:top_k pairs, e.g. '1.0:all,1.0:10' (default: the table's six)")
    parser.add_argument("--name", default="vilau_sampling_study", help="results file name")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: experiments/results)")
    args = parser.parse_args()
    settings = SETTINGS
    if args.settings:
        try:
            settings = [(float(t), None if k == "all" else int(k))
                        for t, k in (pair.split(":") for pair in args.settings.split(","))]
        except ValueError:
            parser.error(f"--settings {args.settings!r}: expected temperature:top_k pairs like '1.0:all,0.8:10'")

    from genfoundry.vilau.evaluate import evaluate_generation
    from genfoundry.vilau.model import VilaU, VilaUConfig

    if args.quick:
        torch.manual_seed(0)
        model, per_category = VilaU(VilaUConfig.tiny()).eval(), 1
    else:
        model, per_category = VilaU.from_pretrained(args.model), args.per_category
    rows = []
    for temperature, top_k in settings:
        t = time.perf_counter()
        r = evaluate_generation(model, per_category, cfg=args.cfg, seed=args.seed, temperature=temperature,
                                top_k=top_k, top_p=0.96)
        r["seconds"] = time.perf_counter() - t
        rows.append(r)
        print(f"temperature {temperature} top_k {top_k}: {r['score']:.3f} {r['per_category']}", flush=True)
    result = {"model": "random-tiny" if args.quick else args.model, "cfg": args.cfg,
              "validation_seed": args.seed, "prompts": rows[0]["prompts"], "rows": rows}
    name = f"{args.name}_quick" if args.quick else args.name
    categories = list(rows[0]["per_category"])
    md = [(f"Model {result['model']}, cfg {args.cfg}, top-p 0.96, {result['prompts']} validation prompts "
           f"(seed {args.seed}), CPU. Temperature 0 = greedy."), "",
          "| temperature | top-k | score | " + " | ".join(categories) + " | seconds |",
          "| ---: | ---: | ---: | " + " | ".join("---:" for _ in categories) + " | ---: |"]
    md += [f"| {r['temperature']} | {r['top_k'] or 'all'} | {r['score']:.3f} | "
           + " | ".join(f"{r['per_category'][c]:.2f}" for c in categories) + f" | {r['seconds']:.0f} |" for r in rows]
    write_results(name, result, "\n".join(md), out_dir=args.results, default_dir=RESULTS, env=environment("cpu"),
                  title="VILA-U sampling study")
    print("\n".join(md))


if __name__ == "__main__":
    main()
