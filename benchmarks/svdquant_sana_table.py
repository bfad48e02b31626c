"""SVDQuant Table 1 on a SANA pipeline: every method against the 16-bit model, same prompts and seeds.

For fp16 (the reference), W8A8, W4A16 (NF4), RTN W4A4, SmoothQuant W4A4, SVDQuant INT4 W4A4 (with its
low-rank branch in 16 bits, and in int8 as an integer accelerator would run it) and SVDQuant NVFP4
W4A4: PSNR and SSIM of the generated images against the reference images, the GenEval-style score
(`genfoundry.shapes.evaluate`) and the bytes of the transformer's quantized layers vs bf16.

    python benchmarks/svdquant_sana_table.py --model sana-shapes            # 100 held-out prompts
    python benchmarks/svdquant_sana_table.py --model DIR --prompts 10 --quick

Writes benchmarks/results/svdquant_sana_table.{json,md} (`_quick` with --quick).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = [
    ("fp16 (reference)", None),
    ("W8A8", dict(method="w8a8")),
    ("W4A16 NF4", dict(method="w4a16", weight="nf4")),
    ("RTN W4A4 INT4", dict(method="rtn", weight="int4")),
    ("SmoothQuant W4A4 INT4", dict(method="smoothquant", weight="int4")),
    ("SVDQuant W4A4 INT4 r32", dict(method="svdquant", weight="int4", rank=32)),
    ("SVDQuant W4A4 INT4 r32, int8 branch", dict(method="svdquant", weight="int4", rank=32, lowrank_bits=8)),
    ("SVDQuant W4A4 NVFP4 r32", dict(method="svdquant", weight="nvfp4", rank=32)),
]


def _size_ratio(dense: int, stored: int) -> str:
    if not stored:
        return ""
    # a rank-32 branch on width-128 layers outweighs the 4-bit savings: say "larger", not "0.97x smaller"
    return f"{dense / stored:.2f}x smaller" if stored <= dense else f"{stored / dense:.2f}x larger"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sana-shapes")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--calib-prompts", type=int, default=16)
    parser.add_argument("--calib-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    from genfoundry.sana import SanaPipeline
    from genfoundry.sana.evaluate import heldout_prompts, score_images
    from genfoundry.svdquant import QuantConfig, quantize
    from genfoundry.svdquant.cli import calibration_prompts
    from genfoundry.svdquant.metrics import psnr, quantized_bytes, ssim

    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompts = heldout_prompts(args.prompts, seed=args.seed + 7)
    captions = [c for c, _ in prompts]
    seeds = [args.seed + i for i in range(len(captions))]
    calib = calibration_prompts(args.calib_prompts, args.seed)

    def generate(pipe):
        images = []
        for start in range(0, len(captions), 25):
            images += pipe(captions[start:start + 25], steps=args.steps, seed=seeds[start:start + 25],
                           progress=False, warn_unknown_words=False)
        return images

    rows, reference = [], None
    for name, overrides in METHODS:
        began = time.time()
        pipe = SanaPipeline.from_pretrained(args.model, dtype=torch.float32)
        stored = dense = 0
        if overrides is not None:
            def calibrate(_transformer, pipe=pipe) -> None:
                for start in range(0, len(calib), 8):
                    pipe(calib[start:start + 8], steps=args.calib_steps, seed=args.seed + start,
                         progress=False, warn_unknown_words=False)

            quantize(pipe.transformer, calibrate, QuantConfig(**overrides, seed=args.seed, progress=False,
                                                              indivisible="skip"))
            stored, dense = quantized_bytes(pipe.transformer)
        quant_seconds = time.time() - began
        images = generate(pipe)
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        if reference is None:
            reference = arrays
        score = score_images(images, prompts)
        rows.append({
            "method": name,
            "psnr_db": float(np.mean([min(psnr(a, r), 100.0) for a, r in zip(arrays, reference)])),
            "ssim": float(np.mean([ssim(a, r) for a, r in zip(arrays, reference)])),
            "geneval": score.overall,
            "quantized_layer_bytes": stored,
            "bf16_bytes_of_those_layers": dense,
            "seconds": round(time.time() - began, 1),
            "quantize_seconds": round(quant_seconds, 1),
        })
        print(json.dumps(rows[-1]), flush=True)

    suffix = "_quick" if args.quick else ""
    out = ROOT / "benchmarks" / "results" / f"svdquant_sana_table{suffix}"
    meta = {"model": str(args.model), "prompts": len(captions), "steps": args.steps, "seed": args.seed,
            "calibration_prompts": len(calib), "machine": f"{platform.machine()} CPU, torch {torch.__version__}"}
    lines = [f"# SVDQuant on SANA ({args.model}): {len(captions)} held-out prompts, {args.steps} steps, "
             f"{meta['machine']}", "",
             "PSNR/SSIM of each method's images against the 16-bit model's images (same prompts and seeds); "
             "GenEval-style score of each method's images; bytes of the quantized layers vs the same layers in bf16.",
             "", "| method | PSNR dB | SSIM | GenEval | quantized-layer bytes | vs bf16 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ratio = _size_ratio(r["bf16_bytes_of_those_layers"], r["quantized_layer_bytes"])
        psnr_text = "inf" if r["method"].startswith("fp16") else f"{r['psnr_db']:.2f}"
        lines.append(f"| {r['method']} | {psnr_text} | {r['ssim']:.4f} | {r['geneval']:.3f} | "
                     f"{r['quantized_layer_bytes'] or ''} | {ratio} |")
    lines += ["", "The int8 low-rank branch is stored in the compute dtype like the 16-bit one (its int8 scales are "
              "taken in the forward), so its bytes are the same here; it is what genfoundry.lego's `svdq:...:r8` "
              "accelerators run."]
    from genfoundry.hub import write_json_atomic, write_text_atomic

    write_json_atomic(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
