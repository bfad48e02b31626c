"""`genfoundry quantize`: quantize a SANA pipeline's transformer into one safetensors file.

    genfoundry quantize --model sana-shapes --method svdquant --weight int4 --rank 32 -o sana-w4a4.safetensors

Calibration runs the whole pipeline (text encoder, sampler, classifier-free guidance) on ShapeWorld
captions, so the hooks see the transformer's inputs at every step and for both guidance branches.
`genfoundry generate --quantized FILE` runs a pipeline with such a file (`load_quantized`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import typer

from genfoundry.svdquant.checkpoint import read_quantization_config, save_quantized
from genfoundry.svdquant.quantize import METHODS, QuantConfig, quantize

_DTYPES = ("float32", "float16", "bfloat16")


def calibration_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` ShapeWorld captions (the offline stand-in for the paper's COCO calibration captions)."""
    from genfoundry.shapes import sample_scene

    rng = random.Random(seed)
    return [sample_scene(rng).caption for _ in range(count)]


def _parse_smooth(value: Optional[str]):
    if value is None or value == "auto":
        return "auto"
    if value in ("none", "off"):
        return None
    if value == "search":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"--smooth must be auto, search, none or a number in [0, 1], got {value!r}")


def quantize_command(
    model: str = typer.Option(..., "--model", help="SANA pipeline: zoo name, local folder or cached repo id."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the quantized .safetensors file."),
    method: str = typer.Option("svdquant", help=f"One of {', '.join(METHODS)}."),
    weight: str = typer.Option("auto", help="int4 | nvfp4 (W4A4), nf4 | int4 (w4a16), int8 (w8a8)."),
    rank: Optional[int] = typer.Option(None, help="Low-rank branch rank (svdquant; default 32)."),
    lowrank_bits: int = typer.Option(16, "--lowrank-bits",
                                     help="16: the low-rank branch in the compute dtype (SVDQuant); 8: in int8."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Default 64 (int4) / 16 (nvfp4)."),
    smooth: Optional[str] = typer.Option("auto", help="auto | search | none | alpha in [0, 1]."),
    calib_prompts: int = typer.Option(32, "--calib-prompts", help="Number of calibration captions."),
    calib_steps: int = typer.Option(10, "--calib-steps", help="Sampling steps per calibration prompt."),
    batch_size: int = typer.Option(8, "--batch-size", help="Calibration prompts per pipeline call."),
    size: Optional[int] = typer.Option(None, help="Calibration image size (default: the model's)."),
    skip: Optional[list[str]] = typer.Option(None, help="Glob of layer names kept in 16 bits (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the captions, the sampler and the search."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    dtype: str = typer.Option("float32", help=f"One of {', '.join(_DTYPES)}."),
) -> None:
    """Quantize a SANA pipeline's transformer (SVDQuant W4A4 or a baseline) to one safetensors file."""
    import torch

    from genfoundry.sana import SanaPipeline

    if dtype not in _DTYPES:
        raise typer.BadParameter(f"--dtype must be one of {_DTYPES}, got {dtype!r}")
    if calib_prompts < 1 or batch_size < 1 or calib_steps < 1:
        raise typer.BadParameter("--calib-prompts, --calib-steps and --batch-size must be >= 1")
    config = QuantConfig(method=method, weight=weight, rank=rank, lowrank_bits=lowrank_bits, group_size=group_size,
                         smooth=_parse_smooth(smooth), skip=list(skip) if skip else None, seed=seed, indivisible="skip")
    try:
        config = config.resolved()
    except ValueError as err:
        raise typer.BadParameter(str(err))
    pipe = SanaPipeline.from_pretrained(model, dtype=getattr(torch, dtype), device=device)
    prompts = calibration_prompts(calib_prompts, seed)

    def calibrate(_transformer) -> None:
        for start in range(0, len(prompts), batch_size):
            pipe(prompts[start:start + batch_size], height=size, width=size, steps=calib_steps,
                 seed=seed + start, progress=False, warn_unknown_words=False)

    # every method calibrates: it also tells which layers really run, so all methods quantize the same set
    quantize(pipe.transformer, calibrate, config)
    path = save_quantized(pipe.transformer, output)
    layers = len(read_quantization_config(path)["layers"])
    typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB, {layers} quantized layers, "
               f"method={config.method}, weight={config.weight}, act={config.act}, rank={config.rank}, "
               f"low-rank branch {'int8' if config.lowrank_bits == 8 else 'in the compute dtype'})")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)
