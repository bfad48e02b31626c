"""Benchmark (a): ReLU linear attention vs softmax attention on CPU, 256 -> 16384 tokens.

Three levels, each measured side by side in one run on the same inputs:
- kernel: the attention operator alone on q, k, v [1, heads, N, 32] (ours: O(N d^2); softmax via
  torch's scaled_dot_product_attention, flash kernel on CPU: O(N^2 d));
- attention: the full self-attention module (q/k/v/out projections + kernel);
- block: a whole SANA transformer block (self-attention, cross-attention to 300 text positions,
  Mix-FFN), the same weights with the self-attention kernel switched to softmax.
Width 1152 / 36 heads of 32 (SANA-0.6B), batch 1, fp32. Token counts are square latent grids
(256 = 16x16 = a 512 px image at f32, 16384 = 128x128 = 4096 px).

    python benchmarks/sana_linear_attention.py [--threads 1] [--max-tokens 16384]
    python benchmarks/sana_linear_attention.py --quick
Writes benchmarks/results/sana_linear_attention{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

import torch
from harness import environment, time_fn, write_results

from genfoundry.nn import relu_linear_attention, softmax_attention
from genfoundry.sana.transformer import SanaBlock, named_config


def timed(fn, repeats: int, clock) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    return time_fn(fn, warmup=1, repeat=repeats, clock=clock)["median_ms"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small width and token counts (smoke test)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--levels", default="kernel,attention,block")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="cpu: process CPU time (robust on a shared machine; use with --threads 1); wall: elapsed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cfg = named_config("sana-0.6b")
    sides = [s for s in (16, 32, 64, 128) if s * s <= args.max_tokens]
    if args.quick:
        cfg = dataclasses.replace(cfg, num_attention_heads=4, num_cross_attention_heads=2,
                                  cross_attention_head_dim=64, cross_attention_dim=128)
        sides = [4, 8, 16]
    levels = args.levels.split(",")
    heads, head_dim, dim = cfg.num_attention_heads, cfg.attention_head_dim, cfg.inner_dim
    torch.manual_seed(0)
    linear_block = SanaBlock(cfg).eval()
    softmax_block = copy.deepcopy(linear_block)
    softmax_block.attn1.kernel = "softmax"
    text = torch.randn(1, 300, dim)
    t6 = torch.randn(1, 6 * dim)

    rows = []
    with torch.inference_mode():
        for side in sides:
            tokens = side * side
            repeats = 3 if tokens <= 4096 else 1
            q, k, v = (torch.randn(1, heads, tokens, head_dim) for _ in range(3))
            x = torch.randn(1, tokens, dim)
            cases = {
                "kernel": (lambda: relu_linear_attention(q, k, v), lambda: softmax_attention(q, k, v)),
                "attention": (lambda: linear_block.attn1(x), lambda: softmax_block.attn1(x)),
                "block": (lambda: linear_block(x, t6, text, None, side, side),
                          lambda: softmax_block(x, t6, text, None, side, side)),
            }
            for level in levels:
                linear_fn, softmax_fn = cases[level]
                lin, soft = timed(linear_fn, repeats, clock), timed(softmax_fn, repeats, clock)
                rows.append({"level": level, "tokens": tokens, "linear_ms": 1000 * lin, "softmax_ms": 1000 * soft,
                             "speedup": soft / lin, "repeats": repeats})
                print(f"{level:9s} {tokens:6d} tokens: linear {1000 * lin:9.1f} ms  softmax {1000 * soft:9.1f} ms  "
                      f"{soft / lin:6.1f}x", flush=True)

    # growth: cost ratio per 4x tokens (linear ~4x, softmax ~16x for the kernel)
    for row in rows:
        prev = [r for r in rows if r["level"] == row["level"] and r["tokens"] * 4 == row["tokens"]]
        if prev:
            row["linear_growth_4x"] = row["linear_ms"] / prev[0]["linear_ms"]
            row["softmax_growth_4x"] = row["softmax_ms"] / prev[0]["softmax_ms"]
    meta = {"threads": torch.get_num_threads(), "clock": args.clock,
            "width": dim, "heads": heads, "head_dim": head_dim, "batch": 1, "dtype": "float32"}
    name = "sana_linear_attention_quick" if args.quick else "sana_linear_attention"
    lines = [
        f"Width {dim}, {heads} heads x {head_dim}, batch 1, fp32; {'process CPU' if args.clock == 'cpu' else 'wall'} "
        "time, median of 3 runs (1 run above 4096 tokens). Growth = time ratio when the token count grows 4x "
        "(ideal: 4x linear, 16x quadratic).",
        "",
        "| level | tokens | linear ms | softmax ms | softmax / linear | linear growth (4x tokens) | softmax growth |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        growth = (f"{r['linear_growth_4x']:.1f}x | {r['softmax_growth_4x']:.1f}x" if "linear_growth_4x" in r
                  else " | ")
        lines.append(f"| {r['level']} | {r['tokens']} | {r['linear_ms']:.1f} | {r['softmax_ms']:.1f} | "
                     f"{r['speedup']:.1f}x | {growth} |")
    _, md_path = write_results(name, {"meta": meta, "rows": rows}, "\n".join(lines), env=environment("cpu"),
                               title=f"ReLU linear attention vs softmax attention, CPU, {meta['threads']} thread(s)")
    print(json.dumps({"written": str(md_path)}))


if __name__ == "__main__":
    main()
