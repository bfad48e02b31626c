"""Run every benchmark under benchmarks/ in its quick (smoke) mode: tiny sizes, each script in its own process,
its results in a temporary folder (never benchmarks/results/), and a pass/fail line with the time per script.

    python benchmarks/run_all.py --quick                      # all of them, two at a time (CI: tests/test_benchmarks.py)
    python benchmarks/run_all.py --quick dcae_tiling vilau_speed --keep /tmp/smoke   # some, keeping their results

A benchmark is every benchmarks/*.py but this file and harness.py. Each one says below (SMOKE) which arguments
run its smoke mode; a script found here but not listed fails, so a new benchmark is run as soon as it is
registered. Results reach the temporary folder through the harness (GENFOUNDRY_BENCH_RESULTS, see harness.py);
"{results}" in a script's arguments is replaced by that folder for scripts that take it as an option. A script
passes when it exits 0 and wrote its results there; the run fails if anything under benchmarks/results/ or
experiments/results/ changed. The processes run with one thread each (OMP_NUM_THREADS=1): on a small shared
machine more threads per process are slower, and the smoke modes measure nothing worth keeping.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from harness import RESULTS, ROOT, RESULTS_ENV

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"harness", "run_all"}

# name -> arguments of its smoke mode, the slowest first (they start first, so two workers finish together)
SMOKE: dict[str, list[str]] = {
    "lego_report": ["--quick", "--skip-area"],
    "gemm_w4a4": ["--device", "cpu", "--no-e2e", "--out", "{results}"],
    "dcae_tiling": ["--quick"],
    "sana_sampler_study": ["--quick"],
    "sana_layout_study": ["--quick"],
    "sana_generate_cli_time": ["--quick", "--threads", "1"],
    "vilau_speed": ["--random", "--quick"],
    "vilau_best_of": ["--quick"],
    "vilau_retrieval": ["--quick"],
    "vilau_validation": ["--quick"],
    "sana_vs_diffusers_cpu": ["--quick"],
    "svdquant_layer_study": ["--quick"],
    "svdquant_quant_time": ["--quick"],
    "sana_linear_attention": ["--quick"],
    "vilau_ablation": ["--quick"],
    "vilau_official_memory": ["--quick"],
}
# what a smoke mode needs besides the Python packages of `make install`: programs on PATH, optional modules;
# without them the script is reported as SKIP with the reason
NEEDS: dict[str, dict[str, list[str]]] = {
    "lego_report": {"programs": ["iverilog"]},
    "gemm_w4a4": {"modules": ["triton"]},
}
# scripts that cannot run here yet, with the reason (reported as SKIP, never silently)
NOT_RUN: dict[str, str] = {
    "sana_gpu": "writes only into benchmarks/results/ (no harness, no results option yet)",
    "svdquant_sana_table": "writes only into benchmarks/results/ (no harness, no results option yet)",
}


@dataclass
class Outcome:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float  # wall time
    cpu_seconds: float = 0.0  # user + system time of the process and its children
    detail: str = ""


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS)


def snapshot(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `folders`: what a smoke run must leave untouched."""
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns)
            for folder in folders if folder.is_dir() for f in folder.rglob("*") if f.is_file()}


def missing_needs(name: str) -> list[str]:
    needs = NEEDS.get(name, {})
    return ([f"{p} on PATH" for p in needs.get("programs", []) if shutil.which(p) is None]
            + [f"the {m} module" for m in needs.get("modules", []) if importlib.util.find_spec(m) is None])


def run_one(name: str, results: Path, timeout: float) -> Outcome:
    if name in NOT_RUN:
        return Outcome(name, "SKIP", 0.0, detail=NOT_RUN[name])
    if missing := missing_needs(name):
        return Outcome(name, "SKIP", 0.0, detail="needs " + " and ".join(missing))
    if name not in SMOKE:
        return Outcome(name, "FAIL", 0.0, detail="no smoke mode registered in benchmarks/run_all.py (SMOKE)")
    results.mkdir(parents=True, exist_ok=True)
    if any(results.iterdir()):
        return Outcome(name, "FAIL", 0.0, detail=f"{results} is not empty (it must hold this run's results alone)")
    args = [a.replace("{results}", str(results)) for a in SMOKE[name]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env[RESULTS_ENV] = str(results)
    log = results / "log.txt"
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        # past the timeout the script and the processes it started (its own session) are killed
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:  # wait4: the exit status and this child's own CPU time (its threads and its children's)
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    seconds, cpu = time.perf_counter() - start, usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
    if seconds >= timeout and code < 0:
        return Outcome(name, "FAIL", seconds, cpu, f"killed after {timeout:.0f} s\n{tail}")
    if code != 0:
        return Outcome(name, "FAIL", seconds, cpu, f"exit {code}\n{tail}")
    written = sorted(p.name for p in results.iterdir() if p.suffix in (".json", ".md"))
    if not written:
        return Outcome(name, "FAIL", seconds, cpu, f"exit 0 but no results written to {results}")
    return Outcome(name, "PASS", seconds, cpu, ", ".join(written))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="the smoke modes (the only mode this runner has)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="scripts run at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per script")
    parser.add_argument("--keep", type=Path, default=None, help="keep the results and logs in this folder")
    args = parser.parse_args(argv)
    if not args.quick:
        parser.error("only --quick is supported: a full measurement is each benchmark's own command")
    found = discover()
    names = args.names or found
    unknown = sorted(set(names) - set(found))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (found: {', '.join(found)})")
    order = sorted(names, key=lambda n: list(SMOKE).index(n) if n in SMOKE else -1)  # unregistered fail first

    guarded = [RESULTS, ROOT / "experiments" / "results"]
    before = snapshot(guarded)
    with tempfile.TemporaryDirectory(prefix="genfoundry-bench-") as tmp:
        base = args.keep or Path(tmp)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_one, n, base / n, args.timeout) for n in order]
            outcomes = []
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                print(f"{outcome.status:4s} {outcome.name:24s} {outcome.seconds:6.1f} s", flush=True)
        total = time.perf_counter() - start
    after = snapshot(guarded)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))

    print(f"\n{'status':6s} {'benchmark':24s} {'wall s':>8s} {'CPU s':>8s}")
    for o in sorted(outcomes, key=lambda o: o.name):
        print(f"{o.status:6s} {o.name:24s} {o.seconds:8.1f} {o.cpu_seconds:8.1f}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "FAIL", "SKIP")}
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {total:.1f} s "
          f"({args.jobs} at a time; {sum(o.cpu_seconds for o in outcomes):.1f} CPU s in all)")
    for o in outcomes:
        if o.status != "PASS":
            print(f"\n{o.status} {o.name}: {o.detail}")
    if changed:
        print("\nFAIL: a smoke run changed recorded results:\n  " + "\n  ".join(changed))
    return 1 if counts["FAIL"] or changed else 0


if __name__ == "__main__":
    sys.exit(main())
