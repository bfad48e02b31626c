"""Benchmark (c), GPU: SANA-0.6B transformer forward, ours vs diffusers, eager and torch.compile.

SANA-0.6B config with random weights (ours loads the diffusers model's state dict: same weights), bf16,
text of 300 positions (mask: 40 used). Cases: 1024 px batch 1, 1024 px batch 8, 4096 px batch 1
(latents 32x32 / 32x32 / 128x128, f32 DC-AE). Modes: eager, then torch.compile of each transformer
block ("regional": the 28 identical blocks share one compiled graph; the same for both models, so
compile time stays within budget). Timing: CUDA events, warm-up then median of N runs; rows are written
to JSON/markdown as soon as they are measured, so a run cut short keeps what it measured.

    python benchmarks/sana_gpu.py                 # on the GPU machine (~3-4 minutes on an H200)
    python benchmarks/sana_gpu.py --quick         # CPU smoke test: tiny config, small sizes
Writes benchmarks/results/sana_gpu{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import time
from pathlib import Path

import torch

from genfoundry import hub
from genfoundry.sana import SanaTransformer, named_config

RESULTS = Path(__file__).parent / "results"
# Reference numbers quoted in the issue for diffusers on an H200 (not measured here), in ms.
QUOTED_DIFFUSERS_H200 = {("1024", 1): (45.0, 6.0), ("1024", 8): (52.8, 27.9), ("4096", 1): (106.7, 63.9)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return times


def compile_blocks(blocks, mode: str | None) -> None:
    for block in blocks:
        block.compile(mode=mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config on CPU, fp32 (smoke test)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--mode", default=None, help="torch.compile mode (default: inductor default)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=220.0,
                        help="skip cases that would start after this many seconds (results so far are kept)")
    parser.add_argument("--cases", default=None, help="subset, e.g. '1024x1,4096x1' (pixels x batch)")
    args = parser.parse_args()

    import diffusers

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = named_config("sana-0.6b")
    cases = [("1024", 1, 32), ("1024", 8, 32), ("4096", 1, 128)]
    warmup, runs = 3, args.runs
    if args.quick:
        cfg = dataclasses.replace(cfg, num_layers=2, num_attention_heads=4, num_cross_attention_heads=2,
                                  cross_attention_head_dim=64, cross_attention_dim=128, caption_channels=64)
        cases = [("256", 1, 8), ("256", 2, 8), ("1024", 1, 32)]
        warmup, runs = 1, 2
    if args.cases:
        wanted = {tuple(c.split("x")) for c in args.cases.split(",")}
        cases = [c for c in cases if (c[0], str(c[1])) in wanted]
    name = "sana_gpu_quick" if args.quick else "sana_gpu"
    started = time.perf_counter()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    meta = {"device": card, "dtype": str(dtype), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "config": dataclasses.asdict(cfg), "compile": "per-block torch.compile, mode=" + str(args.mode),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "runs": runs}
    rows: list[dict] = []

    def write() -> None:
        hub.write_json_atomic(RESULTS / f"{name}.json", {"meta": meta, "rows": rows})
        lines = [f"# SANA-0.6B transformer forward, ours vs diffusers ({card}, {dtype})", "",
                 *([f"Skipped (time budget): {', '.join(meta['skipped'])}", ""] if meta.get("skipped") else []),
                 f"Random weights, text 300 positions; median of {runs} runs after warm-up; compile = "
                 f"{meta['compile']}; {meta['date']}, torch {meta['torch']}, diffusers {meta['diffusers']}. "
                 "Quoted = the issue's diffusers H200 numbers, for reference only.", "",
                 "| image px | batch | mode | ours ms | diffusers ms | diffusers / ours | quoted diffusers ms | compile s (ours / diffusers) |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            quoted = QUOTED_DIFFUSERS_H200.get((r["pixels"], r["batch"]))
            q = "" if quoted is None or args.quick else f"{quoted[0 if r['mode'] == 'eager' else 1]}"
            comp = f"{r['ours_compile_s']:.0f} / {r['diffusers_compile_s']:.0f}" if "ours_compile_s" in r else ""
            lines.append(f"| {r['pixels']} | {r['batch']} | {r['mode']} | {r['ours_ms']:.2f} | {r['diffusers_ms']:.2f} | "
                         f"{r['speedup']:.2f}x | {q} | {comp} |")
        hub.write_text_atomic(RESULTS / f"{name}.md", "\n".join(lines) + "\n")

    torch.manual_seed(0)
    with torch.device(device):
        ref = diffusers.SanaTransformer2DModel(**dataclasses.asdict(cfg))
    ref = ref.to(dtype).eval()
    ours = SanaTransformer.from_state_dict(ref.state_dict(), cfg, device=device).eval()

    def inputs(batch: int, side: int):
        gen = torch.Generator(device=device).manual_seed(side * 100 + batch)
        latents = torch.randn(batch, cfg.in_channels, side, side, generator=gen, device=device, dtype=dtype)
        text = torch.randn(batch, 300, cfg.caption_channels, generator=gen, device=device, dtype=dtype)
        mask = torch.zeros(batch, 300, dtype=torch.long, device=device)
        mask[:, :40] = 1
        return latents, torch.full((batch,), 500.0, device=device), text, mask

    def run_all(mode: str) -> None:
        for pixels, batch, side in cases:
            if time.perf_counter() - started > args.budget_s:
                print(f"skipped {mode} {pixels}px batch {batch}: past the {args.budget_s:.0f} s budget", flush=True)
                meta.setdefault("skipped", []).append(f"{mode} {pixels}px b{batch}")
                write()
                continue
            latents, t, text, mask = inputs(batch, side)
            fns = {"ours": lambda: ours(latents, t, text, mask),
                   "diffusers": lambda: ref(latents, encoder_hidden_states=text, timestep=t,
                                            encoder_attention_mask=mask, return_dict=False)[0]}
            row = {"pixels": pixels, "batch": batch, "mode": mode}
            with torch.inference_mode():
                for who, fn in fns.items():
                    start = time.perf_counter()
                    fn()  # first call: compiles in compile mode
                    sync(device)
                    if mode != "eager":
                        row[f"{who}_compile_s"] = time.perf_counter() - start
                    times = measure(fn, device, warmup, runs if side <= 32 else max(3, runs // 2))
                    row[f"{who}_ms"] = statistics.median(times)
                a, b = fns["ours"]().float(), fns["diffusers"]().float()
                row["max_abs_diff"] = (a - b).abs().max().item()
            row["speedup"] = row["diffusers_ms"] / row["ours_ms"]
            rows.append(row)
            write()
            print(row, flush=True)

    run_all("eager")
    if not args.no_compile:
        compile_blocks(ours.transformer_blocks, args.mode)
        compile_blocks(ref.transformer_blocks, args.mode)
        run_all("compile")
    print(f"wrote {RESULTS / name}.md")


if __name__ == "__main__":
    main()
