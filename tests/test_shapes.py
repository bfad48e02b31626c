import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from genfoundry.shapes import (
    CATEGORIES, COLORS, RELATIONS, SHAPES, CaptionError, ShapesDataset, caption_edits, caption_questions, collate,
    detect, evaluate,
    format_caption, parse_caption, questions, relation_holds, render, render_scene, sample_caption, sample_scene,
    vocabulary, write_split,
)
from genfoundry.shapes.grammar import CaptionSpec, ObjectSpec
from genfoundry.shapes.world import OPPOSITE_RELATION


def truth(scene, caption: str) -> bool:
    """Ground truth from the scene's own object list (no pixels involved)."""
    spec = parse_caption(caption)
    kinds = {}
    for o in scene.objects:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    wanted = {o.kind: o.count for o in spec.objects}
    if kinds != wanted:
        return False
    if spec.relation:
        a = [o for o in scene.objects if o.kind == spec.objects[0].kind]
        b = [o for o in scene.objects if o.kind == spec.objects[1].kind]
        return any(relation_holds(spec.relation, x, y) for x in a for y in b)
    return True


def minimally_false(spec: CaptionSpec, rng: random.Random) -> str:
    """Change one colour, shape, count or relation."""
    while True:
        objs = list(spec.objects)
        change = rng.choice(["color", "shape", "count", "relation"])
        i = rng.randrange(len(objs))
        o = objs[i]
        if change == "color":
            objs[i] = ObjectSpec(rng.choice([c for c in COLORS if c != o.color]), o.shape, o.count)
        elif change == "shape":
            objs[i] = ObjectSpec(o.color, rng.choice([s for s in SHAPES if s != o.shape]), o.count)
        elif change == "count":
            if len(objs) != 1:
                continue
            objs[i] = ObjectSpec(o.color, o.shape, rng.choice([n for n in (1, 2, 3, 4) if n != o.count]))
        elif change == "relation":
            if spec.relation is None:
                continue
        relation = OPPOSITE_RELATION[spec.relation] if change == "relation" else spec.relation
        if relation and objs[0].kind == objs[1].kind:
            continue
        return format_caption(CaptionSpec("", tuple(objs), relation))


def test_evaluator_exact_on_clean_renders_true_and_false_captions():
    rng = random.Random(1)
    for i in range(2000):
        scene = sample_scene(random.Random(i), 64)
        image = render_scene(scene)
        assert truth(scene, scene.caption)
        assert evaluate(image, scene.caption)["correct"], scene.caption
        false_caption = minimally_false(parse_caption(scene.caption), rng)
        assert not truth(scene, false_caption)
        assert not evaluate(image, false_caption)["correct"], (scene.caption, false_caption)


def _perturb(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "blur":
        return image.filter(ImageFilter.BoxBlur(1))  # 3x3 box
    arr = np.asarray(image, dtype=np.float64)
    if kind == "noise":
        arr = arr + rng.normal(0, 10, arr.shape)  # sigma 10/255
    elif kind == "jitter":
        arr = arr + rng.uniform(-15, 15, (1, 1, 3))
    elif kind == "all":
        arr = np.asarray(image.filter(ImageFilter.BoxBlur(1)), dtype=np.float64)
        arr = arr + rng.uniform(-15, 15, (1, 1, 3)) + rng.normal(0, 10, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


@pytest.mark.parametrize("kind", ["noise", "blur", "jitter", "all"])
def test_evaluator_robust_to_imperfect_images(kind):
    rng = np.random.default_rng(0)
    n, correct = 300, 0
    for i in range(n):
        scene = sample_scene(random.Random(10_000 + i), 64)
        correct += evaluate(_perturb(render_scene(scene), kind, rng), scene.caption)["correct"]
    assert correct / n >= 0.95


def test_render_is_deterministic_and_satisfies_caption():
    for caption in ["a red circle", "three blue triangles", "a cyan square and a yellow circle",
                    "a green triangle above a purple square", "a red circle to the left of a blue square"]:
        for size in (32, 64, 96):
            a, b = render(caption, size=size, seed=3), render(caption, size=size, seed=3)
            assert a.size == (size, size)
            assert np.array_equal(np.asarray(a), np.asarray(b))
            assert evaluate(a, caption)["correct"]
    assert not np.array_equal(np.asarray(render("a red circle", seed=1)), np.asarray(render("a red circle", seed=2)))


def test_objects_never_overlap_and_only_caption_objects_drawn():
    for i in range(300):
        scene = sample_scene(random.Random(i), 64)
        objs = scene.objects
        for a in objs:
            assert 64 / 6 <= a.size <= 64 / 3.5
            for b in objs:
                if a is not b:
                    assert (a.x + a.size <= b.x or b.x + b.size <= a.x or
                            a.y + a.size <= b.y or b.y + b.size <= a.y)
        spec = parse_caption(scene.caption)
        assert sorted(o.kind for o in objs) == sorted(o.kind for o in spec.objects for _ in range(o.count))


def test_palette_colours_exact():
    image = np.asarray(render("a red square", seed=0))
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours == {(0, 0, 0), COLORS["red"]}


def test_parse_every_form():
    assert parse_caption("a red circle").objects == (ObjectSpec("red", "circle"),)
    spec = parse_caption("three blue squares")
    assert spec.objects == (ObjectSpec("blue", "square", 3),) and spec.category == "counting"
    spec = parse_caption("a red circle and a blue square")
    assert spec.category == "two_objects" and spec.relation is None
    assert parse_caption("a red circle and a blue circle").category == "colors"
    for rel in RELATIONS:
        spec = parse_caption(f"a red circle {rel} a blue square")
        assert spec.relation == rel and spec.category == "position"
    assert parse_caption("  A Red Circle. ").objects == (ObjectSpec("red", "circle"),)


@pytest.mark.parametrize("caption, needle", [
    ("a pink circle", "unknown colour 'pink'"),
    ("a red hexagon", "unknown shape 'hexagon'"),
    ("five red circles", "unknown number word 'five'"),
    ("a red circle behind a blue square", "unknown relation"),
    ("two red circle", "unknown shape 'circle'"),
    ("", "empty"),
])
def test_bad_captions_list_the_vocabulary(caption, needle):
    with pytest.raises(CaptionError) as err:
        parse_caption(caption)
    message = str(err.value)
    assert needle in message
    for word in ("red", "cyan", "triangle", "four", "to the left of", "below"):
        assert word in message


def test_size_must_be_multiple_of_32():
    for bad in (0, 50, 63, -64):
        with pytest.raises(ValueError, match="multiple of 32"):
            render("a red circle", size=bad)


def test_sampler_covers_categories_and_roundtrips():
    rng = random.Random(0)
    seen = set()
    for _ in range(500):
        scene = sample_scene(rng)
        seen.add(scene.category)
        spec = parse_caption(scene.caption)
        assert spec.category == scene.category
        assert format_caption(spec) == scene.caption
    assert seen == set(CATEGORIES)


def test_questions_have_unique_one_word_answers():
    vocab = set(vocabulary())
    for i in range(300):
        scene = sample_scene(random.Random(i))
        qa = questions(scene)
        assert qa
        assert len({q for q, _ in qa}) == len(qa)
        for q, a in qa:
            assert q == q.lower() and q.endswith("?")
            assert a in vocab and " " not in a
            assert all(w in vocab for w in q[:-1].split())
            shapes_in_q = [s for s in SHAPES if f"the {s}?" in q]
            if q.startswith("what color is the"):
                (shape,) = shapes_in_q
                assert [o.color for o in scene.objects if o.shape == shape] == [a]
            if q.startswith("how many") and q.split()[2].rstrip("s") in SHAPES:
                n = sum(o.shape == q.split()[2][:-1] for o in scene.objects)
                assert a == ["one", "two", "three", "four"][n - 1]


def test_caption_questions_are_answered_alike_by_every_scene_of_the_caption():
    """What a caption implies agrees with the questions of scenes drawn for it (those only leave out
    relations within 2 px of their threshold), and the kind questions are exactly the scene's."""
    relations_checked = 0
    for i in range(300):
        scene = sample_scene(random.Random(i))
        asked = dict(questions(scene))
        implied = caption_questions(scene.caption)
        for q, a in implied:
            assert q in asked or q.startswith("is the "), (scene.caption, q)
            if q in asked:
                assert asked[q] == a, (scene.caption, q, a)
                relations_checked += q.startswith("is the ")
        assert ([p for p in implied if not p[0].startswith("is the ")]
                == [p for p in questions(scene) if not p[0].startswith("is the ")])
        if scene.category == "position":
            assert [a for q, a in implied if q.startswith("is the ")] == ["yes", "no", "no"]
    assert relations_checked > 50
    assert ("is there a blue square?", "yes") in caption_questions("two blue squares")
    with pytest.raises(CaptionError, match="unknown"):
        caption_questions("a big circle")


def test_dataset_deterministic_and_collates(tmp_path):
    data = ShapesDataset(8, seed=5, size=64)
    a, b = data[3], ShapesDataset(8, seed=5, size=64)[3]
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    assert a["image"].shape == (3, 64, 64) and a["image"].min() >= -1 and a["image"].max() <= 1
    batch = collate([data[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 64, 64) and len(batch["caption"]) == 4
    with pytest.raises(IndexError):
        data[8]
    with pytest.raises(ValueError, match="unknown categories"):
        ShapesDataset(4, categories=["faces"])
    folder = write_split(tmp_path / "split", 5, seed=5, progress=False)
    lines = (folder / "captions.jsonl").read_text().strip().splitlines()
    assert len(lines) == 5 and (folder / "images" / "00004.png").exists()
    assert (folder / "qa.jsonl").read_text().count("\n") > 5


def test_detect_reports_geometry():
    image = render("a red circle to the left of a blue square", seed=0)
    found = detect(image)
    assert sorted(d.kind for d in found) == [("blue", "square"), ("red", "circle")]
    assert all(d.size >= 64 / 6 - 1 for d in found)


@pytest.mark.parametrize("category", ["single_object", "two_objects", "counting", "colors", "position"])
def test_caption_edits_are_false_of_the_captions_scene(category):
    """Every edit is a valid caption that the detector finds false of a scene drawn for the original."""
    rng = random.Random(f"edits:{category}")
    for i in range(4):
        caption = sample_caption(rng, category).text
        image = render(caption, size=64, seed=i)
        assert evaluate(image, caption)["correct"], caption
        edits = caption_edits(caption)
        assert edits and {"color", "shape"} <= set(edits)
        for kind, texts in edits.items():
            assert texts and caption not in texts
            for text in texts:
                assert parse_caption(text).text == text
                assert not evaluate(image, text)["correct"], (caption, kind, text)


def test_caption_edits_leave_out_rewordings_and_relations_that_may_hold():
    colors = caption_edits("a red circle and a blue circle")
    assert "swap_colors" not in colors  # 'a blue circle and a red circle' asks for the same scene
    assert "two blue circles" in colors["color"]
    relation = caption_edits("a red circle to the left of a blue square")
    assert relation["relation"] == ["a red circle to the right of a blue square"]
    assert relation["swap_colors"] == ["a blue circle to the left of a red square"]
    assert sorted(relation["drop"]) == ["a blue square", "a red circle"]
    single = caption_edits("a green triangle")
    assert single["count"] == ["two green triangles", "three green triangles", "four green triangles"]
    assert len(single["add"]) == 17
    with pytest.raises(CaptionError, match="unknown colour"):
        caption_edits("a pink circle")
