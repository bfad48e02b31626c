"""`genfoundry generate PROMPT -o out.png`: text-to-image with a SANA pipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_MODEL = "sana-shapes"
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def generate_command(
    prompt: str = typer.Argument(..., help="what to draw, e.g. 'a red circle to the left of a blue square'"),
    output: Path = typer.Option(..., "-o", "--output", help="image file to write (PNG; with several --num, out_0.png ...)"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="pipeline folder, embedded model name or cached repo id"),
    steps: Optional[int] = typer.Option(None, help="sampling steps (default: the model's, 20)"),
    sampler: Optional[str] = typer.Option(None, help="flow-dpm-solver or flow-euler (default: the model's)"),
    cfg: Optional[float] = typer.Option(None, "--cfg", help="classifier-free guidance scale (default: the model's)"),
    layout_guidance: Optional[float] = typer.Option(
        None, "--layout-guidance",
        help="place the objects of a caption that names a relation, e.g. 'a red circle to the left of a blue square' "
             "(default: the model's; 0 turns it off)"),
    seed: int = typer.Option(0, help="random seed"),
    height: Optional[int] = typer.Option(None, help="image height in pixels (multiple of 32 x patch; default: native)"),
    width: Optional[int] = typer.Option(None, help="image width in pixels (default: native)"),
    negative: str = typer.Option("", "--negative", help="negative prompt"),
    num: int = typer.Option(1, "--num", help="number of images (seeds seed, seed+1, ...)"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16 for the DiT and DC-AE"),
    tile_vae: bool = typer.Option(False, "--tile-vae", help="decode in tiles (bounded memory for large images)"),
    quantized: Optional[Path] = typer.Option(
        None, "--quantized", help="a file from `genfoundry quantize`: run the transformer with its 4-bit layers"),
) -> None:
    """Generate an image from PROMPT with SANA."""
    import torch

    from genfoundry import hub
    from genfoundry.sana.pipeline import SanaPipeline

    if dtype not in _DTYPES:
        _fail(f"--dtype must be one of {sorted(set(_DTYPES.values()))}, got {dtype!r}")
    if num < 1:
        _fail(f"--num must be >= 1, got {num}")
    try:
        pipe = SanaPipeline.from_pretrained(model, dtype=getattr(torch, _DTYPES[dtype]), device=device)
    except hub.CheckpointError as err:
        hint = ""
        if model == DEFAULT_MODEL:
            hint = (f"\nthe embedded default model {DEFAULT_MODEL!r} is not installed; "
                    "pass --model PATH to a SANA pipeline folder")
        _fail(f"{err}{hint}")
    if quantized is not None:
        from genfoundry.svdquant import load_quantized

        try:
            load_quantized(pipe.transformer, quantized)
        except (hub.CheckpointError, ValueError) as err:
            _fail(f"cannot apply quantized file {quantized}: {err}")
    try:
        images = pipe([prompt] * num, negative_prompt=negative, height=height, width=width, steps=steps,
                      guidance_scale=cfg, sampler=sampler, seed=[seed + i for i in range(num)],
                      tile_vae=tile_vae or None, layout_guidance=layout_guidance)
    except (ValueError, TypeError) as err:
        _fail(str(err))
    paths = [output] if num == 1 else [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(num)]
    from PIL import Image

    for image, path in zip(images, paths):
        with hub.atomic_path(path) as tmp:
            image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
