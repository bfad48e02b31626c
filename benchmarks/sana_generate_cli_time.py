"""Wall time of the default `genfoundry generate PROMPT -o out.png` (no flags), as a user runs it.

Each run is a fresh process (interpreter start, imports, loading the embedded model, text encoding,
sampling, DC-AE decoding, PNG write), limited to `--threads` CPU threads. The issue's goal: < 10 s on
2 CPU cores for one 64x64 image. The written image is scored with the ShapeWorld detector as well.

    python benchmarks/sana_generate_cli_time.py                 # 5 runs, 2 threads
    python benchmarks/sana_generate_cli_time.py --quick         # 1 run (smoke test)

Writes benchmarks/results/sana_generate_cli_time{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import environment, write_results

PROMPT = "a red circle to the left of a blue square"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--quick", action="store_true", help="one run (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = 1
    exe = shutil.which("genfoundry") or str(Path(sys.executable).with_name("genfoundry"))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    from genfoundry.shapes import evaluate

    walls, verdicts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"gen_{i}.png"
            t = time.perf_counter()
            proc = subprocess.run([exe, "generate", args.prompt, "-o", str(out)], env=env,
                                  capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise SystemExit(f"genfoundry generate failed ({proc.returncode}):\n{proc.stderr}")
            verdicts.append(evaluate(out, args.prompt)["correct"])
            print(f"run {i}: {walls[-1]:.2f} s, caption satisfied: {verdicts[-1]}", flush=True)
    res = {
        "threads": args.threads, "prompt": args.prompt, "runs": args.runs,
        "wall_s": walls, "median_s": statistics.median(walls), "max_s": max(walls),
        "caption_satisfied": verdicts, "goal_s": 10.0, "meets_goal": max(walls) < 10.0,
    }
    md = [f"{args.threads} threads; a fresh process per run; prompt: \"{args.prompt}\".", "",
          "| runs | median wall s | max wall s | goal | caption satisfied |", "| ---: | ---: | ---: | --- | ---: |",
          f"| {args.runs} | {res['median_s']:.2f} | {res['max_s']:.2f} | < 10 s | {sum(verdicts)}/{len(verdicts)} |"]
    name = "sana_generate_cli_time_quick" if args.quick else "sana_generate_cli_time"
    json_path, _ = write_results(name, res, "\n".join(md), env=environment("cpu"),
                                 title="`genfoundry generate` with no flags (embedded sana-shapes)")
    print(f"median {res['median_s']:.2f} s, max {res['max_s']:.2f} s; wrote {json_path.with_suffix('')}.json/.md")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
