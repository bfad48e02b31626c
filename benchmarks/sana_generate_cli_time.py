"""Wall time of the default `genfoundry generate PROMPT -o out.png` (no flags), as a user runs it.

Each run is a fresh process (interpreter start, imports, loading the embedded model, text encoding,
sampling, DC-AE decoding, PNG write), limited to `--threads` CPU threads. The issue's goal: < 10 s on
2 CPU cores for one 64x64 image. The written image is scored with the ShapeWorld detector as well.

    python benchmarks/sana_generate_cli_time.py                 # 5 runs, 2 threads

Writes benchmarks/results/sana_generate_cli_time.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sana_linear_attention import cpu_name  # same folder: scripts run as `python benchmarks/...`

from genfoundry import hub

RESULTS = Path(__file__).parent / "results"
PROMPT = "a red circle to the left of a blue square"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args(argv)
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
        "machine": f"{cpu_name()}, {args.threads} threads ({os.cpu_count()} cores visible)",
        "date": datetime.date.today().isoformat(), "prompt": args.prompt, "runs": args.runs,
        "wall_s": walls, "median_s": statistics.median(walls), "max_s": max(walls),
        "caption_satisfied": verdicts, "goal_s": 10.0, "meets_goal": max(walls) < 10.0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    hub.write_json_atomic(RESULTS / "sana_generate_cli_time.json", res)
    md = ["# `genfoundry generate` with no flags (embedded sana-shapes)", "",
          f"Machine: {res['machine']}. Fresh process per run; prompt: \"{args.prompt}\".", "",
          "| runs | median wall s | max wall s | goal | caption satisfied |", "| ---: | ---: | ---: | --- | ---: |",
          f"| {args.runs} | {res['median_s']:.2f} | {res['max_s']:.2f} | < 10 s | {sum(verdicts)}/{len(verdicts)} |", ""]
    hub.write_text_atomic(RESULTS / "sana_generate_cli_time.md", "\n".join(md))
    print(f"median {res['median_s']:.2f} s, max {res['max_s']:.2f} s; wrote {RESULTS / 'sana_generate_cli_time'}.json/.md")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
