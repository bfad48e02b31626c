"""Layout guidance study: position score of a SANA model against the layout-guidance scale.

Layout guidance (genfoundry/sana/layout.py) acts only on captions that name a relation, so the study
generates the position-category prompts of a validation stream (not the held-out stream of
`genfoundry eval sana`, seed 0) at several scales, with the same noise per prompt at every scale, and
scores them with `genfoundry.shapes.evaluate`. Scale 0 is the model without layout guidance. The scale
the model ships with is chosen here, on validation prompts; the held-out score is measured afterwards
by `genfoundry eval sana`.

    python benchmarks/sana_layout_study.py [--model sana-shapes] [--prompts 100] [--seed 7919]
        [--scales 0,3,6,9,12,18]
    python benchmarks/sana_layout_study.py --quick       # 2 prompts, scales 0 and 12 (smoke test)

Writes benchmarks/results/sana_layout_study{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from harness import environment, write_results
from tqdm import tqdm

from genfoundry.sana import SanaPipeline
from genfoundry.sana.evaluate import heldout_prompts, score_images


def position_prompts(count: int, seed: int) -> list[tuple[str, str]]:
    """The first `count` position-category prompts of the prompt stream `seed` (every fifth prompt)."""
    return [p for p in heldout_prompts(5 * count, seed) if p[1] == "position"][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sana-shapes")
    parser.add_argument("--prompts", type=int, default=100, help="position prompts")
    parser.add_argument("--seed", type=int, default=7919, help="prompt stream and noise seed (validation: not 0)")
    parser.add_argument("--scales", default="0,3,6,9,12,18")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="2 prompts at scales 0 and 12 (smoke test)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.scales = 2, "0,12"
    scales = [float(s) for s in args.scales.split(",")]
    if args.prompts < 1 or any(s < 0 for s in scales):
        parser.error("--prompts must be >= 1 and every scale >= 0")

    pipe = SanaPipeline.from_pretrained(args.model)
    pairs = position_prompts(args.prompts, args.seed)
    seeds = [args.seed * 1000 + i for i in range(len(pairs))]
    rows = []
    for scale in scales:
        start = time.perf_counter()
        images = []
        for s in tqdm(range(0, len(pairs), args.batch_size), desc=f"layout {scale:g}"):
            chunk = pairs[s : s + args.batch_size]
            images += pipe([c for c, _ in chunk], seed=seeds[s : s + len(chunk)], layout_guidance=scale)
        report = score_images(images, pairs)
        rows.append({"layout_guidance": scale, "position_score": report.overall,
                     "failed_constraints": report.failures.get("position", {}),
                     "seconds": time.perf_counter() - start})
        print(f"layout guidance {scale:g}: position {report.overall:.3f}", flush=True)

    cfg = pipe.config
    result = {"model": args.model, "prompts": len(pairs), "seed": args.seed, "steps": cfg.steps,
              "guidance_scale": cfg.guidance_scale, "sampler": cfg.sampler,
              "layout_until_sigma": cfg.layout_until_sigma, "model_layout_guidance": cfg.layout_guidance,
              "threads": torch.get_num_threads(), "rows": rows}
    lines = [
        (f"{cfg.sampler}, {cfg.steps} steps, CFG {cfg.guidance_scale}; layout guidance acts "
         f"while sigma > {cfg.layout_until_sigma}. Same noise per prompt at every scale; 0 = no layout guidance."),
        "",
        "| layout guidance | position score | failed: relation | colour | present | extra objects | seconds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        f = r["failed_constraints"]
        lines.append(f"| {r['layout_guidance']:g} | {r['position_score']:.3f} | {f.get('relation', 0)} | "
                     f"{f.get('color', 0)} | {f.get('present', 0)} | {f.get('no_extra_objects', 0)} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", f"The model's setting (genfoundry_sana.json): layout guidance {cfg.layout_guidance:g}."]
    write_results("sana_layout_study" + ("_quick" if args.quick else ""), result, "\n".join(lines),
                  out_dir=args.results, env=environment(str(pipe.device)),
                  title=f"Layout guidance study: `{args.model}` on {len(pairs)} position prompts "
                        f"(validation seed {args.seed})")


if __name__ == "__main__":
    main()
