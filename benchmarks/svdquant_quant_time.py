"""Quantization time: seconds per layer vs layer size, and the projection to a 12B FLUX-shaped transformer.

For each (K, N) a random layer with outlier activations is quantized with the default svdquant config
(39-point smoothing grid search, rank 32, refinement with early stop, 256 sampled tokens); the time of
`quantize()` on that one layer is measured (calibration forward passes of the model are not included:
they cost the same as running the model on the calibration prompts). W4A16 (AdaLN) layers are timed too.

The FLUX.1 projection sums per-layer times over its linear layers (hidden 3072, MLP 12288, 19 double
blocks, 38 single blocks): measured times where the shape was measured, else a least-squares fit
t = a + b K N over the measured shapes. The reference SVDQuant quantizer takes 12-70 GPU-hours on FLUX.

    python benchmarks/svdquant_quant_time.py --quick              # CPU smoke test
    python benchmarks/svdquant_quant_time.py --device cuda        # includes the real FLUX shapes

Writes benchmarks/results/svdquant_quant_time{,_cuda}{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import torch
from harness import environment, synchronize, write_results
from torch import nn

from genfoundry.svdquant import QuantConfig, quantize

HIDDEN, MLP = 3072, 12288
# (K, N, count, kind) of FLUX.1's quantized linear layers (embedders / final layer stay 16-bit)
FLUX_LAYERS = [
    (HIDDEN, HIDDEN, 19 * 8, "w4a4"),  # double blocks: img+txt q, k, v, out
    (HIDDEN, MLP, 19 * 2, "w4a4"),  # double blocks: img+txt ff up
    (MLP, HIDDEN, 19 * 2, "w4a4"),  # double blocks: img+txt ff down
    (HIDDEN, 6 * HIDDEN, 19 * 2, "w4a16"),  # double blocks: AdaLN norm1 / norm1_context
    (HIDDEN, HIDDEN, 38 * 3, "w4a4"),  # single blocks: q, k, v
    (HIDDEN, MLP, 38, "w4a4"),  # single blocks: proj_mlp
    (HIDDEN + MLP, HIDDEN, 38, "w4a4"),  # single blocks: proj_out
    (HIDDEN, 3 * HIDDEN, 38, "w4a16"),  # single blocks: AdaLN norm
]


def _layer_and_tokens(k: int, n: int, device: str, seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    chan = torch.exp(0.6 * torch.randn(k, generator=g))
    chan[torch.randperm(k, generator=g)[: max(2, k // 100)]] *= 30
    x = torch.randn(1024, k, generator=g) * chan
    layer = nn.Linear(k, n)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, k, generator=g) / k**0.5)
    return layer.to(device), x.to(device)


def time_layer(k: int, n: int, kind: str, device: str, repeats: int) -> float:
    cfg = QuantConfig(method="svdquant" if kind == "w4a4" else "w4a16", skip=[], progress=False)
    best = float("inf")
    for _ in range(repeats):
        layer, x = _layer_and_tokens(k, n, device)
        model = nn.Sequential(layer)
        calibrate = (lambda m: [m(x[i:i + 256]) for i in range(0, len(x), 256)]) if kind == "w4a4" else None
        synchronize(device)
        start = time.perf_counter()
        quantize(model, calibrate, cfg)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def fit(points: list[tuple[int, int, float]]) -> tuple[float, float]:
    """Least squares t = a + b K N (a, b >= 0 where the data allow)."""
    if len(points) == 1:
        k, n, t = points[0]
        return 0.0, t / (k * n)
    a_mat = torch.tensor([[1.0, k * n] for k, n, _ in points], dtype=torch.float64)
    t = torch.tensor([p[2] for p in points], dtype=torch.float64)
    a, b = torch.linalg.lstsq(a_mat, t.unsqueeze(1)).solution.squeeze(1).tolist()
    if a < 0:  # force through the origin
        a, b = 0.0, float((a_mat[:, 1] * t).sum() / (a_mat[:, 1] ** 2).sum())
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--shapes", default=None, help="comma-separated KxN list of W4A4 shapes to time")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    if args.quick:
        shapes = [(128, 128), (256, 256)]
    elif args.device.startswith("cuda"):
        shapes = [(1024, 1024), (2048, 2048), (HIDDEN, HIDDEN), (HIDDEN, MLP), (MLP, HIDDEN), (HIDDEN + MLP, HIDDEN)]
    else:
        shapes = [(256, 256), (512, 512), (1024, 1024), (1024, 4096)]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    w4a16_shapes = [(k, n) for k, n, _, kind in FLUX_LAYERS if kind == "w4a16"]
    if args.quick:
        w4a16_shapes = [(128, 128), (256, 256)]
    elif args.device == "cpu":
        w4a16_shapes = [(512, 512), (1024, 4096)]
    rows = []
    for kind, shape_list in (("w4a4", shapes), ("w4a16", w4a16_shapes)):
        for k, n in shape_list:
            sec = time_layer(k, n, kind, args.device, args.repeats)
            rows.append({"kind": kind, "K": k, "N": n, "seconds": sec})
            print(f"{kind:6s} K={k:6d} N={n:6d}: {sec:8.3f} s", flush=True)
    fits = {kind: fit([(r["K"], r["N"], r["seconds"]) for r in rows if r["kind"] == kind]) for kind in ("w4a4", "w4a16")}
    measured = {(r["kind"], r["K"], r["N"]): r["seconds"] for r in rows}
    total, parts = 0.0, []
    for k, n, count, kind in FLUX_LAYERS:
        a, b = fits[kind]
        per = measured.get((kind, k, n), a + b * k * n)
        source = "measured" if (kind, k, n) in measured else "fit"
        total += per * count
        parts.append({"K": k, "N": n, "count": count, "kind": kind, "seconds_per_layer": per, "source": source})
    env = environment(args.device)
    device_name = env["device"] + (", 1 thread" if args.device == "cpu" else "")
    result = {"rows": rows, "fit": {k: {"a": a, "b": b} for k, (a, b) in fits.items()},
              "flux_projection": {"layers": parts, "total_seconds": total, "total_hours": total / 3600}}
    suffix = ("" if args.device == "cpu" else "_" + args.device.split(":")[0]) + ("_quick" if args.quick else "")
    lines = ["| kind | K | N | seconds / layer |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['kind']} | {r['K']} | {r['N']} | {r['seconds']:.3f} |" for r in rows]
    lines += ["", "Projection to FLUX.1 (12B) linear layers:", "",
              "| kind | K | N | layers | s / layer | source |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['kind']} | {p['K']} | {p['N']} | {p['count']} | {p['seconds_per_layer']:.2f} | {p['source']} |"
              for p in parts]
    lines += ["", f"Total: **{total / 3600:.2f} h** on {device_name} (reference quantizer: 12-70 GPU-hours; "
              "calibration forward passes not included)."]
    write_results(f"svdquant_quant_time{suffix}", result, "\n".join(lines), env=env,
                  title="SVDQuant quantization time")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
