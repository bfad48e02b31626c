"""`genfoundry tour`: the main job on the embedded defaults, writing everything into one folder.

1. ShapeWorld: samples scenes across the GenEval categories, renders them, scores each with the
   detector; writes the images, captions.jsonl, qa.jsonl and a contact sheet.
2. SANA: when the embedded `sana-shapes` model is installed (or `--sana-model` names a pipeline), it
   draws held-out prompts of every category, scores them with the same detector and writes the
   images and a contact sheet.
Scores of both go to scores.json.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Optional

import typer


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


def run_sana(output: Path, model: str, count: int, seed: int) -> dict:
    """Generate `count` held-out prompts with a SANA pipeline, score them, write images + a sheet."""
    from genfoundry.hub import atomic_path
    from genfoundry.sana import SanaPipeline
    from genfoundry.sana.evaluate import heldout_prompts, score_images

    pipe = SanaPipeline.from_pretrained(model)
    prompts = heldout_prompts(count, seed=seed)
    captions = [c for c, _ in prompts]
    images = pipe(captions, seed=[seed + i for i in range(count)], warn_unknown_words=False)
    folder = output / "sana"
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        with atomic_path(folder / f"{i:03d}.png") as tmp:
            image.save(tmp, format="PNG")
    with atomic_path(output / "sana_grid.png") as tmp:
        contact_sheet(images, captions).save(tmp, format="PNG")
    report = score_images(images, prompts)
    return {"model": str(model), "count": count, "seed": seed, "overall": report.overall,
            "per_category": {c: ok / n for c, (ok, n) in report.per_category.items() if n}}


def run_tour(output: Path, count: int = 16, seed: int = 0, size: int = 64, sana_model: str | None = None) -> dict:
    from genfoundry.hub import atomic_path, write_json_atomic
    from genfoundry.shapes import evaluate, render_scene, write_split
    from genfoundry.shapes.dataset import scene_at

    output = Path(output)
    write_split(output / "shapeworld", count, seed=seed, size=size, progress=False)
    per_category: dict[str, list[bool]] = defaultdict(list)
    images, captions = [], []
    for i in range(count):
        scene = scene_at(seed, i, size)
        image = render_scene(scene)
        per_category[scene.category].append(evaluate(image, scene.caption)["correct"])
        images.append(image)
        captions.append(scene.caption)
    with atomic_path(output / "shapeworld_grid.png") as tmp:
        contact_sheet(images, captions).save(tmp, format="PNG")
    scores = {
        "renders": {"count": count, "size": size, "seed": seed,
                    "detector_accuracy": {c: sum(v) / len(v) for c, v in sorted(per_category.items())},
                    "overall": sum(sum(v) for v in per_category.values()) / count},
    }
    from genfoundry.hub import zoo_names

    if sana_model is None and "sana-shapes" in zoo_names():
        sana_model = "sana-shapes"
    if sana_model is not None:
        scores["sana"] = run_sana(output, sana_model, count, seed)
    write_json_atomic(output / "scores.json", scores)
    return scores


def register(app: typer.Typer) -> None:
    @app.command("tour")
    def tour_command(
        output: Path = typer.Option(Path("out"), "-o", "--output", help="folder to write"),
        count: int = typer.Option(16, help="number of samples"),
        seed: int = typer.Option(0, help="random seed"),
        size: int = typer.Option(64, help="canvas size (a multiple of 32)"),
        sana_model: Optional[str] = typer.Option(
            None, "--sana-model", help="SANA pipeline to draw with (default: the embedded sana-shapes, if installed)"),
    ) -> None:
        """Run the main job on the embedded defaults and write the results to OUTPUT."""
        scores = run_tour(output, count=count, seed=seed, size=size, sana_model=sana_model)
        typer.echo(json.dumps(scores, indent=2))
        typer.echo(f"results in {output}/")
