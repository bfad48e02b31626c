"""Draw ShapeWorld scenes: captions -> non-overlapping objects -> PIL images (deterministic per seed)."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from genfoundry.errors import GenfoundryError
from genfoundry.shapes.grammar import CaptionSpec, parse_caption, sample_caption
from genfoundry.shapes.world import COLORS, Obj, Scene, check_size, relation_holds, size_range

GAP = 3  # free pixels between objects, so a 3x3 blur never joins two of them
# Pixels beyond the relation threshold: detection of a blurred/noisy image may move a centre or grow a
# bounding box by about a pixel, which must not flip the relation.
RELATION_MARGIN = 3.0


class PlacementError(GenfoundryError, RuntimeError):
    pass


def _overlaps(a: Obj, b: Obj, gap: int = GAP) -> bool:
    return not (
        a.x + a.size + gap <= b.x or b.x + b.size + gap <= a.x
        or a.y + a.size + gap <= b.y or b.y + b.size + gap <= a.y
    )


def place_objects(spec: CaptionSpec, canvas: int, rng: random.Random, max_tries: int = 2000) -> tuple[Obj, ...]:
    """Random sizes and positions for every object of `spec`, never overlapping, relation satisfied."""
    check_size(canvas)
    lo, hi = size_range(canvas)
    kinds = [(o.color, o.shape) for o in spec.objects for _ in range(o.count)]
    for _ in range(max_tries):
        placed: list[Obj] = []
        for color, shape in kinds:
            size = rng.randint(lo, hi)
            for _ in range(60):
                x = rng.randint(1, canvas - 1 - size)
                y = rng.randint(1, canvas - 1 - size)
                cand = Obj(color, shape, x, y, size)
                if not any(_overlaps(cand, other) for other in placed):
                    placed.append(cand)
                    break
            else:
                break
        if len(placed) != len(kinds):
            continue
        if spec.relation is not None and not relation_holds(spec.relation, placed[0], placed[1], RELATION_MARGIN):
            continue
        return tuple(placed)
    raise PlacementError(f"could not place {spec.text!r} on a {canvas}x{canvas} canvas")


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene: black background, objects filled with their exact palette colour."""
    image = Image.new("RGB", (scene.size, scene.size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x0, y0, x1, y1 = o.x, o.y, o.x + o.size - 1, o.y + o.size - 1
        fill = COLORS[o.color]
        if o.shape == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        elif o.shape == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return image


def scene_from_spec(spec: CaptionSpec, size: int, rng: random.Random) -> Scene:
    return Scene(spec.text, spec.category, size, place_objects(spec, size, rng))


def sample_scene(rng: random.Random | int, size: int = 64, category: str | None = None) -> Scene:
    """A random scene (caption sampled from the grammar, GenEval-style category) on an SxS canvas."""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    check_size(size)
    return scene_from_spec(sample_caption(rng, category), size, rng)


def render(caption: str, size: int = 64, seed: int = 0) -> Image.Image:
    """Draw a scene that satisfies `caption` and nothing else; the same seed gives the same image."""
    check_size(size)
    spec = parse_caption(caption)
    return render_scene(scene_from_spec(spec, size, random.Random(seed)))
