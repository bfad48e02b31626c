"""Question/answer pairs about a scene (for VILA-U): lower-case questions, one-word answers.

A question is only asked where its answer is unique; relation questions only where the relation is
clearly true or clearly false (2 px away from the threshold), so no answer depends on a pixel.
`caption_questions` gives the questions whose answers a caption fixes: what any image that shows the
caption must answer (used to check drawn images, e.g. by the model that drew them).
"""

from __future__ import annotations

from collections import Counter

from genfoundry.shapes.grammar import parse_caption
from genfoundry.shapes.world import (
    COLORS,
    COUNT_WORDS,
    OPPOSITE_RELATION,
    RELATIONS,
    SHAPES,
    Scene,
    relation_holds,
)

CLEAR = 2.0


def relation_question(a: tuple[str, str], relation: str, b: tuple[str, str]) -> str:
    """a, b: (colour, shape) kinds -> "is the {a} {relation} the {b}?"."""
    return f"is the {a[0]} {a[1]} {relation} the {b[0]} {b[1]}?"


def kind_questions(kinds: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The questions answered by the objects' (colour, shape) kinds alone, in scene order: colours,
    shapes, counts and existence (with hard negatives)."""
    by_shape = Counter(shape for _, shape in kinds)
    by_color = Counter(color for color, _ in kinds)
    by_kind = Counter(kinds)
    qa: list[tuple[str, str]] = []
    for color, shape in kinds:
        if by_shape[shape] == 1:
            qa.append((f"what color is the {shape}?", color))
    for color, shape in kinds:
        if by_color[color] == 1:
            qa.append((f"what shape is the {color} object?", shape))
    for shape, n in sorted(by_shape.items()):
        qa.append((f"how many {shape}s are there?", COUNT_WORDS[n]))
    for color, n in sorted(by_color.items()):
        qa.append((f"how many {color} objects are there?", COUNT_WORDS[n]))
    asked: set[tuple[str, str]] = set()
    for color, shape in sorted(by_kind):
        qa.append((f"is there a {color} {shape}?", "yes"))
        # hard negatives: the same shape in a colour not present, the same colour in a shape not present
        other_color = next((c for c in COLORS if (c, shape) not in by_kind and (c, shape) not in asked), None)
        other_shape = next((s for s in SHAPES if (color, s) not in by_kind and (color, s) not in asked), None)
        for kind in ((other_color, shape), (color, other_shape)):
            if None not in kind:
                asked.add(kind)
                qa.append((f"is there a {kind[0]} {kind[1]}?", "no"))
    return qa


def questions(scene: Scene) -> list[tuple[str, str]]:
    objs = scene.objects
    qa = kind_questions([o.kind for o in objs])
    by_kind = Counter(o.kind for o in objs)
    unique = [o for o in objs if by_kind[o.kind] == 1]
    for a in unique:
        for b in unique:
            if a is b:
                continue
            for rel in RELATIONS:
                text = relation_question(a.kind, rel, b.kind)
                if relation_holds(rel, a, b, CLEAR):
                    qa.append((text, "yes"))
                elif not relation_holds(rel, a, b, -CLEAR):
                    qa.append((text, "no"))
    return qa


def caption_questions(caption: str) -> list[tuple[str, str]]:
    """The questions (and answers) every image showing `caption` exactly must give: those of its
    objects' kinds (`kind_questions`) and, for a relation, that it holds, that its opposite does not,
    and that it does not hold the other way round. Raises `CaptionError` outside the ShapeWorld grammar."""
    spec = parse_caption(caption)
    qa = kind_questions([o.kind for o in spec.objects for _ in range(o.count)])
    if spec.relation is not None:
        a, b = spec.objects[0].kind, spec.objects[1].kind
        qa += [(relation_question(a, spec.relation, b), "yes"),
               (relation_question(a, OPPOSITE_RELATION[spec.relation], b), "no"),
               (relation_question(b, spec.relation, a), "no")]
    return qa
