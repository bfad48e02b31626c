"""The ShapeWorld caption grammar: parse any caption form into constraints, and sample captions.

Forms (DESIGN.md):
    a {c} {s}
    {two|three|four} {c} {s}s
    a {c1} {s1} and a {c2} {s2}
    a {c1} {s1} {to the left of|to the right of|above|below} a {c2} {s2}
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from genfoundry.errors import InputError
from genfoundry.shapes.world import CATEGORIES, COLORS, NUMBER_WORDS, OPPOSITE_RELATION, RELATIONS, SHAPES

PLURALS = {s + "s": s for s in SHAPES}
CAPTION_NUMBERS = {w: n for w, n in NUMBER_WORDS.items() if n >= 2}


class CaptionError(InputError):
    """A caption outside the ShapeWorld grammar or vocabulary."""


@dataclass(frozen=True)
class ObjectSpec:
    color: str
    shape: str
    count: int = 1

    @property
    def kind(self) -> tuple[str, str]:
        return (self.color, self.shape)


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption asks for: object kinds with counts, and an optional relation objects[0] -> objects[1]."""

    text: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    category: str = "single_object"


def _vocab_help() -> str:
    return (
        f"colours: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)}; "
        f"numbers: {', '.join(CAPTION_NUMBERS)}; relations: {', '.join(RELATIONS)}"
    )


def _forms_help() -> str:
    return (
        "caption forms: 'a {colour} {shape}', '{two|three|four} {colour} {shape}s', "
        "'a {colour} {shape} and a {colour} {shape}', 'a {colour} {shape} {relation} a {colour} {shape}'"
    )


def _fail(caption: str, problem: str) -> CaptionError:
    return CaptionError(f"cannot parse caption {caption!r}: {problem}. Vocabulary: {_vocab_help()}. {_forms_help()}")


def _expect_color(caption: str, word: str | None) -> str:
    if word is None:
        raise _fail(caption, "it ends where a colour was expected")
    if word not in COLORS:
        raise _fail(caption, f"unknown colour {word!r} (expected one of {', '.join(COLORS)})")
    return word


def _expect_shape(caption: str, word: str | None, plural: bool) -> str:
    if word is None:
        raise _fail(caption, "it ends where a shape was expected")
    table = PLURALS if plural else {s: s for s in SHAPES}
    if word not in table:
        names = list(PLURALS) if plural else list(SHAPES)
        raise _fail(caption, f"unknown shape {word!r} (expected one of {', '.join(names)})")
    return table[word]


def _words(caption: str) -> list[str]:
    text = caption.strip().lower().rstrip(".").strip()
    return text.split()


def parse_caption(caption: str) -> CaptionSpec:
    """Parse a caption into a `CaptionSpec`; raises `CaptionError` naming the bad word and the vocabulary."""
    if not isinstance(caption, str) or not caption.strip():
        raise _fail(str(caption), "it is empty")
    words = _words(caption)
    first = words[0]
    if first != "a":
        if first not in CAPTION_NUMBERS:
            raise _fail(caption, f"unknown number word {first!r}: a caption starts with 'a' or one of "
                                 f"{', '.join(CAPTION_NUMBERS)}")
        if len(words) != 3:
            raise _fail(caption, "a counting caption has exactly three words: '{number} {colour} {shape}s'")
        color = _expect_color(caption, words[1])
        shape = _expect_shape(caption, words[2], plural=True)
        return CaptionSpec(caption, (ObjectSpec(color, shape, CAPTION_NUMBERS[first]),), None, "counting")

    rest = words[1:]
    color1 = _expect_color(caption, rest[0] if rest else None)
    shape1 = _expect_shape(caption, rest[1] if len(rest) > 1 else None, plural=False)
    tail = rest[2:]
    if not tail:
        return CaptionSpec(caption, (ObjectSpec(color1, shape1),), None, "single_object")

    relation = None
    if tail[0] == "and":
        consumed = 1
    else:
        for rel in RELATIONS:
            rel_words = rel.split()
            if tail[: len(rel_words)] == rel_words:
                relation, consumed = rel, len(rel_words)
                break
        else:
            raise _fail(caption, f"unknown relation or conjunction starting at {' '.join(tail)!r} "
                                 f"(expected 'and' or one of {', '.join(RELATIONS)})")
    second = tail[consumed:]
    if not second or second[0] != "a":
        raise _fail(caption, "the second object must start with 'a'")
    color2 = _expect_color(caption, second[1] if len(second) > 1 else None)
    shape2 = _expect_shape(caption, second[2] if len(second) > 2 else None, plural=False)
    if len(second) > 3:
        raise _fail(caption, f"unexpected words after the second object: {' '.join(second[3:])!r}")

    a, b = ObjectSpec(color1, shape1), ObjectSpec(color2, shape2)
    if relation is not None:
        if a.kind == b.kind:
            raise _fail(caption, "the two objects of a relation must differ in colour or shape")
        return CaptionSpec(caption, (a, b), relation, "position")
    if a.kind == b.kind:
        return CaptionSpec(caption, (ObjectSpec(color1, shape1, 2),), None, "counting")
    category = "colors" if shape1 == shape2 else "two_objects"
    return CaptionSpec(caption, (a, b), None, category)


def format_caption(spec: CaptionSpec) -> str:
    """The canonical caption text of a spec (inverse of `parse_caption` for sampled captions)."""
    objs = spec.objects
    if len(objs) == 1:
        o = objs[0]
        if o.count == 1:
            return f"a {o.color} {o.shape}"
        word = {n: w for w, n in CAPTION_NUMBERS.items()}[o.count]
        return f"{word} {o.color} {o.shape}s"
    a, b = objs
    joiner = spec.relation or "and"
    return f"a {a.color} {a.shape} {joiner} a {b.color} {b.shape}"


def sample_caption(rng: random.Random, category: str | None = None) -> CaptionSpec:
    """Sample a caption of a GenEval-style category (uniform over categories when None).

    single_object: 'a {c} {s}'; two_objects: two different shapes; colors: one shape in two colours
    (tests colour binding); counting: two..four of one kind; position: a relation between two kinds.
    """
    if category is None:
        category = rng.choice(CATEGORIES)
    colors, shapes = list(COLORS), list(SHAPES)
    if category == "single_object":
        objs, rel = (ObjectSpec(rng.choice(colors), rng.choice(shapes)),), None
    elif category == "counting":
        objs, rel = (ObjectSpec(rng.choice(colors), rng.choice(shapes), rng.choice([2, 3, 4])),), None
    elif category == "two_objects":
        s1, s2 = rng.sample(shapes, 2)
        objs, rel = (ObjectSpec(rng.choice(colors), s1), ObjectSpec(rng.choice(colors), s2)), None
    elif category == "colors":
        c1, c2 = rng.sample(colors, 2)
        s = rng.choice(shapes)
        objs, rel = (ObjectSpec(c1, s), ObjectSpec(c2, s)), None
    elif category == "position":
        while True:
            a = ObjectSpec(rng.choice(colors), rng.choice(shapes))
            b = ObjectSpec(rng.choice(colors), rng.choice(shapes))
            if a.kind != b.kind:
                break
        objs, rel = (a, b), rng.choice(RELATIONS)
    else:
        raise ValueError(f"unknown category {category!r}; expected one of: {', '.join(CATEGORIES)}")
    spec = CaptionSpec("", objs, rel, category)
    return CaptionSpec(format_caption(spec), objs, rel, category)


def _meaning(spec: CaptionSpec) -> tuple:
    """What a caption asks for, independent of wording: object kinds with counts, and the relation with
    'to the right of'/'below' turned around ('a X right of a Y' = 'a Y left of a X')."""
    kinds: Counter = Counter()
    for o in spec.objects:
        kinds[o.kind] += o.count
    relation = None
    if spec.relation is not None:
        a, b, rel = spec.objects[0].kind, spec.objects[1].kind, spec.relation
        if rel in ("to the right of", "below"):
            a, b, rel = b, a, OPPOSITE_RELATION[rel]
        relation = (a, b, rel)
    return frozenset(kinds.items()), relation


def caption_edits(caption: str) -> dict[str, list[str]]:
    """Captions one edit away from `caption` that ask for a different scene, grouped by the edit:
    color (one object recoloured), shape, count, swap_colors (two objects trade colours), drop (one of
    two objects left out), add (a second object of another kind), relation (the opposite one).

    A ShapeWorld scene holds exactly its caption's objects, so no edit is true of it: they are hard
    negatives for contrastive training (NegCLIP-style). Edits that only re-word the caption ('a blue
    circle and a red circle' for 'a red circle and a blue circle') and relations that may also hold
    ('above' for 'to the left of') are left out. Every returned caption is canonical and parses."""
    spec = parse_caption(caption)
    own = _meaning(spec)
    objs = list(spec.objects)
    edits: dict[str, list[str]] = {k: [] for k in ("color", "shape", "count", "swap_colors", "drop", "add", "relation")}

    def keep(kind: str, objects: list[ObjectSpec], relation: str | None = None) -> None:
        if relation is not None and objects[0].kind == objects[1].kind:
            return  # a relation needs two different kinds
        text = format_caption(CaptionSpec("", tuple(objects), relation))
        try:
            edited = parse_caption(text)
        except CaptionError:
            return
        edited = parse_caption(format_caption(edited))  # canonical ('a red circle and a red circle' -> 'two red circles')
        if _meaning(edited) != own and edited.text not in edits[kind]:
            edits[kind].append(edited.text)

    for i, o in enumerate(objs):
        for c in COLORS:
            if c != o.color:
                keep("color", objs[:i] + [ObjectSpec(c, o.shape, o.count)] + objs[i + 1:], spec.relation)
        for s in SHAPES:
            if s != o.shape:
                keep("shape", objs[:i] + [ObjectSpec(o.color, s, o.count)] + objs[i + 1:], spec.relation)
    if len(objs) == 1:
        o = objs[0]
        for n in sorted(set(CAPTION_NUMBERS.values()) | {1}):
            if n != o.count:
                keep("count", [ObjectSpec(o.color, o.shape, n)])
        if o.count == 1:
            for c in COLORS:
                for s in SHAPES:
                    if (c, s) != o.kind:
                        keep("add", [o, ObjectSpec(c, s)])
    else:
        a, b = objs
        if a.color != b.color:
            keep("swap_colors", [ObjectSpec(b.color, a.shape), ObjectSpec(a.color, b.shape)], spec.relation)
        keep("drop", [a])
        keep("drop", [b])
        if spec.relation is not None:
            keep("relation", objs, OPPOSITE_RELATION[spec.relation])
    return {k: v for k, v in edits.items() if v}
