"""ShapeWorld vocabulary and scene objects (the fixed facts of DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "cyan": (40, 210, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
NUMBER_WORDS: dict[str, int] = {"one": 1, "two": 2, "three": 3, "four": 4}
COUNT_WORDS: dict[int, str] = {n: w for w, n in NUMBER_WORDS.items()}
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
OPPOSITE_RELATION: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
CATEGORIES: tuple[str, ...] = ("single_object", "two_objects", "counting", "colors", "position")


def check_size(size: int) -> int:
    """Canvas sizes are positive multiples of 32 (the latent grids of the models depend on it)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 32 or size % 32:
        raise ValueError(f"canvas size must be a positive multiple of 32 (32, 64, 96, ...), got {size!r}")
    return size


def size_range(canvas: int) -> tuple[int, int]:
    """Object side length in pixels: S/6 .. S/3.5, rounded inwards."""
    lo = -(-canvas // 6)  # ceil(S/6)
    hi = int(canvas / 3.5)
    return lo, hi


@dataclass(frozen=True)
class Obj:
    """An object on the canvas: its bounding box is [x, x+size) x [y, y+size)."""

    color: str
    shape: str
    x: float
    y: float
    size: float

    @property
    def kind(self) -> tuple[str, str]:
        return (self.color, self.shape)

    @property
    def cx(self) -> float:
        return self.x + self.size / 2

    @property
    def cy(self) -> float:
        return self.y + self.size / 2


@dataclass(frozen=True)
class Scene:
    caption: str
    category: str
    size: int
    objects: tuple[Obj, ...]


def relation_holds(relation: str, a, b, margin: float = 0.0) -> bool:
    """Does `a {relation} b` hold? Centres must differ by more than half the larger object's size
    (plus `margin` pixels, which the renderer uses to stay clear of the boundary).

    `a`, `b` are anything with cx, cy, size (scene objects or detections); y grows downwards.
    """
    half = max(a.size, b.size) / 2 + margin
    if relation == "to the left of":
        return b.cx - a.cx > half
    if relation == "to the right of":
        return a.cx - b.cx > half
    if relation == "above":
        return b.cy - a.cy > half
    if relation == "below":
        return a.cy - b.cy > half
    raise ValueError(f"unknown relation {relation!r}; expected one of: {', '.join(RELATIONS)}")
