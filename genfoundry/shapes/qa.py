"""Question/answer pairs about a scene (for VILA-U): lower-case questions, one-word answers.

A question is only asked where its answer is unique; relation questions only where the relation is
clearly true or clearly false (2 px away from the threshold), so no answer depends on a pixel.
"""

from __future__ import annotations

from collections import Counter

from genfoundry.shapes.world import COLORS, COUNT_WORDS, RELATIONS, SHAPES, Scene, relation_holds

CLEAR = 2.0


def questions(scene: Scene) -> list[tuple[str, str]]:
    objs = scene.objects
    by_shape = Counter(o.shape for o in objs)
    by_color = Counter(o.color for o in objs)
    by_kind = Counter(o.kind for o in objs)
    qa: list[tuple[str, str]] = []
    for o in objs:
        if by_shape[o.shape] == 1:
            qa.append((f"what color is the {o.shape}?", o.color))
    for o in objs:
        if by_color[o.color] == 1:
            qa.append((f"what shape is the {o.color} object?", o.shape))
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
    unique = [o for o in objs if by_kind[o.kind] == 1]
    for a in unique:
        for b in unique:
            if a is b:
                continue
            for rel in RELATIONS:
                text = f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?"
                if relation_holds(rel, a, b, CLEAR):
                    qa.append((text, "yes"))
                elif not relation_holds(rel, a, b, -CLEAR):
                    qa.append((text, "no"))
    return qa
