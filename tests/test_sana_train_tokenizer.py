"""The word-level ShapeWorld tokenizer: round trip, save/load through transformers, unknown words."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from genfoundry.shapes import CATEGORIES, ShapesDataset, sample_caption, vocabulary
from genfoundry.shapes.tokenizer import build_tokenizer, out_of_vocabulary


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_every_word_is_one_token(tokenizer):
    for word in vocabulary():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id, word
    assert tokenizer("a red circle").input_ids[0] == tokenizer.bos_token_id
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}) == 4


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(CATEGORIES))
def test_caption_and_qa_round_trip(seed, category):
    tok = build_tokenizer()
    caption = sample_caption(random.Random(seed), category).text
    ids = tok(caption).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == caption
    for question, answer in ShapesDataset(1, seed=seed)[0]["qa"]:
        line = f"{question} {answer}"
        assert tok.decode(tok(line).input_ids, skip_special_tokens=True) == line


def test_save_and_load_with_transformers(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    text = "What color is the square?"
    for loaded in (AutoTokenizer.from_pretrained(tmp_path),
                   PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))):
        assert loaded(text.lower()).input_ids[1:] == tokenizer(text).input_ids[1:]
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert auto(text).input_ids == tokenizer(text).input_ids
    assert auto.pad_token == "<pad>" and auto.eos_token == "<eos>"


def test_out_of_vocabulary_names_unknown_words(tokenizer):
    assert out_of_vocabulary("A red circle to the left of a blue square", tokenizer) == []
    assert out_of_vocabulary("a pink hexagon and a pink circle!", tokenizer) == ["pink", "hexagon", "!"]
    ids = tokenizer("a pink circle").input_ids
    assert tokenizer.unk_token_id in ids


def test_extra_special_tokens():
    tok = build_tokenizer(["<im_start>", "<im_end>"])
    assert tok.convert_tokens_to_ids("<im_start>") == 4 and tok.convert_tokens_to_ids("<im_end>") == 5
    ids = tok("<im_start> a red circle <im_end>", add_special_tokens=False).input_ids
    assert ids[0] == 4 and ids[-1] == 5 and tok.unk_token_id not in ids
    with pytest.raises(ValueError, match="clash"):
        build_tokenizer(["<pad>"])
