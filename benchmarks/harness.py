"""The shared benchmark harness: timing with warm-up, the environment a number was measured on, and one
writer for results (JSON + markdown under benchmarks/results/).

A benchmark script imports it as ``from harness import ...`` (scripts run as ``python benchmarks/x.py``,
so this folder is on the path; experiments/ scripts put it there themselves) and ends with
``write_results(name, payload, markdown)``. Results go to ``results_dir()``: the folder named by the
environment variable GENFOUNDRY_BENCH_RESULTS when it is set (``benchmarks/run_all.py --quick`` points it at
a temporary folder, so smoke runs never touch the recorded results), else the script's default.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_ENV = "GENFOUNDRY_BENCH_RESULTS"


def results_dir(default: Path | None = None) -> Path:
    """The folder results go to: $GENFOUNDRY_BENCH_RESULTS when set, else `default`, else benchmarks/results."""
    override = os.environ.get(RESULTS_ENV)
    if override:
        return Path(override)
    return Path(default) if default is not None else RESULTS


def _script_command() -> str:
    """The command line as run from the repository root: 'benchmarks/x.py --quick'."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return " ".join([shown, *sys.argv[1:]])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str | None = None) -> dict:
    """Where a result was measured: the device by name, CPU, core count, library versions, commit."""
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "commit": _git_commit(),
        "command": _script_command(),
    }
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(device=props.name, capability=f"sm_{props.major}{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        cpu = env["cpu"] if "CPU" in env["cpu"].upper() else f"{env['cpu']} CPU"
        env["device"] = f"{os.cpu_count()} cores of an {cpu}"
    return env


def device_label(env: Mapping) -> str:
    """The hardware as a reader wants it named: 'NVIDIA H100 80GB HBM3' or '2 cores of an AMD EPYC ...'."""
    return str(env.get("device", "unknown device"))


def synchronize(device: str | None) -> None:
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timing_stats(times_ms: Sequence[float]) -> dict:
    """Median, mean and min of a list of milliseconds, how many there were, and the list itself."""
    return {"median_ms": statistics.median(times_ms), "mean_ms": statistics.fmean(times_ms), "min_ms": min(times_ms),
            "calls": len(times_ms), "all_ms": list(times_ms)}


def time_fn(fn: Callable[[], object], *, warmup: int = 3, repeat: int = 10, device: str | None = None,
            min_seconds: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time `fn()` after `warmup` calls: `repeat` timed calls (more if `min_seconds` is not reached).

    On CUDA each call is bracketed by synchronisation so the time is the work's, not the launch's.
    `clock` is wall time by default; ``time.process_time`` measures the process's CPU time instead (steadier
    on a shared machine with one thread). Returns milliseconds: median, mean, min, and the number of calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all) < min_seconds:
        t0 = clock()
        fn()
        synchronize(device)
        times.append((clock() - t0) * 1e3)
        if len(times) >= 10_000:
            break
    return timing_stats(times)


def time_interleaved(fns: Mapping[str, Callable[[int], object]], *, repeat: int, warmup: int = 0,
                     clocks: Mapping[str, Callable[[], float]] | None = None,
                     device: str | None = None) -> tuple[dict[str, dict[str, dict]], dict[str, list]]:
    """Time several ways of doing the same work side by side: each of `repeat` rounds calls every fn in turn
    with the round's index, so a drift in the machine's speed reaches all of them alike instead of whichever
    ran last. `warmup` untimed rounds come first. `clocks` maps a name to a clock (default: wall time).

    Returns ({way: {clock name: timing_stats}}, {way: [its return value in each timed round]})."""
    clocks = dict(clocks or {"wall": time.perf_counter})
    for r in range(warmup):
        for fn in fns.values():
            fn(r)
    synchronize(device)
    times = {name: {c: [] for c in clocks} for name in fns}
    outputs: dict[str, list] = {name: [] for name in fns}
    for r in range(repeat):
        for name, fn in fns.items():
            start = {c: clock() for c, clock in clocks.items()}
            outputs[name].append(fn(r))
            synchronize(device)
            for c, clock in clocks.items():
                times[name][c].append((clock() - start[c]) * 1e3)
    return {name: {c: timing_stats(t) for c, t in per.items()} for name, per in times.items()}, outputs


def cuda_time_fn(fn: Callable[[], object], *, warmup: int = 10, repeat: int = 50) -> dict:
    """GPU time of `fn()` from CUDA events (launch overhead hidden where kernels queue back to back)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "min_ms": min(times),
            "calls": repeat}


def markdown_table(rows: Sequence[Mapping], columns: Iterable[str] | None = None,
                   formats: Mapping[str, str] | None = None) -> str:
    """A markdown table of `rows` (dicts); `formats` maps a column to a format spec such as '.3f'."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    formats = formats or {}

    def cell(row: Mapping, col: str) -> str:
        value = row.get(col, "")
        if value is None:
            return ""
        if col in formats and isinstance(value, (int, float)):
            return format(value, formats[col])
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, payload: Mapping, markdown: str, *, out_dir: Path | None = None,
                  default_dir: Path | None = None, env: Mapping | None = None,
                  title: str | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (payload + environment) and ``<name>.md`` (title, the hardware and
    the command, then `markdown`), each atomically. `out_dir` is a folder the user asked for; without one,
    ``results_dir(default_dir)``. Returns both paths."""
    from genfoundry.hub import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir) if out_dir is not None else results_dir(default_dir)
    env = dict(env or environment())
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_json_atomic(json_path, {"benchmark": name, "environment": env, **payload})
    threads = env.get("torch_threads")
    header = (f"# {title or name}\n\nMeasured on {device_label(env)} with `python {env['command']}`"
              f" (torch {env['torch']}, {threads} thread{'' if threads == 1 else 's'}, "
              f"commit {env.get('commit') or 'unknown'}).\n\n")
    write_text_atomic(md_path, header + markdown.rstrip() + "\n")
    return json_path, md_path


def print_json(obj) -> None:
    print(json.dumps(obj, default=str), flush=True)
