"""VILA-U decoding speed: image-generation tokens/s with vs without the KV cache, and answer latency.

    python benchmarks/vilau_speed.py                       # the embedded vila-u-shapes (or --model DIR)
    python benchmarks/vilau_speed.py --random --quick      # random weights, tiny preset, CPU smoke test

Both ways decode the same prompts with the same seed side by side in one run (the codes must agree);
an image token is one position (D residual codes). Writes benchmarks/results/vilau_speed{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from harness import environment, time_fn, time_interleaved, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vila-u-shapes")
    parser.add_argument("--random", action="store_true", help="Random weights instead of a trained model.")
    parser.add_argument("--quick", action="store_true", help="Tiny preset (with --random), fewer repeats.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()

    from genfoundry.shapes import render
    from genfoundry.vilau.generate import DecodeStream, generate_codes
    from genfoundry.vilau.model import VilaU, VilaUConfig

    torch.manual_seed(0)
    if args.random:
        model = VilaU(VilaUConfig.tiny() if args.quick else VilaUConfig()).to(args.device).eval()
    else:
        model = VilaU.from_pretrained(args.model, device=args.device)
    device = model.device
    repeats = 1 if args.quick else args.repeats
    tokens_per_image = model.config.image_tokens
    prompts = ["a red circle to the left of a blue square", "two green triangles", "a yellow square",
               "a blue circle and a red triangle", "three red circles", "a green square above a yellow circle",
               "a blue triangle", "two yellow squares"] * 4
    rows = []
    generate_codes(model, prompts[:2], seed=0, use_cache=True)  # warm-up
    same = True
    # without the cache every position re-runs the whole sequence, so the gap grows with the sequence
    # (a clip: its frames' tokens concatenated) and with the rows decoded together (a batch of captions,
    # each with its CFG row); "transformers" is the same cached decoding through the transformers forward
    cases = [("image", None, 1), (f"clip of {model.config.video_frames} frames", model.config.video_frames, 1),
             ("batch of 8 images", None, 8), ("batch of 32 images", None, 32)]
    default_backend = DecodeStream(model).backend
    speedups, lean_gain = {}, None
    for what, frames, batch in cases:
        rate = {}
        tokens = tokens_per_image * (frames or 1) * batch
        ways = [(True, None), (False, None)] + ([(True, "transformers")] if not frames and batch == 1 else [])
        # the ways take turns within each repeat (each with the repeat's seed), so a drift in the machine's
        # speed reaches all of them alike instead of whichever ran last; each keeps its best time
        case_repeats = repeats * (2 if batch == 1 and not frames else 1)  # the short case: more tries

        def way(use_cache, backend, frames=frames, batch=batch):
            return lambda r: generate_codes(model, prompts[:batch], frames=frames, cfg=3.0, seed=r,
                                            use_cache=use_cache, backend=backend)

        timing, codes = time_interleaved({w: way(*w) for w in ways}, repeat=case_repeats, device=str(device))
        same = same and all(bool((c == first).all()) for w in ways for c, first in zip(codes[w], codes[ways[0]]))
        for use_cache, backend in ways:
            best = timing[use_cache, backend]["wall"]["min_ms"] / 1000
            rate[use_cache, backend] = tokens / best
            rows.append({"what": what, "image_tokens": tokens, "kv_cache": use_cache,
                         "backend": backend or default_backend, "seconds": best, "image_tokens_per_s": tokens / best,
                         "tries": timing[use_cache, backend]["wall"]["calls"]})
        speedups[what] = rate[True, None] / rate[False, None]
        if (True, "transformers") in rate:
            lean_gain = rate[True, None] / rate[True, "transformers"]
    speedup = speedups["image"]

    image = render("a red circle and a blue square", size=model.config.tower.image_size, seed=0)
    latency = time_fn(lambda: model.answer(image, "what color is the circle?"), warmup=1,
                      repeat=5 if args.quick else 20, device=str(device))
    env = environment(str(device))
    result = {
        "model": "random-" + ("tiny" if args.quick else "shapes") if args.random else args.model,
        "image_tokens_per_image": tokens_per_image, "depth": model.config.tower.depth, "cfg": 3.0,
        "generation": rows, "kv_cache_speedup": speedup, "kv_cache_speedups": speedups,
        "cached_equals_recomputed": same, "lean_over_transformers_cached": lean_gain,
        "answer_latency_ms": {"median": latency["median_ms"], "min": latency["min_ms"]},
    }
    name = "vilau_speed_quick" if args.quick else "vilau_speed"
    md = [f"model: {result['model']}; {tokens_per_image} image tokens x depth {result['depth']}, cfg 3", "",
          "| output | image tokens | KV cache | decoder | seconds | image tokens / s |",
          "| --- | ---: | --- | --- | ---: | ---: |"]
    md += [f"| {r['what']} | {r['image_tokens']} | {'yes' if r['kv_cache'] else 'no'} | {r['backend']} | "
           f"{r['seconds']:.3f} | {r['image_tokens_per_s']:.1f} |" for r in rows]
    md += ["", "KV-cache speed-up: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items())
           + f" (same codes every way: {same})"]
    if lean_gain:
        md += [f"lean decoder over the transformers forward, cached, one image: {lean_gain:.2f}x"]
    md += [f"answer latency: median {result['answer_latency_ms']['median']:.1f} ms"]
    write_results(name, result, "\n".join(md), out_dir=args.results, env=env, title="VILA-U decoding speed")
    print("\n".join(md))


if __name__ == "__main__":
    main()
