"""Layer study: W4A4 output error of rtn / smoothquant / svdquant on synthetic layers with outliers.

Synthetic layers imitate what diffusion transformers show: activations with a few heavy channels
(20-60x the median scale), log-normal channel scales and Student-t tails; weights with a strong
low-rank part and sparse large entries. Each method is calibrated on one set of tokens through
`genfoundry.svdquant.quantize` and judged on held-out tokens by the relative output error
``||Y_q - Y||^2 / ||Y||^2`` (lower is better). Also: svdquant vs rank (0, 8, 16, 32, 64) and with
the smoothing grid search on / off (off = fixed alpha 0.5, and no smoothing at all).

    python benchmarks/svdquant_layer_study.py            # K = N = 1024, 3 layers
    python benchmarks/svdquant_layer_study.py --quick    # K = N = 128, 1 layer (smoke test)

Writes benchmarks/results/svdquant_layer_study{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from harness import environment, write_results
from torch import nn

from genfoundry.svdquant import QuantConfig, quantize


def synthetic_layer(k: int, n: int, seed: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """(layer, calibration tokens [T, K], held-out tokens [T, K]) with diffusion-like outliers."""
    g = torch.Generator().manual_seed(seed)
    chan = torch.exp(0.6 * torch.randn(k, generator=g))
    heavy = torch.randperm(k, generator=g)[: max(2, k // 100)]
    chan[heavy] *= 20 + 40 * torch.rand(len(heavy), generator=g)

    def tokens(count: int) -> torch.Tensor:
        z = torch.randn(count, k, generator=g)
        chi = torch.randn(count, k, 4, generator=g).pow(2).mean(-1)  # Student-t(4) = z / sqrt(chi2_4 / 4)
        return z / chi.sqrt() * chan

    w = torch.randn(n, k, generator=g) / k**0.5
    w += (torch.randn(n, 8, generator=g) @ torch.randn(8, k, generator=g)) * (0.5 / k**0.5)
    spikes = torch.rand(n, k, generator=g) < 0.002
    w[spikes] *= 12
    layer = nn.Linear(k, n)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(0.1 * torch.randn(n, generator=g))
    return layer, tokens(2048), tokens(1024)


def rel_error(layer: nn.Module, ref: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        y, y_ref = layer(x), ref(x)
    return float((y - y_ref).pow(2).sum() / y_ref.pow(2).sum())


def run_config(layer: nn.Linear, calib: torch.Tensor, test: torch.Tensor, cfg: QuantConfig) -> tuple[float, float]:
    model = nn.Sequential(copy.deepcopy(layer))
    start = time.perf_counter()
    quantize(model, lambda m: [m(calib[i:i + 512]) for i in range(0, len(calib), 512)], cfg)
    seconds = time.perf_counter() - start
    return rel_error(model, nn.Sequential(layer), test), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--size", type=int, default=None, help="K = N of the synthetic layers")
    parser.add_argument("--layers", type=int, default=None, help="number of synthetic layers (seeds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = args.size or (128 if args.quick else 1024)
    n_layers = args.layers or (1 if args.quick else 3)
    base = dict(skip=[], progress=False, calib_tokens=256, seed=0)
    configs: dict[str, QuantConfig] = {
        "rtn w4a4 (int4)": QuantConfig(method="rtn", **base),
        "smoothquant w4a4 (int4, alpha 0.5)": QuantConfig(method="smoothquant", **base),
        "smoothquant w4a4 (int4, search)": QuantConfig(method="smoothquant", smooth="search", **base),
        "svdquant w4a4 (int4, r32)": QuantConfig(method="svdquant", **base),
        "rtn w4a4 (nvfp4)": QuantConfig(method="rtn", weight="nvfp4", **base),
        "svdquant w4a4 (nvfp4, r32)": QuantConfig(method="svdquant", weight="nvfp4", **base),
        "w4a16 (nf4)": QuantConfig(method="w4a16", **base),
        "w8a8 (smoothquant int8)": QuantConfig(method="w8a8", **base),
    }
    for r in (0, 8, 16, 64):
        configs[f"svdquant int4 rank {r}"] = QuantConfig(method="svdquant", rank=r, **base)
    configs["svdquant int4 r32, smoothing alpha 0.5 (no search)"] = QuantConfig(method="svdquant", smooth=0.5, **base)
    configs["svdquant int4 r32, no smoothing"] = QuantConfig(method="svdquant", smooth=None, **base)

    rows = {name: {"errors": [], "seconds": []} for name in configs}
    for seed in range(n_layers):
        layer, calib, test = synthetic_layer(size, size, seed)
        for name, cfg in configs.items():
            err, sec = run_config(layer, calib, test, cfg)
            rows[name]["errors"].append(err)
            rows[name]["seconds"].append(sec)
            print(f"layer {seed} {name:55s} rel.err {err:.5f}  ({sec:.2f} s)", flush=True)
    summary = {name: {"mean_rel_error": sum(r["errors"]) / len(r["errors"]),
                      "mean_seconds": sum(r["seconds"]) / len(r["seconds"]), **r} for name, r in rows.items()}
    ranks = {r: summary["svdquant int4 rank %d" % r if r != 32 else "svdquant w4a4 (int4, r32)"]["mean_rel_error"]
             for r in (0, 8, 16, 32, 64)}
    order_ok = (summary["rtn w4a4 (int4)"]["mean_rel_error"] > summary["smoothquant w4a4 (int4, alpha 0.5)"][
        "mean_rel_error"] > summary["svdquant w4a4 (int4, r32)"]["mean_rel_error"])
    result = {"size": size, "layers": n_layers, "calib_tokens": 2048, "test_tokens": 1024,
              "device": "cpu (1 thread)", "results": summary, "rank_sweep": ranks,
              "order_rtn_gt_smoothquant_gt_svdquant": order_ok}
    lines = ["Relative output error ||Y_q - Y||^2 / ||Y||^2 on held-out tokens (lower is better).", "",
             "| method | mean rel. error | per layer | quantize s/layer |", "| --- | --- | --- | --- |"]
    for name, r in summary.items():
        per = ", ".join(f"{e:.4f}" for e in r["errors"])
        lines.append(f"| {name} | {r['mean_rel_error']:.5f} | {per} | {r['mean_seconds']:.2f} |")
    lines += ["", f"rtn > smoothquant > svdquant: **{order_ok}**", "",
              "| svdquant rank | " + " | ".join(str(r) for r in ranks) + " |",
              "| --- | " + " | ".join("---" for _ in ranks) + " |",
              "| mean rel. error | " + " | ".join(f"{v:.5f}" for v in ranks.values()) + " |"]
    write_results("svdquant_layer_study" + ("_quick" if args.quick else ""), result, "\n".join(lines),
                  env=environment("cpu"),
                  title=f"SVDQuant layer study ({n_layers} synthetic {size}x{size} layers with outliers, CPU, 1 thread)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
