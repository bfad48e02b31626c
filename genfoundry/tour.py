"""`genfoundry tour -o OUT`: the main job. All four systems on the embedded defaults, one stage after
another, into one folder with a self-contained OUT/report.html and every number in OUT/report.json.

Stages (each prints a progress line; `--skip NAME` leaves one out; a stage that fails is reported, on
stderr and in the report, and the others still run):

  shapeworld  held-out ShapeWorld renders of the five GenEval categories, scored by the detector
  sana        the SANA model draws held-out prompts of the five categories, scored by the same detector
  svdquant    SVDQuant W4A4 (the default format) of SANA's transformer, cached in OUT/svdquant/ and reused
              when model and settings match; it draws the same prompts and seeds: PSNR/SSIM against the
              16-bit images, score, bytes; round-to-nearest W4A4 and weight-only NF4 beside it
  vilau       VILA-U answers questions about SANA's images and about the renders, and draws the prompts
  lego        the accelerator for one layer of the quantized SANA (its svdq operator with that layer's
              shapes): Verilog, bit-exact simulation on the layer's own integer tensors (Verilator or
              Icarus; otherwise the cycle model), cycles of every quantized layer, coarse area, and the
              speed-up over the Gemmini-like baseline

A later stage that needs an earlier one's result (VILA-U asks about SANA's images, LEGO needs the
quantized SANA) computes it when that stage was skipped.
"""

from __future__ import annotations

import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

import typer

from genfoundry.errors import InputError, one_line

STAGE_NAMES = ("shapeworld", "sana", "svdquant", "vilau", "lego")
HELDOUT_RENDERS = 999_983  # the ShapeWorld stream of held-out renders (VILA-U's held-out evaluation stream)
BASELINE_METHODS = {  # beside SVDQuant for the PSNR-against-bytes plot: (label, QuantConfig overrides)
    "rtn": ("RTN W4A4", {"method": "rtn"}),
    "w4a16": ("W4A16 NF4", {"method": "w4a16"}),
}
VILAU_CFG = 3.0


@dataclass
class TourConfig:
    output: Path = Path("out")
    count: int = 10  # held-out prompts (and renders), balanced over the five categories
    seed: int = 0
    size: int = 64  # canvas of the renders
    sana_model: str = "sana-shapes"
    vilau_model: str = "vila-u-shapes"
    device: str = "auto"
    skip: tuple[str, ...] = ()
    steps: int | None = None  # SANA sampling steps (None: the model's own)
    calib_prompts: int = 16  # SVDQuant calibration captions ...
    calib_steps: int = 10  # ... and sampling steps each
    baselines: tuple[str, ...] = ("rtn", "w4a16")
    vilau_candidates: int = 8  # VILA-U draws this many per prompt and keeps its own favourite
    lego_layer: str | None = None  # default: the first block's self-attention query projection
    lego_array: str = "8x8"  # LEGO and the Gemmini-like baseline at the same size (64 MACs each)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        unknown = sorted(set(self.skip) - set(STAGE_NAMES))
        if unknown:
            raise InputError(f"--skip {', '.join(unknown)}: unknown stage; expected some of {', '.join(STAGE_NAMES)}")
        unknown = sorted(set(self.baselines) - set(BASELINE_METHODS))
        if unknown:
            raise InputError(f"unknown baseline method(s) {unknown}; expected some of {', '.join(BASELINE_METHODS)}")
        for name in ("count", "calib_prompts", "calib_steps", "vilau_candidates"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children: simulators, Yosys)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime


class TourRun:
    """What the stages share, each computed once when first needed: the prompts, the models, SANA's
    16-bit images and the quantized SANA."""

    def __init__(self, config: TourConfig) -> None:
        from genfoundry.devices import resolve_device

        self.config = config
        self.output = config.output
        self.device = resolve_device(config.device)
        self.results: dict[str, dict] = {}
        self.quantized_from_cache: bool | None = None

    def path(self, *parts: str) -> Path:
        """A path under the output folder (its parent made)."""
        p = self.output.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def rel(self, path: Path) -> str:
        return path.relative_to(self.output).as_posix()

    def save_images(self, images: list, folder: str) -> list[str]:
        from genfoundry.hub import atomic_path

        files = []
        for i, image in enumerate(images):
            target = self.path(folder, f"{i:03d}.png")
            with atomic_path(target) as tmp:
                image.save(tmp, format="PNG")
            files.append(self.rel(target))
        return files

    def save_sheet(self, images: list, captions: list[str], name: str) -> None:
        from genfoundry.hub import atomic_path

        with atomic_path(self.path(name)) as tmp:
            contact_sheet(images, captions).save(tmp, format="PNG")

    # ---------------------------------------------------------------- prompts and SANA
    @cached_property
    def prompts(self) -> list[tuple[str, str]]:
        from genfoundry.sana.evaluate import heldout_prompts

        return heldout_prompts(self.config.count, seed=self.config.seed)

    @property
    def captions(self) -> list[str]:
        return [caption for caption, _ in self.prompts]

    @property
    def seeds(self) -> list[int]:
        return [self.config.seed + i for i in range(self.config.count)]

    def load_sana(self):
        from genfoundry.sana import SanaPipeline

        return SanaPipeline.from_pretrained(self.config.sana_model, device=self.device)

    @cached_property
    def sana(self):
        return self.load_sana()

    def draw(self, pipe) -> list:
        images = []
        for start in range(0, len(self.captions), 10):
            images += pipe(self.captions[start:start + 10], steps=self.config.steps, seed=self.seeds[start:start + 10],
                           progress=False, warn_unknown_words=False)
        return images

    @cached_property
    def sana_images(self) -> list:
        return self.draw(self.sana)

    # ---------------------------------------------------------------- SVDQuant
    def quant_config(self, **overrides):
        """SVDQuant's defaults (the recommended W4A4 format) unless `overrides` say otherwise."""
        from genfoundry.svdquant import QuantConfig

        return QuantConfig(**{"method": "svdquant", **overrides}, seed=self.config.seed, progress=False,
                           indivisible="skip")

    @property
    def calibration(self):
        from genfoundry.models import Calibration

        return Calibration(prompts=self.config.calib_prompts, steps=self.config.calib_steps, seed=self.config.seed)

    @cached_property
    def quantized_sana(self):
        """SANA with the recommended SVDQuant W4A4 transformer: the cached file under OUT/svdquant/ when it
        was made from the same model weights with the same settings, else quantized now and cached."""
        from genfoundry.models import load_quantized_cached

        pipe, self.quantized_from_cache = load_quantized_cached(
            self.config.sana_model, self.quantized_file, self.quant_config(), self.calibration, self.device)
        return pipe

    def quantized_baseline(self, overrides: dict):
        """A fresh SANA pipeline quantized by a method that uses no calibration statistics (RTN,
        weight-only): one short pass only tells which layers run."""
        from genfoundry.models import Calibration
        from genfoundry.sana.quantization import FAMILY
        from genfoundry.svdquant import quantize

        pipe = self.load_sana()
        touch = Calibration(prompts=1, steps=2, batch_size=1, seed=self.config.seed)
        quantize(pipe.transformer, FAMILY.calibrator(pipe, touch), self.quant_config(**overrides))
        return pipe

    @property
    def quantized_file(self) -> Path:
        return self.path("svdquant", "sana-svdquant-w4a4.safetensors")

    # ---------------------------------------------------------------- ShapeWorld renders
    @cached_property
    def scenes(self) -> list:
        from genfoundry.shapes import CATEGORIES
        from genfoundry.shapes.dataset import scene_at

        c = self.config
        return [scene_at(HELDOUT_RENDERS + c.seed, i, c.size, categories=(CATEGORIES[i % len(CATEGORIES)],))
                for i in range(c.count)]


def contact_sheet(images, captions, columns: int = 4, scale: int = 2):
    """Images in a grid with their captions underneath (PIL default font)."""
    from PIL import Image, ImageDraw

    tile = images[0].width * scale
    label = 26
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (tile + 8) + 8, rows * (tile + label + 8) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x = 8 + (i % columns) * (tile + 8)
        y = 8 + (i // columns) * (tile + label + 8)
        sheet.paste(image.resize((tile, tile), Image.NEAREST), (x, y))
        words, line, lines = caption.split(), "", []
        for w in words:
            if len(line) + len(w) + 1 > tile // 6:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        draw.multiline_text((x, y + tile + 1), "\n".join(lines[:2]), fill=(0, 0, 0), spacing=1)
    return sheet


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "progress"}


def _scored(images: list, captions: list[str], files: list[str]) -> list[dict]:
    """One row per image: its file, caption, the detector's verdict and the constraints that failed."""
    from genfoundry.shapes import evaluate

    rows = []
    for image, caption, file in zip(images, captions, files):
        verdict = evaluate(image, caption)
        failed = sorted({c["type"] for c in verdict["constraints"] if not c["ok"]})
        rows.append({"file": file, "caption": caption, "correct": bool(verdict["correct"]), "failed": failed})
    return rows


def _per_category(rows: list[dict], categories: list[str]) -> dict:
    from collections import defaultdict

    from genfoundry.shapes import CATEGORIES

    hits: dict[str, list[bool]] = defaultdict(list)
    for row, category in zip(rows, categories):
        hits[category].append(row["correct"])
    per = {c: sum(hits[c]) / len(hits[c]) for c in CATEGORIES if hits[c]}
    return {"score": sum(r["correct"] for r in rows) / len(rows), "per_category": per}


# ---------------------------------------------------------------------------------------------------
# stages: each takes the run and returns its section of the report


def stage_shapeworld(run: TourRun) -> dict:
    from genfoundry.shapes import render_scene

    images = [render_scene(s) for s in run.scenes]
    rows = _scored(images, [s.caption for s in run.scenes], run.save_images(images, "shapeworld"))
    run.save_sheet(images, [s.caption for s in run.scenes], "shapeworld_grid.png")
    for row, scene in zip(rows, run.scenes):
        row["category"] = scene.category
    result = {"renders": rows, **_per_category(rows, [s.category for s in run.scenes])}
    result["summary"] = f"{len(rows)} renders, detector score {result['score']:.2f}"
    return result


def stage_sana(run: TourRun) -> dict:
    rows = _scored(run.sana_images, run.captions, run.save_images(run.sana_images, "sana"))
    run.save_sheet(run.sana_images, run.captions, "sana_grid.png")
    for row, (_, category), seed in zip(rows, run.prompts, run.seeds):
        row.update(category=category, seed=seed)
    result = {"model": run.config.sana_model, "steps": run.config.steps or run.sana.config.steps,
              "images": rows, **_per_category(rows, [c for _, c in run.prompts])}
    result["summary"] = f"{len(rows)} held-out prompts, score {result['score']:.2f}"
    return result


def _method_row(run: TourRun, name: str, label: str, pipe) -> dict:
    from genfoundry.svdquant.metrics import deployed_bytes, image_distance

    images = run.draw(pipe)
    rows = _scored(images, run.captions, run.save_images(images, f"svdquant/{name}"))
    distance = image_distance(images, run.sana_images)
    for row, p, s in zip(rows, distance["psnr_db_per_image"], distance["ssim_per_image"]):
        row.update(psnr_db=p, ssim=s)
    config = getattr(pipe.transformer, "svdquant_config", {})
    return {"method": name, "label": label, "weight": config.get("weight"), "act": config.get("act"),
            "rank": config.get("rank"), "bytes": deployed_bytes(pipe.transformer), "psnr_db": distance["psnr_db"],
            "ssim": distance["ssim"], "images": rows, **_per_category(rows, [c for _, c in run.prompts])}


def stage_svdquant(run: TourRun) -> dict:
    from genfoundry.svdquant.metrics import deployed_bytes

    began = time.perf_counter()
    quantized = run.quantized_sana
    quantize_seconds = time.perf_counter() - began
    config = quantized.transformer.svdquant_config
    label = f"SVDQuant W4A4 {config['weight']} r{config['rank']}"
    methods = [{"method": "16-bit", "label": "16-bit (reference)", "bytes": deployed_bytes(run.sana.transformer),
                "psnr_db": None, "ssim": 1.0, **_per_category(_scored(run.sana_images, run.captions,
                                                                       [""] * len(run.captions)),
                                                              [c for _, c in run.prompts])},
               _method_row(run, "svdquant", label, quantized)]
    for name in run.config.baselines:
        base_label, overrides = BASELINE_METHODS[name]
        methods.append(_method_row(run, name, base_label, run.quantized_baseline(overrides)))
    main = methods[1]
    result = {"file": run.rel(run.quantized_file),
              "from_cache": run.quantized_from_cache, "quantize_seconds": quantize_seconds,
              "config": _comparable(config), "calibration": asdict(run.calibration), "methods": methods}
    result["summary"] = (f"{label}: PSNR {main['psnr_db']:.1f} dB, SSIM {main['ssim']:.3f}, score {main['score']:.2f}, "
                         f"{methods[0]['bytes'] / main['bytes']:.2f}x fewer bytes"
                         + (" (cached file)" if run.quantized_from_cache else ""))
    return result


def stage_vilau(run: TourRun) -> dict:
    import random

    from genfoundry.shapes import caption_questions, render_scene
    from genfoundry.shapes.qa import questions
    from genfoundry.vilau import VilaU
    from genfoundry.vilau.generate import answer_batch, generate_images

    vila = VilaU.from_pretrained(run.config.vilau_model, device=run.device)
    rng = random.Random(f"tour-vilau:{run.config.seed}")

    def ask(images: list, qa_lists: list[list[tuple[str, str]]], files: list[str], correct: list[bool]) -> list[dict]:
        flat = [(i, q, a) for i, qa in enumerate(qa_lists) for q, a in qa]
        answers = answer_batch(vila, [images[i] for i, _, _ in flat], [q for _, q, _ in flat], max_new_tokens=4)
        out = [{"file": f, "image_correct": ok, "questions": []} for f, ok in zip(files, correct)]
        for (i, q, a), got in zip(flat, answers):
            out[i]["questions"].append({"question": q, "expected": a, "answer": got, "right": got == a})
        return out

    def accuracy(rows: list[dict], only_correct_images: bool = False) -> float | None:
        marks = [q["right"] for r in rows if r["image_correct"] or not only_correct_images for q in r["questions"]]
        return sum(marks) / len(marks) if marks else None

    # SANA's images: the questions their captions fix; they hold where the detector says the image is right
    sana_rows = run.results.get("sana", {}).get("images") or _scored(
        run.sana_images, run.captions, run.save_images(run.sana_images, "sana"))
    sana_qa = [rng.sample(caption_questions(c), min(3, len(caption_questions(c)))) for c in run.captions]
    about_sana = ask(run.sana_images, sana_qa, [r["file"] for r in sana_rows], [r["correct"] for r in sana_rows])
    # ShapeWorld renders: their own questions, whose answers are true of the picture
    renders = [render_scene(s) for s in run.scenes]
    render_files = run.save_images(renders, "shapeworld")  # the same files the shapeworld stage writes
    render_qa = [rng.sample(questions(s), min(3, len(questions(s)))) for s in run.scenes]
    about_renders = ask(renders, render_qa, render_files, [True] * len(renders))
    drawn = generate_images(vila, run.captions, cfg=VILAU_CFG, seed=run.config.seed,
                            candidates=run.config.vilau_candidates)
    rows = _scored(drawn, run.captions, run.save_images(drawn, "vilau"))
    for row, (_, category) in zip(rows, run.prompts):
        row["category"] = category
    result = {
        "model": run.config.vilau_model, "cfg": VILAU_CFG, "candidates": run.config.vilau_candidates,
        "about_sana": about_sana, "about_renders": about_renders,
        "vqa_renders": accuracy(about_renders), "vqa_sana": accuracy(about_sana),
        "vqa_sana_correct_images": accuracy(about_sana, only_correct_images=True),
        "images": rows, **_per_category(rows, [c for _, c in run.prompts]),
    }
    result["summary"] = (f"VQA on renders {result['vqa_renders']:.2f}, on SANA's images {result['vqa_sana']:.2f}; "
                         f"its own drawings score {result['score']:.2f}")
    return result


def stage_lego(run: TourRun) -> dict:
    from genfoundry.accelerate import layer_accelerator

    result = layer_accelerator(run.quantized_sana, run.captions[0], run.seeds[0], run.path("lego", "report.json").parent,
                               layer=run.config.lego_layer, array=run.config.lego_array)
    checked = "simulated, bit-exact" if result["bit_exact"] else (
        "simulated, NOT bit-exact" if result["bit_exact"] is False else result["cycles_from"])
    result["summary"] = (f"{result['layer']} ({result['spec']}): {result['cycles']} cycles ({checked}), "
                         f"{result['speedup']:.2f}x over the Gemmini-like baseline; whole model "
                         f"{result['layers']['speedup']:.2f}x")
    return result


STAGES: dict[str, tuple[Callable[[TourRun], dict], str]] = {
    "shapeworld": (stage_shapeworld, "held-out ShapeWorld renders, scored by the detector"),
    "sana": (stage_sana, "SANA draws held-out prompts of the five categories"),
    "svdquant": (stage_svdquant, "SVDQuant W4A4 of SANA draws the same prompts and seeds"),
    "vilau": (stage_vilau, "VILA-U answers questions about the images and draws the prompts"),
    "lego": (stage_lego, "LEGO builds and simulates the accelerator of one quantized SANA layer"),
}


def run_tour(config: TourConfig, echo: Callable[[str], None] = print,
             echo_error: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict:
    """Run every stage not skipped, write OUT/report.json and OUT/report.html; returns the report."""
    from genfoundry.hub import write_json_atomic
    from genfoundry.report import write_report

    config.output.mkdir(parents=True, exist_ok=True)
    run = TourRun(config)
    wall0, cpu0 = _clock()
    stages: dict[str, dict] = {}
    for index, name in enumerate(STAGE_NAMES, 1):
        stage, what = STAGES[name]
        prefix = f"[{index}/{len(STAGE_NAMES)}] {name}"
        if name in config.skip:
            stages[name] = {"status": "skipped"}
            echo(f"{prefix}: skipped")
            continue
        echo(f"{prefix}: {what} ...")
        wall, cpu = _clock()
        try:
            result = stage(run)
            status = {"status": "ok"}
        except Exception as err:  # noqa: BLE001 - a failing stage is reported; the others still run
            result = {}
            status = {"status": "failed", "error": one_line(err), "traceback": traceback.format_exc()}
            echo_error(f"error: stage {name} failed: {one_line(err)}")
        wall_end, cpu_end = _clock()
        stages[name] = {**status, "seconds": wall_end - wall, "cpu_seconds": cpu_end - cpu, **result}
        run.results[name] = stages[name]
        if status["status"] == "ok":
            echo(f"{' ' * len(prefix)}  {result.get('summary', 'done')} ({wall_end - wall:.1f} s)")
    wall_end, cpu_end = _clock()
    report = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
              "device": str(run.device), "environment": _environment(),
              "seconds": wall_end - wall0, "cpu_seconds": cpu_end - cpu0, "stages": stages}
    write_json_atomic(config.output / "report.json", report)
    write_report(report, config.output)
    return report


def _environment() -> dict:
    import os
    import platform

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_at_end": list(load) if load else None}


def register(app: typer.Typer) -> None:
    @app.command("tour")
    def tour_command(
        output: Path = typer.Option(Path("out"), "-o", "--output", help="folder to write"),
        count: int = typer.Option(10, help="held-out prompts (and renders), two per category by default"),
        seed: int = typer.Option(0, help="random seed of prompts, renders, sampling and quantization"),
        skip: Optional[list[str]] = typer.Option(
            None, "--skip", help=f"leave a stage out (repeatable): {', '.join(STAGE_NAMES)}"),
        sana_model: str = typer.Option("sana-shapes", "--sana-model", help="SANA pipeline: zoo name or folder"),
        vilau_model: str = typer.Option("vila-u-shapes", "--vilau-model", help="VILA-U: zoo name or folder"),
        steps: Optional[int] = typer.Option(None, help="SANA sampling steps (default: the model's)"),
        calib_prompts: int = typer.Option(16, "--calib-prompts", help="SVDQuant calibration captions"),
        calib_steps: int = typer.Option(10, "--calib-steps", help="sampling steps of each calibration caption"),
        baselines: str = typer.Option("rtn,w4a16", help="quantization methods drawn beside SVDQuant "
                                                         f"(comma-separated: {', '.join(BASELINE_METHODS)}; '' for none)"),
        vilau_candidates: int = typer.Option(8, "--vilau-candidates", help="VILA-U images drawn per prompt (best kept)"),
        lego_layer: Optional[str] = typer.Option(
            None, "--lego-layer", help="quantized SANA layer to build (default transformer_blocks.0.attn1.to_q)"),
        lego_array: str = typer.Option("8x8", "--lego-array",
                                       help="FU array of the accelerator and of the baseline it is compared with"),
        size: int = typer.Option(64, help="canvas size of the renders (a multiple of 32)"),
        device: str = typer.Option("auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N"),
    ) -> None:
        """Run all four systems on the embedded defaults; write OUTPUT/report.html and report.json."""
        config = TourConfig(output=output, count=count, seed=seed, size=size, sana_model=sana_model,
                            vilau_model=vilau_model, device=device, skip=tuple(skip or ()), steps=steps,
                            calib_prompts=calib_prompts, calib_steps=calib_steps,
                            baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
                            vilau_candidates=vilau_candidates, lego_layer=lego_layer, lego_array=lego_array)
        report = run_tour(config, echo=typer.echo, echo_error=lambda line: typer.echo(line, err=True))
        failed = [n for n, s in report["stages"].items() if s["status"] == "failed"]
        typer.echo(f"report: {output / 'report.html'} (numbers in report.json); {report['seconds']:.0f} s, "
                   f"{report['cpu_seconds']:.0f} CPU s" + (f"; failed: {', '.join(failed)}" if failed else ""))
        if failed:
            raise typer.Exit(1)
