"""Train the embedded VILA-U default (`vila-u-shapes`) and its no-contrastive ablation on one GPU, then
evaluate both and measure speed.

    python recipes/vilau_shapes_gpu.py --out runs/vilau            # ~5 minutes of training on an H100/H200
    python recipes/vilau_shapes_gpu.py --out /tmp/v --quick         # CPU smoke test with the tiny preset

The two trainings (tower with and without the contrastive loss, each followed by its LLM stage) run as
two processes side by side on the same GPU; the small models leave it mostly idle, so both fit the
time budget. Writes OUT/main/model (the folder to copy to genfoundry/zoo/vila-u-shapes),
OUT/ablation/model, and OUT/results/vilau_eval.{json,md} + vilau_train.json + vilau_speed.{json,md}
(`--results DIR` elsewhere; benchmarks/results holds the embedded model's evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(config_json: str) -> None:
    from genfoundry.vilau.train import TrainConfig, train

    train(TrainConfig(**json.loads(config_json)))


def eval_one(model_dir: str, out_json: str, quick: bool) -> None:
    import torch

    from genfoundry.vilau.evaluate import evaluate_all, write_results
    from genfoundry.vilau.model import VilaU

    model = VilaU.from_pretrained(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    write_results(evaluate_all(model, quick=quick), out_json)


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, __file__, *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def wait_all(procs: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    for name, p in procs.items():
        if p.wait() != 0:
            print(logs[name].read_text()[-4000:])
            raise SystemExit(f"{name} failed (exit {p.returncode}); log: {logs[name]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "vilau")
    parser.add_argument("--minutes-tower", type=float, default=1.5)
    parser.add_argument("--minutes-llm", type=float, default=3.0)
    parser.add_argument("--tower-batch", type=int, default=128)
    parser.add_argument("--llm-batch", type=int, default=96)
    parser.add_argument("--no-ablation", action="store_true", help="Train only the contrastive model.")
    parser.add_argument("--quick", action="store_true", help="Tiny preset, a few steps, CPU (smoke test).")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: OUT/results)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--eval-one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        return run_one(args.run_one)
    if args.eval_one:
        return eval_one(*args.eval_one, quick=args.quick)

    args.out.mkdir(parents=True, exist_ok=True)
    args.results = args.results or args.out / "results"
    args.results.mkdir(parents=True, exist_ok=True)
    variants = {"main": True} if args.no_ablation else {"main": True, "ablation": False}
    base = {"preset": "tiny" if args.quick else "shapes", "seed": 0, "warmup_steps": 5 if args.quick else 200,
            "tower_lr": 1e-3, "llm_lr": 1e-3, "ema_decay": 0.0, "log_every": 2 if args.quick else 50,
            "save_every": 10_000, "num_workers": 0 if args.quick else 4, "device": "cpu" if args.quick else "auto"}
    if args.quick:
        base.update(tower_steps=4, llm_steps=4, batch_size=8)
    else:
        # Step counts are upper bounds: the time budgets end each stage (and drive its LR schedule).
        base.update(tower_steps=100_000, llm_steps=100_000, batch_size=args.tower_batch, llm_batch_size=args.llm_batch,
                    max_seconds_tower=args.minutes_tower * 60, max_seconds_llm=args.minutes_llm * 60)
    began = time.time()
    procs, logs = {}, {}
    for name, contrastive in variants.items():
        cfg = dict(base, out=str(args.out / name), contrastive=contrastive)
        logs[name] = args.out / f"{name}.log"
        procs[name] = spawn(["--run-one", json.dumps(cfg)], logs[name])
    wait_all(procs, logs)
    train_seconds = time.time() - began
    print(f"training finished in {train_seconds:.0f} s", flush=True)
    procs, logs = {}, {}
    for name in variants:
        logs[f"eval-{name}"] = args.out / f"eval-{name}.log"
        procs[f"eval-{name}"] = spawn(["--eval-one", str(args.out / name / "model"), str(args.out / f"eval-{name}.json")]
                                      + (["--quick"] if args.quick else []), logs[f"eval-{name}"])
    wait_all(procs, logs)
    from genfoundry import hub
    from genfoundry.vilau.evaluate import results_markdown

    results = {name: json.loads((args.out / f"eval-{name}.json").read_text()) for name in variants}
    train_summary = {name: json.loads((args.out / name / "summary.json").read_text()) for name in variants}
    hub.write_json_atomic(args.results / "vilau_eval.json", {"train_seconds": train_seconds, **results})
    hub.write_json_atomic(args.results / "vilau_train.json", train_summary)
    md = [results_markdown(results["main"], "VILA-U (contrastive tower) on held-out ShapeWorld")]
    if "ablation" in results:
        md.append(results_markdown(results["ablation"], "Ablation: tower trained without the contrastive loss"))
    hub.write_text_atomic(args.results / "vilau_eval.md", "\n".join(md))
    speed_args = [sys.executable, str(ROOT / "benchmarks" / "vilau_speed.py"), "--model", str(args.out / "main" / "model"),
                  "--results", str(args.results)] + (["--quick", "--device", "cpu"] if args.quick else [])
    speed = subprocess.run(speed_args, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if speed.returncode != 0:
        print(speed.stdout[-2000:], speed.stderr[-4000:])
    speed_name = "vilau_speed_quick" if args.quick else "vilau_speed"
    speed_md = (args.results / f"{speed_name}.md").read_text() if speed.returncode == 0 else "(speed benchmark failed)"
    card = model_card(results, train_summary, train_seconds, speed_md)
    hub.write_text_atomic(args.out / "main" / "model" / "README.md", card)
    print(json.dumps(train_summary))
    print("\n".join(md))
    print(speed_md)
    print(f"model folder for genfoundry/zoo/vila-u-shapes: {args.out / 'main' / 'model'}")


def model_card(results: dict, train_summary: dict, train_seconds: float, speed_md: str) -> str:
    from genfoundry.vilau.evaluate import results_markdown

    lines = [
        "# vila-u-shapes", "",
        "VILA-U (unified vision tower + Llama LLM with a depth transformer) trained from scratch on ShapeWorld",
        "64x64 by `recipes/vilau_shapes_gpu.py` (genfoundry). Tower: conv encoder -> 8x8 tokens, residual",
        "quantization depth 4 with 512-code EMA codebooks, conv decoder, SigLIP sigmoid alignment to a frozen",
        "random-init SigLIP text encoder. LLM: 4-layer Llama (hidden 256) + 2-layer depth transformer.",
        f"Stage 1 and stage 2 together trained for {train_seconds:.0f} s of wall time on one GPU (both variants",
        "side by side). Numbers below were measured by the same script on held-out ShapeWorld scenes.", "",
        results_markdown(results["main"], "Evaluation"),
    ]
    if "ablation" in results:
        lines.append(results_markdown(results["ablation"], "Ablation (tower without the contrastive loss)"))
    lines += ["## Training losses (first/last logged averages)", "", "```", json.dumps(train_summary["main"], indent=1),
              "```", "", speed_md]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
