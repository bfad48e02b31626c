"""Sampler study on a trained SANA: Flow-Euler vs Flow-DPM-Solver at 5..50 steps vs a 200-step reference.

For every (sampler, steps) it generates the same held-out prompts from the same initial noise and
reports the GenEval-style score (genfoundry.shapes.evaluate) and the latent error: the RMS difference
between its final latents and those of Flow-DPM-Solver at 200 steps (the reference; the two 200-step
runs' distance is reported too, as the reference's own uncertainty). The SANA paper claims
Flow-DPM-Solver at 14-20 steps matches Flow-Euler at 28-50 steps; the script states whether these
numbers confirm it (rule in `verdict`).

    python benchmarks/sana_sampler_study.py --model sana-shapes --prompts 300      # GPU: seconds
    python benchmarks/sana_sampler_study.py --quick       # CPU smoke test: 4 prompts, 2/3 steps, 8-step reference

Writes benchmarks/results/sana_sampler_study{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from harness import environment, write_results

from genfoundry.sana.evaluate import heldout_prompts, score_images
from genfoundry.sana.pipeline import SanaPipeline, to_pil

STEPS = (5, 10, 14, 20, 28, 50)
REFERENCE_STEPS = 200
SAMPLERS = ("flow-euler", "flow-dpm-solver")


def run_config(pipe: SanaPipeline, prompts: list[str], noise: torch.Tensor, sampler: str, steps: int,
               guidance: float, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, len(prompts), batch_size):
        out.append(pipe.generate_latents(prompts[start : start + batch_size], steps=steps, sampler=sampler,
                                         guidance_scale=guidance, latents=noise[start : start + batch_size],
                                         warn_unknown_words=False, progress=False,
                                         layout_guidance=0.0))  # the DiT's own flow ODE, no switch at sigma 0.75
    return torch.cat(out)


def decode(pipe: SanaPipeline, latents: torch.Tensor, batch_size: int) -> list:
    images = []
    for start in range(0, len(latents), batch_size):
        images += to_pil(pipe.decode(latents[start : start + batch_size]))
    return images


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt())


def verdict(rows: list[dict], n: int) -> str:
    """DPM-Solver at 14-20 steps 'matches' Euler at 28-50 when its best score is within two binomial
    standard errors of (or above) Euler's best there, and its latent error is no larger."""
    def pick(sampler, lo, hi):
        return [r for r in rows if r["sampler"] == sampler and lo <= r["steps"] <= hi]

    dpm, euler = pick("flow-dpm-solver", 14, 20), pick("flow-euler", 28, 50)
    best_dpm = max(r["score"] for r in dpm)
    best_euler = max(r["score"] for r in euler)
    p = max(min((best_dpm + best_euler) / 2, 1 - 1 / n), 1 / n)
    tolerance = 2 * math.sqrt(2 * p * (1 - p) / n)
    err_dpm = min(r["latent_rms_error"] for r in dpm)
    err_euler = min(r["latent_rms_error"] for r in euler)
    score_ok = best_dpm >= best_euler - tolerance
    error_ok = err_dpm <= err_euler
    status = "CONFIRMED" if score_ok and error_ok else ("PARTLY CONFIRMED" if score_ok or error_ok else "REFUTED")
    return (f"{status}: Flow-DPM-Solver 14-20 steps best score {best_dpm:.3f} vs Flow-Euler 28-50 steps "
            f"{best_euler:.3f} (tolerance +-{tolerance:.3f}, two standard errors at n={n}); smallest latent "
            f"error {err_dpm:.4f} vs {err_euler:.4f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sana-shapes", help="pipeline folder or zoo name")
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true",
                        help="at most 4 prompts, steps 2,3 and a 8-step reference (CPU smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if args.quick:
        args.prompts = min(args.prompts, 4)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    pipe = SanaPipeline.from_pretrained(args.model, device=device, dtype=torch.float32,
                                        text_encoder_dtype=torch.float32)
    guidance = pipe.config.guidance_scale if args.guidance_scale is None else args.guidance_scale
    steps_list, ref_steps = ((2, 3), 8) if args.quick else (STEPS, REFERENCE_STEPS)
    pairs = heldout_prompts(args.prompts, args.seed)
    prompts = [p for p, _ in pairs]
    size = pipe.default_size
    noise = pipe.initial_noise(len(prompts), size, size, [args.seed * 100_003 + i for i in range(len(prompts))])

    began = time.time()
    reference = run_config(pipe, prompts, noise, "flow-dpm-solver", ref_steps, guidance, args.batch_size)
    euler_reference = run_config(pipe, prompts, noise, "flow-euler", ref_steps, guidance, args.batch_size)
    reference_score = score_images(decode(pipe, reference, args.batch_size), pairs).overall
    rows = []
    for sampler in SAMPLERS:
        for steps in steps_list:
            t0 = time.time()
            latents = run_config(pipe, prompts, noise, sampler, steps, guidance, args.batch_size)
            seconds = time.time() - t0
            report = score_images(decode(pipe, latents, args.batch_size), pairs)
            rows.append({"sampler": sampler, "steps": steps, "score": report.overall,
                         "per_category": report.category_scores(),
                         "latent_rms_error": rms(latents, reference), "seconds": round(seconds, 3)})
            print(f"{sampler:16s} {steps:3d} steps: score {report.overall:.3f}, latent error "
                  f"{rows[-1]['latent_rms_error']:.4f}, {seconds:.2f} s", flush=True)

    result = {
        "model": args.model, "prompts": len(prompts), "seed": args.seed, "guidance_scale": guidance, "flow_shift": pipe.config.flow_shift,
        "reference": {"sampler": "flow-dpm-solver", "steps": ref_steps, "score": reference_score,
                      "euler_vs_dpm_reference_rms": rms(euler_reference, reference)},
        "latent_rms_of_reference": float(reference.float().pow(2).mean().sqrt()),
        "rows": rows, "seconds": round(time.time() - began, 1), "quick": args.quick,
    }
    if not args.quick:
        result["verdict"] = verdict(rows, len(prompts))
    lines = [
        f"Reference: Flow-DPM-Solver, {ref_steps} steps (score {reference_score:.3f}); Flow-Euler at {ref_steps} "
        f"steps is {result['reference']['euler_vs_dpm_reference_rms']:.4f} RMS from it "
        f"(latent RMS {result['latent_rms_of_reference']:.3f}).",
        "",
        "| sampler | steps | score | latent RMS error vs reference | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['score']:.3f} | {r['latent_rms_error']:.4f} | {r['seconds']:.2f} |"
              for r in rows]
    if "verdict" in result:
        lines += ["", f"Paper claim (Flow-DPM-Solver at 14-20 steps matches Flow-Euler at 28-50): {result['verdict']}"]
    name = "sana_sampler_study" + ("_quick" if args.quick else "")
    write_results(name, result, "\n".join(lines), out_dir=args.out, env=environment(str(device)),
                  title=f"SANA sampler study ({len(prompts)} held-out prompts, guidance {guidance}, "
                        f"flow shift {pipe.config.flow_shift})")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
