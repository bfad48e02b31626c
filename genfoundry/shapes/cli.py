"""`genfoundry shapes ...`: render, evaluate and sample ShapeWorld."""

from __future__ import annotations

import json
from pathlib import Path

import typer

shapes_app = typer.Typer(help="ShapeWorld: render captions, evaluate images, write sample splits.",
                         no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@shapes_app.command("render")
def render_command(
    caption: str = typer.Argument(..., help="e.g. 'a red circle to the left of a blue square'"),
    output: Path = typer.Option(..., "-o", "--output", help="PNG file to write"),
    size: int = typer.Option(64, help="canvas size (a multiple of 32)"),
    seed: int = typer.Option(0, help="random seed for sizes and positions"),
) -> None:
    """Draw a scene that satisfies CAPTION."""
    from genfoundry.hub import atomic_path
    from genfoundry.shapes import render

    try:
        image = render(caption, size=size, seed=seed)
    except ValueError as err:
        _fail(str(err))
    with atomic_path(output) as tmp:
        image.save(tmp, format="PNG")
    typer.echo(str(output))


@shapes_app.command("eval")
def eval_command(
    image: Path = typer.Argument(..., help="image file"),
    caption: str = typer.Argument(..., help="caption to check"),
) -> None:
    """Print the per-constraint verdicts for IMAGE against CAPTION as JSON."""
    from genfoundry.shapes import evaluate

    try:
        result = evaluate(image, caption)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps(result, indent=2))


@shapes_app.command("sample")
def sample_command(
    count: int = typer.Argument(..., help="number of samples"),
    output: Path = typer.Option(..., "-o", "--output", help="folder to write"),
    size: int = typer.Option(64, help="canvas size (a multiple of 32)"),
    seed: int = typer.Option(0, help="stream seed"),
) -> None:
    """Write COUNT samples: images/, captions.jsonl and qa.jsonl."""
    from genfoundry.shapes import write_split

    if count < 1:
        _fail(f"count must be >= 1, got {count}")
    try:
        write_split(output, count, seed=seed, size=size)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"wrote {count} samples to {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(shapes_app, name="shapes")
