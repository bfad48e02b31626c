"""`genfoundry quantize`: quantize a model into one safetensors file.

    genfoundry quantize --model sana-shapes --method svdquant --weight int4 --rank 32 -o sana-w4a4.safetensors
    genfoundry quantize --model vila-u-shapes -o vila-u-w4a4.safetensors

The model registry (genfoundry.models) says, for each family of model folders, which module is
quantized and how calibration runs it: a SANA pipeline's transformer, calibrated by the whole pipeline
(text encoder, sampler, classifier-free guidance) on ShapeWorld captions; VILA-U's LLM and depth
transformer, calibrated by answering questions and drawing images. `genfoundry generate --quantized
FILE` and `genfoundry ask / imagine --quantized FILE` run with such a file (`load_quantized`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genfoundry.models import calibration_captions as calibration_prompts  # noqa: F401 - the benchmarks' name
from genfoundry.svdquant.checkpoint import read_quantization_config, save_quantized
from genfoundry.svdquant.quantize import METHODS, QuantConfig, quantize

_DTYPES = ("float32", "float16", "bfloat16")


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
    model: str = typer.Option(..., "--model", help="SANA pipeline or VILA-U folder: zoo name, local folder or cached repo id."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the quantized .safetensors file."),
    method: str = typer.Option("svdquant", help=f"One of {', '.join(METHODS)}."),
    weight: str = typer.Option("auto", help="int4 | nvfp4 (W4A4), nf4 | int4 (w4a16), int8 (w8a8)."),
    rank: Optional[int] = typer.Option(None, help="Low-rank branch rank (svdquant; default 32)."),
    lowrank_bits: int = typer.Option(16, "--lowrank-bits",
                                     help="16: the low-rank branch in the compute dtype (SVDQuant); 8: in int8."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Default 64 (int4) / 16 (nvfp4)."),
    smooth: Optional[str] = typer.Option("auto", help="auto | search | none | alpha in [0, 1]."),
    calib_prompts: int = typer.Option(32, "--calib-prompts", help="Number of calibration captions (VILA-U: scenes)."),
    calib_steps: int = typer.Option(10, "--calib-steps", help="SANA: sampling steps per calibration prompt."),
    batch_size: int = typer.Option(8, "--batch-size", help="Calibration prompts per model call."),
    size: Optional[int] = typer.Option(None, help="SANA: calibration image size (default: the model's)."),
    skip: Optional[list[str]] = typer.Option(None, help="Glob of layer names kept in 16 bits (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the captions, the sampler and the search."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    dtype: str = typer.Option("float32", help=f"One of {', '.join(_DTYPES)}."),
) -> None:
    """Quantize a model (SVDQuant W4A4 or a baseline) to one safetensors file."""
    import torch

    from genfoundry import models

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
    family = models.family_of(model)
    loaded = family.load(model, torch.device(device), getattr(torch, dtype))
    target = family.target(loaded)
    calibrate = family.calibrator(loaded, models.Calibration(prompts=calib_prompts, steps=calib_steps,
                                                             batch_size=batch_size, size=size, seed=seed))
    # every method calibrates: it also tells which layers really run, so all methods quantize the same set
    quantize(target, calibrate, config)
    path = save_quantized(target, output)
    layers = len(read_quantization_config(path)["layers"])
    typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB, {layers} quantized layers, "
               f"method={config.method}, weight={config.weight}, act={config.act}, rank={config.rank}, "
               f"low-rank branch {'int8' if config.lowrank_bits == 8 else 'in the compute dtype'})")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)
