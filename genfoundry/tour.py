"""`genfoundry tour`: the main job on the embedded defaults, writing everything into one folder.

Today it samples ShapeWorld scenes across the GenEval categories, renders them, scores each with the
detector and writes the images, a contact sheet, captions.jsonl, qa.jsonl and scores.json.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

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


def run_tour(output: Path, count: int = 16, seed: int = 0, size: int = 64) -> dict:
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
    write_json_atomic(output / "scores.json", scores)
    return scores


def register(app: typer.Typer) -> None:
    @app.command("tour")
    def tour_command(
        output: Path = typer.Option(Path("out"), "-o", "--output", help="folder to write"),
        count: int = typer.Option(16, help="number of samples"),
        seed: int = typer.Option(0, help="random seed"),
        size: int = typer.Option(64, help="canvas size (a multiple of 32)"),
    ) -> None:
        """Run the main job on the embedded defaults and write the results to OUTPUT."""
        scores = run_tour(output, count=count, seed=seed, size=size)
        typer.echo(json.dumps(scores, indent=2))
        typer.echo(f"results in {output}/")
