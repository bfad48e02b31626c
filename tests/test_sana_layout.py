"""Layout guidance helpers: caption -> layout, region masks, and the guidance term (genfoundry/sana/layout.py)."""

from __future__ import annotations

import pytest
import torch

from genfoundry.sana.layout import (
    LayoutError,
    Region,
    layout_term,
    plan_layout,
    region_masks,
)


@pytest.mark.parametrize("relation, first_box", [
    ("to the left of", (0.0, 0.0, 0.5, 1.0)),
    ("to the right of", (0.5, 0.0, 1.0, 1.0)),
    ("above", (0.0, 0.0, 1.0, 0.5)),
    ("below", (0.0, 0.5, 1.0, 1.0)),
])
def test_relation_captions_get_opposite_halves(relation, first_box):
    layout = plan_layout(f"a red circle {relation} a blue square")
    assert [r.prompt for r in layout] == ["a red circle", "a blue square"]
    assert layout[0].box == first_box
    masks = region_masks(layout, 8, 8)
    assert masks.shape == (2, 1, 8, 8)
    assert masks.sum().item() == 64 and torch.equal(masks[0] + masks[1], torch.ones(1, 8, 8))
    ys, xs = torch.nonzero(masks[0, 0], as_tuple=True)
    centre = (xs.float().mean().item(), ys.float().mean().item())
    expected = {"to the left of": centre[0] < 3.5, "to the right of": centre[0] > 3.5,
                "above": centre[1] < 3.5, "below": centre[1] > 3.5}
    assert expected[relation]


@pytest.mark.parametrize("caption", ["a red circle", "two blue squares", "a red circle and a blue square",
                                     "a photo of a cat on the left", ""])
def test_captions_without_a_relation_have_no_layout(caption):
    assert plan_layout(caption) is None


def test_small_boxes_cover_the_nearest_token_and_bad_regions_are_rejected():
    masks = region_masks([Region("a red circle", (0.70, 0.10, 0.72, 0.12))], 4, 4)
    assert masks.sum().item() == 1 and masks[0, 0, 0, 2].item() == 1
    with pytest.raises(LayoutError, match="non-empty prompt"):
        Region(" ", (0, 0, 1, 1))
    with pytest.raises(LayoutError, match="0 <= x0 < x1 <= 1"):
        Region("a red circle", (0.5, 0.0, 0.5, 1.0))
    with pytest.raises(LayoutError, match="x0, y0, x1, y1"):
        Region("a red circle", (0.0, 1.0))


def test_layout_term_pulls_each_region_towards_its_prompt_and_away_from_the_others():
    torch.manual_seed(0)
    v = torch.randn(3, 2, 4, 4)
    neg = torch.randn(2, 4, 4)
    masks = region_masks([Region("a", (0, 0, 0.5, 1)), Region("b", (0.5, 0, 1, 1)), Region("c", (0, 0, 1, 0.25))], 4, 4)
    expected = torch.zeros(2, 4, 4)
    for r in range(3):
        others = torch.stack([v[s] for s in range(3) if s != r]).mean(0)
        expected += masks[r] * (v[r] - others)
    assert torch.allclose(layout_term(v, neg, masks), expected, atol=1e-6)
    assert torch.allclose(layout_term(v[:1], neg, masks[:1]), masks[0] * (v[0] - neg))
