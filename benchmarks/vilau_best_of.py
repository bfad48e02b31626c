"""VILA-U best-of-N: the generation score when a ranker keeps one of N images.

One model draws N candidates for every validation prompt (seed 7919: neither a training stream nor
the held-out evaluation's), in the order `generate_codes(..., candidates=N)` draws them (each prompt
repeated N times in one batch). Each scoring model (`--models LABEL=FOLDER`) ranks a prompt's first n
candidates with each of `generate.RANKERS` (`--rankers`): "alignment", its vision tower's
text-alignment head (`alignment_scores`); "caption", its LLM's likelihood of the caption given the
image (`caption_log_likelihoods`); "answers", its likelihood of the answers the caption implies to
questions about the image (`answer_log_likelihoods`); "caption+answers", the sum of the two; the detector of `genfoundry.shapes.evaluate` judges the kept image. Also reported: the first draw alone (n = 1, what
`candidates=1` gives), the oracle (any of the n is right: the ceiling of any ranking) and the time to
draw N images per prompt against one.

    python benchmarks/vilau_best_of.py --models shipped=vila-u-shapes hard=runs/x/model
    python benchmarks/vilau_best_of.py --rankers caption,alignment,answers,caption+answers --name vilau_best_of_answers
    python benchmarks/vilau_best_of.py --quick            # random tiny model, a smoke test

Writes benchmarks/results/NAME{,_quick}.{json,md}.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.vilau_validation import VALIDATION_SEED, comparison_parser, model_pairs, models_to_compare
from harness import environment, write_results  # noqa: E402 (on the path through vilau_validation)


def validation_prompts(per_category: int, size: int, seed: int) -> list[tuple[str, str]]:
    from genfoundry.shapes import CATEGORIES, sample_scene

    rng = random.Random(f"best-of:{seed}")
    return [(c, sample_scene(rng, size, c).caption) for c in CATEGORIES for _ in range(per_category)]


def kept_scores(correct: torch.Tensor, scores: torch.Tensor, categories: list[str], n: int) -> dict:
    """correct/scores [P, N]: the score when the best of the first n by `scores` is kept."""
    kept = correct[:, :n].gather(1, scores[:, :n].argmax(1, keepdim=True))[:, 0]
    return summarize(kept, categories)


def summarize(right: torch.Tensor, categories: list[str]) -> dict:
    per = defaultdict(list)
    for c, v in zip(categories, right.tolist()):
        per[c].append(v)
    return {"score": float(right.float().mean()), "per_category": {c: sum(v) / len(v) for c, v in per.items()}}


def main() -> None:
    parser = comparison_parser(__doc__, "vilau_best_of")
    parser.add_argument("--draw", default="vila-u-shapes", help="The model that draws (zoo name or folder).")
    parser.add_argument("--candidates", type=int, default=8, help="N: images drawn per prompt")
    parser.add_argument("--per-category", type=int, default=40, help="validation prompts per category")
    parser.add_argument("--chunk", type=int, default=25, help="prompts per decoding batch (times N rows)")
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED)
    parser.add_argument("--rankers", default="caption+answers,caption,alignment", help="comma-separated generate.RANKERS names")
    args = parser.parse_args()
    pairs = model_pairs(parser, args.models)
    if args.candidates < 1 or args.per_category < 1 or args.chunk < 1:
        parser.error("--candidates, --per-category and --chunk must be >= 1")

    from genfoundry.shapes import evaluate
    from genfoundry.vilau.generate import RANKERS, generate_codes
    from genfoundry.vilau.model import VilaU, VilaUConfig

    rankers = [r.strip() for r in args.rankers.split(",") if r.strip()]
    if not rankers or any(r not in RANKERS for r in rankers):
        parser.error(f"--rankers takes names from {', '.join(RANKERS)}; got {args.rankers!r}")
    if args.quick:
        torch.manual_seed(0)
        drawer, per_category, n_max = VilaU(VilaUConfig.tiny()).eval(), 1, min(args.candidates, 2)
    else:
        drawer, per_category, n_max = VilaU.from_pretrained(args.draw), args.per_category, args.candidates
    prompts = validation_prompts(per_category, drawer.config.tower.image_size, args.seed)
    categories = [c for c, _ in prompts]
    generate_codes(drawer, [prompts[0][1]] * 2, cfg=args.cfg, seed=0)  # warm-up: the first call pays one-off costs
    codes, seconds_n, seconds_1 = [], 0.0, 0.0
    for k in tqdm(range(0, len(prompts), args.chunk), desc="drawing"):
        chunk = [p for _, p in prompts[k:k + args.chunk]]
        t = time.perf_counter()
        drawn = generate_codes(drawer, [p for p in chunk for _ in range(n_max)], cfg=args.cfg, seed=args.seed + k)
        seconds_n += time.perf_counter() - t
        t = time.perf_counter()
        generate_codes(drawer, chunk, cfg=args.cfg, seed=args.seed + k)
        seconds_1 += time.perf_counter() - t
        codes.append(drawn[:, 0].reshape(len(chunk), n_max, *drawn.shape[2:]))
    codes = torch.cat(codes)  # [P, N, g, g, D]
    captions = [p for _, p in prompts]
    correct = torch.tensor([[int(evaluate(drawer.detokenize(c), cap)["correct"]) for c in cands]
                            for cands, cap in zip(codes, captions)])
    ns = [n for n in (1, 2, 4, 8, 16, 32) if n <= n_max]
    rows = [{"label": "first draw", "n": 1, **summarize(correct[:, 0], categories)}]
    drawn_captions = [cap for cap in captions for _ in range(n_max)]
    for label, where, scorer in models_to_compare(pairs, args.quick):
        for ranker in rankers:
            t = time.perf_counter()
            scores = torch.cat([RANKERS[ranker](scorer, codes[i:i + 64].flatten(0, 1),
                                                drawn_captions[i * n_max:(i + 64) * n_max])
                                for i in range(0, len(prompts), 64)]).reshape(len(prompts), n_max)
            seconds = time.perf_counter() - t
            name = f"{label}, {ranker}"
            rows += [{"label": name, "model": where, "ranker": ranker, "n": n, "seconds_ranking": seconds,
                      **kept_scores(correct, scores, categories, n)} for n in ns[1:]]
            print(name, [(r["n"], round(r["score"], 3)) for r in rows if r["label"] == name], flush=True)
    rows += [{"label": "oracle (any of n right)", "n": n, **summarize(correct[:, :n].max(1).values, categories)}
             for n in ns[1:]]
    result = {"draw": "random-tiny" if args.quick else args.draw, "cfg": args.cfg,
              "validation_seed": args.seed, "prompts": len(prompts), "candidates": n_max,
              "seconds_best_of": seconds_n, "seconds_one": seconds_1, "rows": rows}
    name = f"{args.name}_quick" if args.quick else args.name
    cats = list(rows[0]["per_category"])
    md = [(f"Drawn by {result['draw']} at cfg {args.cfg} (top-k 900, top-p 0.96), {len(prompts)} validation prompts "
           f"(seed {args.seed}), {n_max} candidates each, CPU. Each scoring model keeps the best of the first n by "
           f"each ranker (alignment: its tower's text-alignment head; caption: its LLM's likelihood of the "
           f"caption given the image; answers: its likelihood of the answers the caption implies to "
           f"questions about the image; caption+answers: the sum); the shapes detector judges the kept image."), "",
          "| scored by | n | score | " + " | ".join(cats) + " |",
          "| --- | ---: | ---: | " + " | ".join("---:" for _ in cats) + " |"]
    md += [f"| {r['label']} | {r['n']} | {r['score']:.3f} | " + " | ".join(f"{r['per_category'][c]:.2f}" for c in cats)
           + " |" for r in rows]
    md += ["", (f"Drawing {n_max} images per prompt took {seconds_n:.0f} s, one image per prompt {seconds_1:.0f} s "
                f"({seconds_n / seconds_1:.2f}x), in batches of {args.chunk} prompts.")]
    timed = {r["label"]: r["seconds_ranking"] for r in rows if "seconds_ranking" in r}
    md += [f"Ranking all {len(prompts) * n_max} candidates: " + ", ".join(f"{k} {v:.0f} s" for k, v in timed.items()) + "."]
    write_results(name, result, "\n".join(md), out_dir=args.results, env=environment("cpu"),
                  title="VILA-U best-of-N generation")
    print("\n".join(md))


if __name__ == "__main__":
    main()
