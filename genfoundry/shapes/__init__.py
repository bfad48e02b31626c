"""ShapeWorld: procedural images + captions + QA, and the GenEval-style evaluator (DESIGN.md)."""

from genfoundry.shapes.dataset import ShapesDataset, collate, image_to_tensor, tensor_to_image, write_split
from genfoundry.shapes.detect import Detection, detect, evaluate
from genfoundry.shapes.grammar import (
    CaptionError, CaptionSpec, ObjectSpec, caption_edits, format_caption, parse_caption, sample_caption,
)
from genfoundry.shapes.qa import caption_questions, questions
from genfoundry.shapes.render import render, render_scene, sample_scene
from genfoundry.shapes.world import (
    CATEGORIES, COLORS, NUMBER_WORDS, RELATIONS, SHAPES, Obj, Scene, check_size, relation_holds,
)


def vocabulary() -> list[str]:
    """Every word used by captions, questions and answers (sorted, without punctuation)."""
    words = set(COLORS) | set(SHAPES) | {s + "s" for s in SHAPES} | set(NUMBER_WORDS)
    words |= {w for rel in RELATIONS for w in rel.split()}
    words |= set("a and what color is the shape object how many are there objects yes no".split())
    return sorted(words)


__all__ = [
    "CATEGORIES", "COLORS", "NUMBER_WORDS", "RELATIONS", "SHAPES", "CaptionError", "CaptionSpec", "Detection",
    "Obj", "ObjectSpec", "Scene", "ShapesDataset", "caption_edits", "caption_questions", "check_size", "collate",
    "detect", "evaluate", "format_caption", "image_to_tensor", "parse_caption", "questions", "relation_holds", "render",
    "render_scene", "sample_caption", "sample_scene", "tensor_to_image", "vocabulary", "write_split",
]
