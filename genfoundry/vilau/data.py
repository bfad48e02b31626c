"""Training data for VILA-U on ShapeWorld: moving-shape clips and the stage-2 sequence mix."""

from __future__ import annotations

import random
from dataclasses import dataclass

from genfoundry.shapes import COLORS, SHAPES, Obj, Scene, render_scene
from genfoundry.shapes.world import size_range
from genfoundry.vilau.model import UNCONDITIONAL_PROMPT, Segment

DIRECTIONS = ("left", "right", "up", "down")


@dataclass
class Clip:
    frames: list  # PIL images
    caption: str  # "a red circle moving right"
    qa: list[tuple[str, str]]


def sample_clip(rng: random.Random, frames: int = 4, size: int = 64) -> Clip:
    """One shape crossing the canvas in a straight line, drawn at `frames` evenly spaced times."""
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    color, shape, direction = rng.choice(sorted(COLORS)), rng.choice(SHAPES), rng.choice(DIRECTIONS)
    lo, hi = size_range(size)
    side = rng.randint(lo, hi)
    far = size - 1 - side
    cross = rng.randint(1, far)
    start, end = (1, far) if direction in ("right", "down") else (far, 1)
    images = []
    for f in range(frames):
        along = round(start + (end - start) * f / (frames - 1))
        x, y = (along, cross) if direction in ("left", "right") else (cross, along)
        scene = Scene(f"a {color} {shape}", "video", size, (Obj(color, shape, x, y, side),))
        images.append(render_scene(scene))
    wrong = rng.choice([d for d in DIRECTIONS if d != direction])
    qa = [(f"is the {color} {shape} moving {direction}?", "yes"), (f"is the {color} {shape} moving {wrong}?", "no"),
          (f"what color is the {shape}?", color)]
    return Clip(images, f"a {color} {shape} moving {direction}", qa)


def clip_at(seed: int, index: int, frames: int = 4, size: int = 64) -> Clip:
    return sample_clip(random.Random(f"vilau-clip:{seed}:{index}"), frames, size)


@dataclass
class MixConfig:
    generation_fraction: float = 0.4  # [text, image] samples (loss on codes)
    qa_fraction: float = 0.75  # of [image, text] samples: a question + answer (else the caption)
    caption_drop: float = 0.1  # generation captions replaced by " " (trains the CFG unconditional branch)
    video_fraction: float = 0.05  # of stage-2 batches made of moving-shape clips
    # Of the questions asked about a scene that has relation questions ("is the red circle to the left of
    # the blue square?"), the share that asks one; None draws uniformly from all the scene's questions.
    relation_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("generation_fraction", "qa_fraction", "caption_drop", "video_fraction", "relation_fraction"):
            v = getattr(self, name)
            if v is None and name == "relation_fraction":
                continue
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")


def question_type(question: str) -> str:
    for prefix, kind in (("what color", "color"), ("what shape", "shape"), ("how many", "count"),
                         ("is there", "exists"), ("is the", "relation")):
        if question.startswith(prefix):
            return "motion" if kind == "relation" and " moving " in question else kind
    return "other"


def is_relation_question(question: str) -> bool:
    return question_type(question) == "relation"


def pick_question(qa: list[tuple[str, str]], rng: random.Random, relation_fraction: float | None = None) -> tuple[str, str]:
    """One (question, answer) of a scene: uniform, or a relation question with probability relation_fraction
    when the scene has both kinds."""
    if relation_fraction is not None:
        relation = [p for p in qa if is_relation_question(p[0])]
        other = [p for p in qa if not is_relation_question(p[0])]
        if relation and other:
            return rng.choice(relation if rng.random() < relation_fraction else other)
    return rng.choice(qa)


def understanding_segments(model, visual: Segment, caption: str, qa: list[tuple[str, str]], use_qa: bool,
                           rng: random.Random, relation_fraction: float | None = None) -> list[Segment]:
    """[image, text]: loss on the answer (after the question) or on the caption."""
    eos = model.tokenizer.eos_token_id
    if use_qa and qa:
        q, a = pick_question(qa, rng, relation_fraction)
        return [visual, Segment("text", model.text_ids(q)), Segment("text", model.text_ids(a) + [eos], train=True)]
    return [visual, Segment("text", model.text_ids(caption) + [eos], train=True)]


def generation_segments(model, visual: Segment, caption: str, drop: bool) -> list[Segment]:
    """[text, image]: loss on every code of the image (or clip)."""
    text = UNCONDITIONAL_PROMPT if drop else caption
    return [Segment("text", model.text_ids(text)), Segment(visual.kind, visual.content, train=True)]


def batch_plan(batch_size: int, mix: MixConfig) -> list[bool]:
    """Which slots of a batch are generation samples: a fixed count, so every batch trains both heads."""
    n_gen = round(batch_size * mix.generation_fraction)
    if batch_size >= 2 and 0 < mix.generation_fraction < 1:
        n_gen = min(max(n_gen, 1), batch_size - 1)
    return [i < n_gen for i in range(batch_size)]
