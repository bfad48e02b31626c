"""W4A4 + low-rank GEMM benchmark: the fused SVDQuant kernels (genfoundry.nunchaku.triton) against
16-bit, 8-bit and weight-only 4-bit baselines, measured side by side in one run.

Rows per (M, K, N), M in {256, 1024, 4096, 16384}, (K, N) in the FLUX/SANA linear shapes:
  bf16            torch.nn.functional.linear, bf16 (cuBLAS)
  fp8_scaled_mm   torch._scaled_mm, e4m3 per-tensor scales (anchor; operands pre-quantized)
  int8_int_mm     torch._int_mm, int8 x int8 -> int32 (anchor; operands pre-quantized)
  bnb_nf4         bitsandbytes NF4 W4A16 (the paper's baseline), if bitsandbytes imports
  int4_wo         torch int4 weight-only (tinygemm, the kernel torchao's int4 weight-only uses)
  svdq_unfused    our 4-bit GEMM without the branch + separate torch low-rank matmuls (x@L1)@L2 + add
  svdq_fused      kernel 1 (quantize + lora_down) + kernel 2 (GEMM + lora_up + bias), rank 32
  svdq_nolora     the same two kernels with rank 0 (the low-rank overhead is fused / nolora - 1)
  svdq_k1, svdq_k2  the two fused kernels timed alone
  svdq_nvfp4      fused NVFP4 (group 16, fp8 scales), rank 32
Plus: an end-to-end SANA-0.6B-shaped transformer (random weights) at 1024px, batch 1 and 8, bf16 vs
its linears and 1x1 FFN convs replaced by the fused INT4 operator; and the exact weight bytes of a
12B FLUX-shaped model (int4 / nvfp4 + scales + low-rank vs bf16), pure arithmetic.

    python benchmarks/gemm_w4a4.py               # full sweep on a CUDA GPU (~4 min on an H200)
    python benchmarks/gemm_w4a4.py --quick       # 2 M x 2 shapes, batch-1 end-to-end
    python benchmarks/gemm_w4a4.py --device cpu  # interpreter smoke test with tiny shapes
Writes benchmarks/results/gemm_w4a4.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RANK = 32
FULL_M = (256, 1024, 4096, 16384)
FULL_KN = ((3072, 3072), (3072, 12288), (12288, 3072), (1152, 1152), (1152, 2880))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda: the real benchmark; cpu: tiny shapes under the Triton interpreter (smoke test)")
    p.add_argument("--quick", action="store_true", help="a smaller sweep (M 1024/4096, two shapes, batch 1)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end SANA part")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for gemm_w4a4.json / .md")
    p.add_argument("--m", type=int, nargs="+", help="token counts to sweep (overrides the preset)")
    p.add_argument("--kn", nargs="+", help="KxN shapes to sweep, e.g. 3072x3072 (overrides the preset)")
    p.add_argument("--max-configs", type=int, default=None,
                   help="autotune only the first N tile configs of each kernel (shorter tuning)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# exact weight bytes of a FLUX.1-shaped 12B transformer


def flux_linear_shapes() -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]], int]:
    """(quantized [(name, in, out)], kept-16-bit [(name, in, out)], other 16-bit params) of FLUX.1
    (hidden 3072, 19 double-stream + 38 single-stream blocks, MLP x4, 24 heads of 128). Every
    linear has a bias. Inside the blocks every linear is 4-bit (attention, MLP, AdaLN modulation);
    embedders and the output layer stay in 16 bits."""
    d, mlp, head = 3072, 4 * 3072, 128
    quant: list[tuple[str, int, int]] = []
    for i in range(19):
        for stream in ("img", "txt"):
            quant += [(f"double{i}.{stream}_mod", d, 6 * d)]
            quant += [(f"double{i}.{stream}_{p}", d, d) for p in ("q", "k", "v", "out")]
            quant += [(f"double{i}.{stream}_mlp_up", d, mlp), (f"double{i}.{stream}_mlp_down", mlp, d)]
    for i in range(38):
        quant += [(f"single{i}.mod", d, 3 * d), (f"single{i}.qkv_mlp", d, 3 * d + mlp),
                  (f"single{i}.out", d + mlp, d)]
    kept = [
        ("x_embedder", 64, d), ("context_embedder", 4096, d),
        ("time.linear_1", 256, d), ("time.linear_2", d, d),
        ("guidance.linear_1", 256, d), ("guidance.linear_2", d, d),
        ("pooled_text.linear_1", 768, d), ("pooled_text.linear_2", d, d),
        ("norm_out.linear", d, 2 * d), ("proj_out", d, 64),
    ]
    # RMSNorm weights of q/k (img + txt in double blocks, one pair in single blocks), 128 each
    norms = 19 * 4 * head + 38 * 2 * head
    return quant, kept, norms


def flux_weight_bytes(rank: int = RANK) -> dict:
    quant, kept, norm_params = flux_linear_shapes()
    bf16_params = sum(k * n + n for _, k, n in quant + kept) + norm_params
    kept_bytes = 2 * (sum(k * n + n for _, k, n in kept) + norm_params)
    out = {"params": bf16_params, "bf16_bytes": 2 * bf16_params, "quantized_layers": len(quant), "rank": rank}
    for fmt, group, scale_bytes, tensor_scale in (("int4", 64, 2, 0), ("nvfp4", 16, 1, 4)):
        total = kept_bytes
        for _, k, n in quant:
            total += n * k // 2  # packed codes
            total += (k // group) * n * scale_bytes  # group scales
            total += tensor_scale  # nvfp4 per-tensor fp32 scale
            total += 2 * k  # smoothing factor (bf16)
            total += 2 * (k * rank + n * rank)  # lora_down + lora_up (bf16)
            total += 2 * n  # bias (bf16)
        out[f"{fmt}_bytes"] = total
        out[f"{fmt}_ratio_vs_bf16"] = out["bf16_bytes"] / total
    return out


# ----------------------------------------------------------------------------------------------
# timing


def make_timer(device: str):
    import torch

    if device == "cuda":
        import triton.testing

        def bench(fn) -> float:
            return float(triton.testing.do_bench(fn, warmup=10, rep=30, return_mode="median"))
    else:

        def bench(fn) -> float:  # the interpreter: one warm call, one timed call
            fn()
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3

    return bench, torch


def _try(label: str, fn, errors: dict):
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - a baseline that cannot run here is reported, not fatal
        errors[label] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        return None


def gemm_sweep(device: str, ms, kns, bench, torch, backend, errors: dict) -> list[dict]:
    from genfoundry.nunchaku import packing, reference

    rows = []
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf
    except Exception as err:  # noqa: BLE001
        bnb = None
        errors["bnb_nf4"] = f"bitsandbytes not importable: {type(err).__name__}: {err}"[:200]

    for k, n in kns:
        w = torch.randn(n, k, device=device, dtype=torch.float32, generator=gen) / k**0.5
        qweight, wscales = packing.quantize_int4_weight(w.to(dtype))
        qw4, ws4, wt4 = packing.quantize_nvfp4_weight(w)
        wb = w.to(dtype)
        smooth = torch.rand(k, device=device, generator=gen).to(dtype) + 0.5
        ld = (torch.randn(k, RANK, device=device, generator=gen) / k**0.5).to(dtype)
        lu = (torch.randn(n, RANK, device=device, generator=gen) / RANK**0.5).to(dtype)
        bias = torch.randn(n, device=device, generator=gen).to(dtype) * 0.1
        static = {}
        if device == "cuda":
            static["w_fp8"] = wb.to(torch.float8_e4m3fn)
            static["w_i8"] = (w * 127 / w.abs().max()).round().to(torch.int8)
            if bnb is not None:
                static["bnb"] = _try("bnb_nf4", lambda: bnbf.quantize_4bit(wb, blocksize=64, quant_type="nf4"),
                                     errors)
            static["int4_wo"] = _try("int4_wo", lambda: _pack_int4_weight_only(torch, w, 64), errors)
        for m in ms:
            x = torch.randn(m, k, device=device, generator=gen).to(dtype)
            flops = 2.0 * m * n * k
            times: dict[str, float | None] = {}

            def run(label, fn):
                times[label] = _try(label, lambda: bench(fn), errors)

            run("bf16", lambda: torch.nn.functional.linear(x, wb, bias))
            if device == "cuda":
                x8 = x.to(torch.float8_e4m3fn)
                one = torch.ones((), device=device)
                run("fp8_scaled_mm", lambda: torch._scaled_mm(x8, static["w_fp8"].t(), scale_a=one, scale_b=one,
                                                              out_dtype=torch.bfloat16))
                xi8 = (x * 16).round().clamp(-127, 127).to(torch.int8)
                run("int8_int_mm", lambda: torch._int_mm(xi8, static["w_i8"].t()))
                if static.get("bnb") is not None:
                    packed, state = static["bnb"]
                    run("bnb_nf4", lambda: bnb.matmul_4bit(x, packed.t(), quant_state=state, bias=bias))
                if static.get("int4_wo") is not None:
                    wq, sz = static["int4_wo"]
                    run("int4_wo", lambda: torch._weight_int4pack_mm(x, wq, 64, sz))

            def fused():
                return backend.svdq_linear(x, qweight, wscales, smooth, ld, lu, bias)

            def nolora():
                return backend.svdq_linear(x, qweight, wscales, smooth, None, None, bias)

            def unfused():
                y = backend.svdq_linear(x, qweight, wscales, smooth, None, None, bias)
                return torch.addmm(y, x @ ld, lu.t())

            qact, ascales, lora_act = backend.quantize_act_lora_down(x, smooth, ld)
            run("svdq_fused", fused)
            run("svdq_nolora", nolora)
            run("svdq_unfused", unfused)
            run("svdq_k1", lambda: backend.quantize_act_lora_down(x, smooth, ld))
            run("svdq_k2", lambda: backend.gemm_w4a4_lora_up(qact, ascales, qweight, wscales, lora_act, lu, bias,
                                                             out_dtype=dtype))
            run("svdq_nvfp4", lambda: backend.svdq_linear(x, qw4, ws4, smooth, ld, lu, bias, weight_format="nvfp4",
                                                          group_size=16, wtscale=wt4))
            row = {"M": m, "K": k, "N": n, "ms": times,
                   "tflops": {key: (flops / (t * 1e-3) / 1e12 if t else None) for key, t in times.items()}}
            if m == ms[0]:  # correctness of the compiled kernels against the reference backend
                want = reference.svdq_linear(x, qweight, wscales, smooth, ld, lu, bias).float()
                got = fused().float()
                row["fused_rel_err_vs_reference"] = ((got - want).abs().max() / want.abs().max()).item()
                want4 = reference.svdq_linear(x, qw4, ws4, smooth, ld, lu, bias, weight_format="nvfp4",
                                              group_size=16, wtscale=wt4).float()
                got4 = backend.svdq_linear(x, qw4, ws4, smooth, ld, lu, bias, weight_format="nvfp4", group_size=16,
                                           wtscale=wt4).float()
                row["nvfp4_rel_err_vs_reference"] = ((got4 - want4).abs().max() / want4.abs().max()).item()
            rows.append(row)
            print(_row_line(row), flush=True)
    return rows


def _pack_int4_weight_only(torch, w, group: int):
    """Asymmetric uint4 weights + bf16 (scale, zero) per group in tinygemm's packed layout."""
    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-6)
    zero = lo + scale * 8  # tinygemm dequantizes as (q - 8) * scale + zero
    q = ((g - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
    wq = torch._convert_weight_to_int4pack(packed, 8 if k % 128 == 0 else 2)
    scales_zeros = torch.stack([scale.squeeze(-1), zero.squeeze(-1)], dim=-1).transpose(0, 1).contiguous()
    return wq, scales_zeros.to(torch.bfloat16)


def _row_line(row: dict) -> str:
    t = row["tflops"]
    parts = [f"M={row['M']:>5} K={row['K']:>5} N={row['N']:>5}"]
    for key in ("bf16", "fp8_scaled_mm", "int8_int_mm", "bnb_nf4", "int4_wo", "svdq_unfused", "svdq_fused",
                "svdq_nolora", "svdq_nvfp4"):
        if t.get(key):
            parts.append(f"{key} {t[key]:.0f}")
    return " | ".join(parts)


# ----------------------------------------------------------------------------------------------
# end to end: SANA-0.6B-shaped transformer


class _FusedLinear:
    """A frozen, randomly initialised SVDQ INT4 linear (RTN weights, rank-32 branch) that runs the
    fused kernels: y = svdq_linear(x)."""

    def __init__(self, torch, backend, weight, bias, gen):
        from genfoundry.nunchaku import packing

        n, k = weight.shape
        self.backend = backend
        self.qweight, self.wscales = packing.quantize_int4_weight(weight)
        self.smooth = torch.ones(k, device=weight.device, dtype=weight.dtype)
        self.lora_down = (torch.randn(k, RANK, device=weight.device, generator=gen) / k**0.5).to(weight.dtype)
        self.lora_up = (torch.randn(n, RANK, device=weight.device, generator=gen) * 1e-3).to(weight.dtype)
        self.bias = bias

    def __call__(self, x):
        return self.backend.svdq_linear(x, self.qweight, self.wscales, self.smooth, self.lora_down, self.lora_up,
                                        self.bias)


def _quantize_sana_blocks(torch, model, backend) -> int:
    """Swap every block linear (self-attention q/k/v/out, cross-attention q/out) and both 1x1 FFN
    convs for fused SVDQ INT4 operators; cross-attention k/v (on the 300 text tokens) stay bf16, as
    SVDQuant keeps them. Returns how many layers were swapped."""
    gen = torch.Generator(device=model.device).manual_seed(0)
    swapped = 0
    for block in model.transformer_blocks:
        for attn, names in ((block.attn1, ("to_q", "to_k", "to_v")), (block.attn2, ("to_q",))):
            for name in names:
                lin = getattr(attn, name)
                fused = _FusedLinear(torch, backend, lin.weight.data, lin.bias, gen)
                lin.forward = fused
                swapped += 1
            out = attn.to_out[0]
            out.forward = _FusedLinear(torch, backend, out.weight.data, out.bias, gen)
            swapped += 1
        ff = block.ff
        conv_in = _FusedLinear(torch, backend, ff.conv_inverted.weight.data.flatten(1), ff.conv_inverted.bias, gen)
        conv_point = _FusedLinear(torch, backend, ff.conv_point.weight.data.flatten(1), None, gen)

        def forward_tokens(self, x, height, width, conv_in=conv_in, conv_point=conv_point):
            batch, tokens, _ = x.shape
            h = torch.nn.functional.silu(conv_in(x))
            h = self.conv_depth(h.view(batch, height, width, -1).permute(0, 3, 1, 2))
            h = h.permute(0, 2, 3, 1).reshape(batch, tokens, -1)
            h, gate = h.chunk(2, dim=-1)
            h = conv_point(h * torch.nn.functional.silu(gate))
            if self.norm is not None:
                h = self.norm(h)
            return h + x if self.residual else h

        ff.forward_tokens = types.MethodType(forward_tokens, ff)
        swapped += 2
    return swapped


def end_to_end(device: str, quick: bool, bench, torch, backend, errors: dict) -> list[dict]:
    try:
        from genfoundry.sana import SanaTransformer
        from genfoundry.sana.transformer import named_config
    except Exception as err:  # noqa: BLE001
        errors["e2e"] = f"genfoundry.sana unavailable: {type(err).__name__}: {err}"
        return []
    if device == "cuda":
        cfg, latent, text_len, batches = named_config("sana-0.6b"), 32, 300, (1,) if quick else (1, 8)
        dtype = torch.bfloat16
    else:  # interpreter smoke test: a 1-block, narrow model
        cfg = named_config("sana-0.6b")
        # width 128 and FFN 320 keep every K a multiple of the group of 64
        cfg.num_layers, cfg.num_attention_heads, cfg.cross_attention_dim = 1, 4, 128
        cfg.num_cross_attention_heads, cfg.cross_attention_head_dim, cfg.caption_channels = 4, 32, 64
        latent, text_len, batches, dtype = 4, 8, (1,), torch.float32
    rows = []
    torch.manual_seed(0)
    with torch.device(device):
        model = SanaTransformer(cfg).to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device=device).manual_seed(1)
    inputs = {}
    for b in batches:
        inputs[b] = (torch.randn(b, cfg.in_channels, latent, latent, device=device, generator=gen).to(dtype),
                     torch.full((b,), 500.0, device=device),
                     torch.randn(b, text_len, cfg.caption_channels, device=device, generator=gen).to(dtype))
    with torch.no_grad():
        ref_out = {}
        for b in batches:
            ref_out[b] = model(*inputs[b]).float()
            t = _try(f"e2e_bf16_b{b}", lambda: bench(lambda: model(*inputs[b])), errors)
            rows.append({"variant": "bf16", "batch": b, "ms": t})
        swapped = _quantize_sana_blocks(torch, model, backend)
        for b in batches:
            out = model(*inputs[b]).float()
            rel = ((out - ref_out[b]).norm() / ref_out[b].norm()).item()
            t = _try(f"e2e_svdq_b{b}", lambda: bench(lambda: model(*inputs[b])), errors)
            rows.append({"variant": "svdq_int4_fused", "batch": b, "ms": t, "rel_l2_vs_bf16": rel})
    for r in rows:
        r.update(params=params, swapped_layers=swapped, tokens=latent * latent, resolution=latent * 32)
        print(f"e2e {r['variant']:>16} b{r['batch']}: {r['ms']} ms", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# report


def _ratio(a, b):
    return a / b if a and b else None


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        t = r["ms"]
        out.append({
            "M": r["M"], "K": r["K"], "N": r["N"],
            "fused_vs_bf16": _ratio(t.get("bf16"), t.get("svdq_fused")),
            "fused_vs_bnb_nf4": _ratio(t.get("bnb_nf4"), t.get("svdq_fused")),
            "fused_vs_unfused": _ratio(t.get("svdq_unfused"), t.get("svdq_fused")),
            "lowrank_overhead": (_ratio(t.get("svdq_fused"), t.get("svdq_nolora")) or 1.0) - 1.0
            if t.get("svdq_fused") and t.get("svdq_nolora") else None,
            "fp8_vs_bf16": _ratio(t.get("bf16"), t.get("fp8_scaled_mm")),
            "int8_vs_bf16": _ratio(t.get("bf16"), t.get("int8_int_mm")),
            "nvfp4_vs_bf16": _ratio(t.get("bf16"), t.get("svdq_nvfp4")),
        })
    return out


def _fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def write_markdown(path: Path, result: dict) -> None:
    lines = [f"# W4A4 + low-rank GEMM ({result['device_name']})", "",
             f"{result['note']}", "",
             "TFLOP/s (2MNK / time; median of triton.testing.do_bench):", "",
             "| M | K | N | bf16 | fp8 _scaled_mm | int8 _int_mm | bnb NF4 | int4 w-only | SVDQ unfused | "
             "SVDQ fused | SVDQ no-LoRA | SVDQ NVFP4 | fused/bf16 | fused/NF4 | fused/unfused | LoRA overhead |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, s in zip(result["gemm"], result["summary"]):
        t = r["tflops"]
        lines.append("| " + " | ".join([str(r["M"]), str(r["K"]), str(r["N"])] + [
            _fmt(t.get(key), 0) for key in ("bf16", "fp8_scaled_mm", "int8_int_mm", "bnb_nf4", "int4_wo",
                                            "svdq_unfused", "svdq_fused", "svdq_nolora", "svdq_nvfp4")
        ] + [_fmt(s["fused_vs_bf16"]), _fmt(s["fused_vs_bnb_nf4"]), _fmt(s["fused_vs_unfused"]),
             "-" if s["lowrank_overhead"] is None else f"{100 * s['lowrank_overhead']:.0f}%"]) + " |")
    errs = [(f"{r['M']}x{r['K']}x{r['N']}", r.get("fused_rel_err_vs_reference"), r.get("nvfp4_rel_err_vs_reference"))
            for r in result["gemm"] if "fused_rel_err_vs_reference" in r]
    if errs:
        lines += ["", "Compiled kernels vs the reference backend (max |diff| / max |y|): " + ", ".join(
            f"{s}: int4 {a:.1e}, nvfp4 {b:.1e}" for s, a, b in errs)]
    if result["e2e"]:
        lines += ["", "End to end, SANA-0.6B-shaped transformer (random weights), one forward:", "",
                  "| variant | batch | tokens | ms | speed-up vs bf16 | rel. L2 vs bf16 |", "|---|---|---|---|---|---|"]
        base = {r["batch"]: r["ms"] for r in result["e2e"] if r["variant"] == "bf16"}
        for r in result["e2e"]:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['tokens']} | {_fmt(r['ms'])} | "
                         f"{_fmt(_ratio(base.get(r['batch']), r['ms']))} | {_fmt(r.get('rel_l2_vs_bf16'), 3)} |")
    fb = result["flux_weight_bytes"]
    lines += ["", f"Weight bytes of a FLUX.1-shaped model ({fb['params'] / 1e9:.2f}B params, "
              f"{fb['quantized_layers']} 4-bit linears, rank {fb['rank']}): bf16 {fb['bf16_bytes'] / 2**30:.2f} GiB, "
              f"int4 {fb['int4_bytes'] / 2**30:.2f} GiB ({fb['int4_ratio_vs_bf16']:.2f}x smaller), "
              f"nvfp4 {fb['nvfp4_bytes'] / 2**30:.2f} GiB ({fb['nvfp4_ratio_vs_bf16']:.2f}x smaller)."]
    if result["errors"]:
        lines += ["", "Not measured:"] + [f"- {k}: {v}" for k, v in sorted(result["errors"].items())]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    bench, torch = make_timer(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gemm_w4a4: no CUDA device; use --device cpu for the interpreter smoke test")
    from genfoundry.nunchaku.triton import backend

    ok, reason = backend.is_supported(args.device)
    if not ok:
        sys.exit(f"gemm_w4a4: the triton backend cannot run here: {reason}")
    if args.device == "cuda":
        ms, kns = ((1024, 4096), ((3072, 3072), (1152, 2880))) if args.quick else (FULL_M, FULL_KN)
        device_name = torch.cuda.get_device_name()
    else:
        ms, kns, device_name = (16, 33), ((128, 96),), f"CPU (Triton interpreter), {platform.machine()}"
    if args.m:
        ms = tuple(args.m)
    if args.kn:
        kns = tuple(tuple(int(v) for v in s.lower().split("x")) for s in args.kn)
    if args.max_configs:
        from genfoundry.nunchaku.triton import autotune

        for name in ("quantize_configs", "int4_gemm_configs", "nvfp4_gemm_configs"):
            full = getattr(autotune, name)
            setattr(autotune, name, lambda cap, full=full: full(cap)[: args.max_configs])
    errors: dict[str, str] = {}
    t0 = time.time()
    torch.manual_seed(0)
    with torch.no_grad():
        rows = gemm_sweep(args.device, ms, kns, bench, torch, backend, errors)
        e2e = [] if args.no_e2e else end_to_end(args.device, args.quick, bench, torch, backend, errors)
    import triton

    result = {
        "device_name": device_name, "torch": torch.__version__, "triton": triton.__version__,
        "quick": args.quick, "rank": RANK, "seconds": time.time() - t0,
        "note": ("Interpreter smoke test: timings are meaningless, only that every path runs."
                 if args.device == "cpu" else "One run; ratios are measured side by side on the same GPU."),
        "gemm": rows, "summary": summarize(rows), "e2e": e2e, "flux_weight_bytes": flux_weight_bytes(),
        "errors": errors,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gemm_w4a4.json").write_text(json.dumps(result, indent=2))
    write_markdown(args.out / "gemm_w4a4.md", result)
    print(f"wrote {args.out / 'gemm_w4a4.md'} in {result['seconds']:.0f} s", flush=True)
    return result


if __name__ == "__main__":
    main()
