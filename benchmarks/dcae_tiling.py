"""DC-AE tiled vs untiled encode/decode: peak memory, time, and how far tiling moves the output.

Each (operation, image size, mode) runs in a fresh subprocess with the same seeded model and
input, so peak memory is that run's alone:
- CPU: the process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs just
  before the call) minus its resident set right before it;
- CUDA: torch.cuda.max_memory_allocated() minus the memory allocated right before it.
The peak includes the output tensor (column "output MiB").

Default (CPU): the official dc-ae-f32c32 layout (6 stages, depths 2/3, EfficientViT in the last 3,
f32, 32 latent channels) at 1/16 of its widths (8..64 channels), because the full-width model at
2048 px takes many minutes on a shared 2-core CPU. Memory scales with width, so read the ratio
tiled / untiled, not the absolute MiB. `--config dc-ae-f32c32 --device cuda` runs the real widths.

    python benchmarks/dcae_tiling.py                      # CPU, 1024 and 2048 px
    python benchmarks/dcae_tiling.py --quick              # smoke test: 256 px decode, 128 px tiles
    python benchmarks/dcae_tiling.py --device cuda --config dc-ae-f32c32 --dtype bfloat16 \
        --sizes 1024 2048 4096 --tile-size 1024 --tile-overlap 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import environment, synchronize, write_results

from genfoundry import hub
from genfoundry.sana.dcae import DCAE, DCAEConfig

NAME = "dcae_tiling"
# untiled; every stage tiled (bounded memory); attention stages whole + conv stages tiled (see DCAE.decode)
MODES = ("untiled", "tiled", "tiled-global-attn")


def make_config(name: str) -> DCAEConfig:
    if name == "f32-narrow":
        # dc-ae-f32c32's structure with widths 128..1024 divided by 16.
        official = DCAEConfig.named("dc-ae-f32c32")
        return DCAEConfig.make(
            compression=32, latent_channels=32, base_width=8, encoder_depth=official.encoder_layers_per_block,
            decoder_depth=official.decoder_layers_per_block, attention_stages=3, head_dim=32,
            downsample="Conv", upsample="interpolate",
        )
    return DCAEConfig.named(name)


def make_input(op: str, size: int, f: int, latent_channels: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if op == "decode":
        return torch.randn(1, latent_channels, size // f, size // f, generator=gen)
    # a smooth image: coarse noise upsampled, in [-1, 1]
    coarse = torch.rand(1, 3, max(size // 16, 1), max(size // 16, 1), generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------
# child: one measurement


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    with device:  # initialise where it runs (fast on a GPU); the seed makes every process build the same weights
        model = DCAE.from_config(make_config(spec["config"]), seed=0).to(dtype=dtype).eval()
    x = make_input(spec["op"], spec["size"], model.spatial_compression_ratio, model.latent_channels)
    x = x.to(device=device, dtype=dtype)
    fn = model.decode if spec["op"] == "decode" else model.encode
    kwargs = {"tile": False}
    if spec["mode"] != "untiled":
        kwargs = {"tile": True, "tile_size": spec["tile_size"], "tile_overlap": spec["tile_overlap"],
                  "global_attention": spec["mode"] == "tiled-global-attn"}
    with torch.inference_mode():
        if device.type == "cuda":
            crop = spec["tile_size"] // (model.spatial_compression_ratio if spec["op"] == "decode" else 1)
            fn(x[..., :crop, :crop], tile=False)  # warm up kernels outside the measurement
            synchronize("cuda")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            start = time.perf_counter()
            out = fn(x, **kwargs)
            synchronize("cuda")
            seconds = time.perf_counter() - start
            peak_mib = (torch.cuda.max_memory_allocated() - before) / 2**20
            method = "torch.cuda.max_memory_allocated"
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                method = "VmHWM (reset) - VmRSS"
            except OSError:
                method = "VmHWM (not resettable: upper bound) - VmRSS"
            before = _rss_kib("VmRSS")
            start = time.perf_counter()
            out = fn(x, **kwargs)
            seconds = time.perf_counter() - start
            peak_mib = (_rss_kib("VmHWM") - before) / 1024
    hub.save_file({"out": out.float().cpu()}, spec["out_path"])
    result = {"seconds": seconds, "peak_mib": peak_mib, "method": method,
              "output_mib": out.numel() * out.element_size() / 2**20, "shape": list(out.shape)}
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------------------------
# parent: run every measurement side by side, compare, write the tables


def measure(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        if "out of memory" in tail.lower():
            return {"error": "out of memory"}
        raise RuntimeError(f"measurement {spec} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="f32-narrow", help="f32-narrow or a DCAEConfig.named name")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="square image sizes (px)")
    parser.add_argument("--ops", nargs="+", default=["decode", "encode"], choices=["decode", "encode"])
    parser.add_argument("--tile-size", type=int, default=512, help="tile size in image pixels")
    parser.add_argument("--tile-overlap", type=int, default=128, help="tile overlap in image pixels")
    parser.add_argument("--untiled-max", type=int, default=None, help="skip untiled runs above this size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke test: decode at 256 px, 128 px tiles")
    parser.add_argument("--name", default=None,
                        help="results file stem (default dcae_tiling, dcae_tiling_cuda; _quick added with --quick)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.name is None:
        args.name = (NAME if args.device == "cpu" else f"{NAME}_{args.device}") + ("_quick" if args.quick else "")
    if args.quick:
        args.sizes, args.ops, args.tile_size, args.tile_overlap = [256], ["decode"], 128, 32
    config = make_config(args.config)
    f = config.spatial_compression_ratio
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops:
            for size in args.sizes:
                untiled = None
                for mode in MODES:
                    if mode == "untiled" and args.untiled_max is not None and size > args.untiled_max:
                        continue
                    spec = {"op": op, "size": size, "mode": mode, "config": args.config, "device": args.device,
                            "dtype": args.dtype, "threads": args.threads, "tile_size": args.tile_size,
                            "tile_overlap": args.tile_overlap, "out_path": f"{tmp}/{op}-{size}-{mode}.safetensors"}
                    print(f"{op} {size}px {mode} ...", flush=True)
                    result = measure(spec)
                    row = {"op": op, "size": size, "latents": size // f, "mode": mode, **result}
                    if "error" not in result:
                        out = hub.load_file(spec["out_path"])[0]["out"]
                        if mode == "untiled":
                            untiled = out
                        elif untiled is not None:
                            diff = (out - untiled).abs()
                            row.update(mean_abs_err=diff.mean().item(), max_abs_err=diff.max().item(),
                                       untiled_std=untiled.std().item())
                    rows.append(row)
                    print("   ", row, flush=True)
    with torch.device("meta"):
        params_m = sum(p.numel() for p in DCAE(config).parameters()) / 1e6
    meta = {
        "config": args.config, "device": args.device, "dtype": args.dtype, "threads": args.threads,
        "tile_size_px": args.tile_size, "tile_overlap_px": args.tile_overlap, "params_m": params_m, "compression": f,
    }
    title = (f"DC-AE tiling: {meta['config']} ({meta['params_m']:.1f}M params, f{meta['compression']}), "
             f"{meta['dtype']}, {meta['threads']} thread(s)")
    markdown = results_markdown(meta, rows)
    write_results(args.name, {"meta": meta, "rows": rows}, markdown, out_dir=args.results_dir,
                  env=environment(args.device), title=title)
    print(markdown)


def results_markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"Tiles {meta['tile_size_px']} px with {meta['tile_overlap_px']} px overlap; one fresh process per row; "
        f"peak = extra memory during the call ({rows[0].get('method', '') if rows else ''}), output included. "
        "Errors: tiled vs untiled output of the same model and input (random weights).",
        "",
        "Modes: `untiled`; `tiled` = every stage per tile (memory bounded by one tile); `tiled-global-attn` = "
        "the low-resolution attention stages on the whole input, the high-resolution conv stages per tile. "
        "`tiled` errors come from each tile's linear attention seeing only that tile (random weights; "
        "trained weights were not measured); `tiled-global-attn` errors only from the conv seams.",
        "",
        "| op | image px | latents | mode | peak extra MiB | output MiB | seconds "
        "| mean abs err | max abs err | untiled std |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mode = r["mode"]
        if "error" in r:
            lines.append(f"| {r['op']} | {r['size']} | {r['latents']} | {mode} | {r['error']} | | | | | |")
            continue
        errs = (f"{r['mean_abs_err']:.2e} | {r['max_abs_err']:.2e} | {r['untiled_std']:.3f}"
                if "mean_abs_err" in r else " | | ")
        lines.append(
            f"| {r['op']} | {r['size']} | {r['latents']}x{r['latents']} | {mode} | {r['peak_mib']:.0f} | "
            f"{r['output_mib']:.2f} | {r['seconds']:.2f} | {errs} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
