"""Puts the repository root and benchmarks/ (the shared harness) on the import path of the scripts in
experiments/, and names the folder their results go to (experiments/results/)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
for _folder in (ROOT / "benchmarks", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
