"""The benchmarks keep running: `benchmarks/run_all.py --quick` runs every one of them in its smoke mode
(tiny sizes, results in a temporary folder) and fails if any script fails or touches the recorded results.
This is how CI runs the benchmarks; it is the suite's one slow test (about a minute and a half on 2 cores),
marked `slow` so that `pytest -m "not slow"` leaves it out while working."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_all(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_every_benchmark_runs_in_its_quick_mode():
    proc = run_all("--quick")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " 0 failed" in proc.stdout


def test_run_all_knows_every_benchmark_and_refuses_a_full_run(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_all as runner
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    registered = set(runner.SMOKE) | set(runner.NOT_RUN)
    assert set(runner.discover()) == registered, "register each benchmark's smoke arguments in run_all.SMOKE"
    assert not set(runner.SMOKE) & set(runner.NOT_RUN) and set(runner.NEEDS) <= set(runner.SMOKE)
    # a benchmark without a registered smoke mode fails instead of being left out
    outcome = runner.run_one("not_registered", tmp_path / "x", timeout=10)
    assert outcome.status == "FAIL" and "no smoke mode" in outcome.detail
    proc = run_all()
    assert proc.returncode == 2 and "--quick" in proc.stderr
