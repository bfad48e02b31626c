"""Benchmark (b): our SanaTransformer vs diffusers' SanaTransformer2DModel, CPU forward latency.

Same config and the same weights (ours is loaded from the diffusers model's state dict), fp32,
text of 300 positions padded on the right as the pipeline produces it, CFG batch 2. The two models
run interleaved (ours, diffusers, ours, ...) so machine load hits both alike; the median is reported.
SANA-0.6B block shapes (width 1152, 36 linear heads, 16x72 cross heads, FFN 2880) with fewer layers:
every block is identical, so the per-forward ratio is the full model's ratio.

    python benchmarks/sana_vs_diffusers_cpu.py            # 512 and 1024 px, 2 layers
    python benchmarks/sana_vs_diffusers_cpu.py --quick    # tiny smoke run
Writes benchmarks/results/sana_vs_diffusers_cpu{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from harness import environment, time_interleaved, write_results

from genfoundry.sana import SanaTransformer, named_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config, one size (smoke test)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--prompt-tokens", type=int, default=40, help="unpadded text positions of the prompt")
    args = parser.parse_args()

    import diffusers

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(named_config("sana-0.6b"), num_layers=args.layers)
    sizes = [(512, 16), (1024, 32)]
    if args.quick:
        cfg = dataclasses.replace(cfg, num_attention_heads=4, num_cross_attention_heads=2, cross_attention_head_dim=64,
                                  cross_attention_dim=128, caption_channels=64, num_layers=1)
        sizes, args.repeats = [(256, 8)], 2
    torch.manual_seed(0)
    ref = diffusers.SanaTransformer2DModel(**dataclasses.asdict(cfg)).eval()
    ours = SanaTransformer.from_state_dict(ref.state_dict(), cfg)
    batch, text_len = 2, 300

    rows = []
    for pixels, side in sizes:
        gen = torch.Generator().manual_seed(pixels)
        latents = torch.randn(batch, cfg.in_channels, side, side, generator=gen)
        timestep = torch.tensor([500.0] * batch)
        text = torch.randn(batch, text_len, cfg.caption_channels, generator=gen)
        mask = torch.zeros(batch, text_len, dtype=torch.long)
        mask[0, :1] = 1  # CFG: the negative prompt "" is BOS only
        mask[1, : args.prompt_tokens] = 1
        runs = {
            "ours": lambda _: ours(latents, timestep, text, mask),
            "diffusers": lambda _: ref(latents, encoder_hidden_states=text, timestep=timestep,
                                       encoder_attention_mask=mask).sample,
        }
        with torch.inference_mode():  # one untimed round first; the timed rounds' first outputs give the parity
            timing, outputs = time_interleaved(runs, repeat=args.repeats, warmup=1,
                                               clocks={"wall": time.perf_counter, "cpu": time.process_time})
        med = {k: t["wall"]["median_ms"] for k, t in timing.items()}
        med_cpu = {k: t["cpu"]["median_ms"] for k, t in timing.items()}
        rows.append({
            "pixels": pixels, "latent": f"{side}x{side}", "tokens": side * side, "batch": batch,
            "ours_ms": med["ours"], "diffusers_ms": med["diffusers"], "speedup": med["diffusers"] / med["ours"],
            "ours_cpu_ms": med_cpu["ours"], "diffusers_cpu_ms": med_cpu["diffusers"],
            "cpu_speedup": med_cpu["diffusers"] / med_cpu["ours"],
            "ours_all_ms": timing["ours"]["wall"]["all_ms"], "diffusers_all_ms": timing["diffusers"]["wall"]["all_ms"],
            "max_abs_diff": (outputs["ours"][0] - outputs["diffusers"][0]).abs().max().item(),
        })
        r = rows[-1]
        print(f"{pixels}px: wall ours {r['ours_ms']:.0f} ms / diffusers {r['diffusers_ms']:.0f} ms "
              f"({r['speedup']:.2f}x); CPU time ours {r['ours_cpu_ms']:.0f} / diffusers {r['diffusers_cpu_ms']:.0f} ms "
              f"({r['cpu_speedup']:.2f}x); max |diff| {r['max_abs_diff']:.1e}", flush=True)

    meta = {
        "threads": torch.get_num_threads(), "diffusers": diffusers.__version__, "config": dataclasses.asdict(cfg),
        "repeats": args.repeats, "prompt_tokens": args.prompt_tokens, "text_positions": text_len,
    }
    name = "sana_vs_diffusers_cpu_quick" if args.quick else "sana_vs_diffusers_cpu"
    lines = [
        f"Width {cfg.inner_dim}, {cfg.num_layers} layers, batch {batch} (CFG), text {text_len} positions "
        f"({args.prompt_tokens} used by the prompt, 1 by the negative), median of {args.repeats} interleaved runs; "
        f"diffusers {meta['diffusers']}. CPU ms = process CPU time "
        "(robust to other processes on a shared machine); wall ms = elapsed time.",
        "",
        "| image px | latent | ours CPU ms | diffusers CPU ms | speedup (CPU time) | ours wall ms | diffusers wall ms "
        "| speedup (wall) | max abs diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['pixels']} | {r['latent']} | {r['ours_cpu_ms']:.0f} | {r['diffusers_cpu_ms']:.0f} | "
                     f"{r['cpu_speedup']:.2f}x | {r['ours_ms']:.0f} | {r['diffusers_ms']:.0f} | "
                     f"{r['speedup']:.2f}x | {r['max_abs_diff']:.1e} |")
    _, md_path = write_results(name, {"meta": meta, "rows": rows}, "\n".join(lines), env=environment("cpu"),
                               title=f"SanaTransformer vs diffusers SanaTransformer2DModel, CPU fp32 forward, "
                                     f"{meta['threads']} thread(s)")
    print(json.dumps({"written": str(md_path)}))


if __name__ == "__main__":
    main()
