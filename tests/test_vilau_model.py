"""VILA-U model pieces on a tiny random model: depth causality, RQ round trip, KV cache, sampling, input checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genfoundry.shapes import render
from genfoundry.vilau import DepthConfig, DepthTransformer, ResidualQuantizer, VilaU, VilaUConfig
from genfoundry.vilau.generate import (
    DEFAULT_RANKER, RANKERS, DecodeStream, Sampling, answer_log_likelihoods, caption_and_answer_log_likelihoods,
    caption_log_likelihoods, filter_logits, generate_codes, sample_codes,
)


@pytest.fixture(scope="module")
def model() -> VilaU:
    torch.manual_seed(0)
    return VilaU(VilaUConfig.tiny()).eval()


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(2, 5))
def test_depth_transformer_is_causal_over_depth(seed: int, depth: int) -> None:
    torch.manual_seed(seed)
    cfg = DepthConfig(llm_hidden_size=12, code_dim=6, codebook_size=9, depth=depth, hidden_size=16, num_layers=2,
                      num_heads=2)
    net = DepthTransformer(cfg).eval()
    quantizer = ResidualQuantizer(depth, 9, 6)
    hidden = torch.randn(3, 12)
    codes = torch.randint(0, 9, (3, depth))
    logits = net(hidden, quantizer.partial_sums(codes[:, :-1]))
    assert logits.shape == (3, depth, 9)
    for j in range(depth - 1):  # 0-based depth j: changing its code may only move logits at depths > j
        changed = codes.clone()
        changed[:, j] = (changed[:, j] + 1) % 9
        other = net(hidden, quantizer.partial_sums(changed[:, :-1]))
        torch.testing.assert_close(other[:, : j + 1], logits[:, : j + 1], rtol=0, atol=0)
        assert not torch.allclose(other[:, j + 1], logits[:, j + 1])  # ... and it does move the next one


def test_residual_quantizer_round_trip() -> None:
    """Codes -> summed embedding -> codes is exact when each depth's codebook lives at a finer scale."""
    torch.manual_seed(0)
    q = ResidualQuantizer(depth=3, codebook_size=8, dim=4).eval()
    base = torch.randn(3, 8, 4)
    q.codebooks.copy_(base * torch.tensor([1.0, 0.05, 0.0025])[:, None, None])
    q.initialized.fill_(True)
    codes = torch.randint(0, 8, (50, 3))
    z = q.embed(codes)
    out = q(z)
    torch.testing.assert_close(out.codes, codes, rtol=0, atol=0)
    torch.testing.assert_close(out.quantized, z)


def test_quantizer_ema_update_and_dead_code_restart() -> None:
    torch.manual_seed(0)
    q = ResidualQuantizer(depth=2, codebook_size=16, dim=3, decay=0.5, dead_code_threshold=0.5).train()
    z = torch.randn(64, 3)
    first = q(z)  # initialises the codebooks from data
    assert bool(q.initialized)
    before = q.codebooks.clone()
    q.codebooks[0, 0] = 1e3  # code 0 of depth 0: far from every vector, so it stays unused and dies
    q.embed_sum[0, 0] = 1e3
    q.cluster_size[0, 0] = 0.0
    out = q(z + 0.1)
    assert not torch.equal(before[1:], q.codebooks[1:])  # EMA moved the codebooks
    assert out.dead_restarts >= 1
    assert float(q.codebooks[0, 0].abs().max()) < 10  # restarted at a data vector
    assert first.codes.shape == (64, 2)


def test_tokenize_detokenize_contract(model: VilaU) -> None:
    image = render("a red circle", size=32, seed=1)
    codes = model.tokenize_image(image)
    g, d = model.config.tower.grid, model.config.tower.depth
    assert codes.shape == (g, g, d) and codes.dtype == torch.long
    out = model.detokenize(codes)
    assert out.size == (32, 32)
    with pytest.raises(ValueError, match="codes must have shape"):
        model.detokenize(codes[:, :, :1])


def test_kv_cache_equals_full_recomputation(model: VilaU) -> None:
    torch.manual_seed(1)
    h = model.llm.config.hidden_size
    chunks = [torch.randn(2, n, h) for n in (5, 1, 1, 3, 1)]
    cached, full = DecodeStream(model, use_cache=True), DecodeStream(model, use_cache=False)
    with torch.no_grad():
        for c in chunks:
            torch.testing.assert_close(cached.feed(c), full.feed(c), rtol=1e-4, atol=1e-5)
    a = generate_codes(model, ["a red circle", "two blue squares"], seed=3, use_cache=True)
    b = generate_codes(model, ["a red circle", "two blue squares"], seed=3, use_cache=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_lean_decoder_matches_transformers_with_left_padding(kv_heads: int) -> None:
    """genfoundry's KV-cached decoder against the transformers Llama forward (the independent reference),
    with left-padded rows, chunked feeding, grouped-query attention, and with and without the cache."""
    from transformers import LlamaConfig, LlamaModel

    from genfoundry.vilau.decoder import LlamaDecoder

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=kv_heads, max_position_embeddings=64, rope_theta=500.0)
    llm = LlamaModel(config).eval()
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :7] = 0
    embeds = torch.randn(3, 12, 32)
    with torch.no_grad():
        reference = llm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        for use_cache in (True, False):
            decoder = LlamaDecoder(llm, use_cache)
            got = torch.cat([decoder.feed(embeds[:, a:b], mask[:, a:b]) for a, b in ((0, 8), (8, 9), (9, 12))], 1)
            real = mask.bool()
            torch.testing.assert_close(got[real], reference[real], rtol=1e-4, atol=1e-5)
            assert torch.isfinite(got).all()  # padding rows stay finite (they must not poison the cache)


def test_decode_stream_backends_agree(model: VilaU) -> None:
    torch.manual_seed(2)
    h = model.llm.config.hidden_size
    streams = [DecodeStream(model, use_cache=True, backend=b) for b in DecodeStream.BACKENDS]
    assert streams[0].backend == "lean" and DecodeStream(model).backend == "lean"
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        for i, n in enumerate((5, 1, 1)):
            chunk = torch.randn(2, n, h)
            lean, reference = (s.feed(chunk, mask if i == 0 else None) for s in streams)
            torch.testing.assert_close(lean, reference, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown decoding backend"):
        DecodeStream(model, backend="vllm")


def test_depth_transformer_last_only_is_the_last_depth(model: VilaU) -> None:
    torch.manual_seed(3)
    hidden = torch.randn(4, model.llm.config.hidden_size)
    codes = torch.randint(0, model.config.tower.codebook_size, (4, model.config.tower.depth - 1))
    prefix = model.tower.quantizer.partial_sums(codes)
    with torch.no_grad():
        full = model.depth_transformer(hidden, prefix)
        torch.testing.assert_close(model.depth_transformer(hidden, prefix, last_only=True), full[:, -1])
        torch.testing.assert_close(model.depth_transformer(hidden, None, last_only=True),
                                   model.depth_transformer(hidden)[:, 0])


def test_left_padded_batch_matches_single_prompts(model: VilaU) -> None:
    both = generate_codes(model, ["a red circle", "a red circle to the left of a blue square"], temperature=0.0)
    one = generate_codes(model, ["a red circle to the left of a blue square"], temperature=0.0)
    torch.testing.assert_close(both[1], one[0], rtol=0, atol=0)


def test_generation_is_deterministic_per_seed(model: VilaU) -> None:
    a = generate_codes(model, "a green triangle", seed=7)
    b = generate_codes(model, "a green triangle", seed=7)
    c = generate_codes(model, "a green triangle", seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert model.generate_image("a green triangle", seed=7).tobytes() == model.generate_image(
        "a green triangle", seed=7).tobytes()


def test_cfg_one_is_the_conditional_distribution(model: VilaU) -> None:
    torch.manual_seed(2)
    cond = torch.randn(3, model.llm.config.hidden_size)
    greedy = Sampling(temperature=0.0)
    with torch.no_grad():
        plain = sample_codes(model, cond, None, greedy, None)
        guided = sample_codes(model, torch.cat([cond, torch.randn_like(cond)]), 1.0, greedy, None)
    torch.testing.assert_close(plain, guided, rtol=0, atol=0)


def test_filter_logits_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, None)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.5)).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("kwargs, message", [
    ({"cfg": -1.0}, "cfg"), ({"cfg": float("nan")}, "cfg"), ({"top_p": 0.0}, "top_p"), ({"top_k": 0}, "top_k"),
    ({"temperature": -0.5}, "temperature"), ({"seed": -3}, "seed"),
])
def test_generation_argument_errors(model: VilaU, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model.generate_image("a red circle", **kwargs)


def test_prompt_and_question_errors(model: VilaU, tmp_path) -> None:
    image = render("a red circle", size=32, seed=1)
    with pytest.raises(ValueError, match="prompt is empty"):
        model.generate_image("   ")
    with pytest.raises(ValueError, match="unknown word"):
        model.generate_image("a red elephant")
    with pytest.raises(ValueError, match="question is empty"):
        model.answer(image, "  ")
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is text, not pixels")
    with pytest.raises(ValueError, match="not an image file"):
        model.answer(str(not_image), "what color is the circle?")
    with pytest.raises(FileNotFoundError, match="not found"):
        model.answer(str(tmp_path / "missing.png"), "what color is the circle?")


def test_wrong_size_image_is_resized_with_a_note(model: VilaU) -> None:
    big = render("a red circle", size=64, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = model.answer(big, "what color is the circle?", max_new_tokens=3)
    assert isinstance(text, str)
    assert any("resized to 32x32" in str(w.message) for w in caught)


def test_answer_batch_matches_single_and_video_input(model: VilaU) -> None:
    from genfoundry.vilau.generate import answer_batch

    images = [render("a red circle", size=32, seed=s) for s in range(2)]
    questions = ["what color is the circle?", "is there a red circle?"]
    batched = answer_batch(model, images, questions, max_new_tokens=3)
    assert batched == [model.answer(i, q, max_new_tokens=3) for i, q in zip(images, questions)]
    assert isinstance(model.answer(images, "is the red circle moving up?", max_new_tokens=2), str)


def test_training_loss_is_finite_and_reaches_every_part(model: VilaU) -> None:
    from genfoundry.vilau.model import Segment

    image = render("a red circle", size=32, seed=1)
    codes = model.tokenize_image(image)
    eos = model.tokenizer.eos_token_id
    seqs = [model.build_sequence([Segment("image", codes), Segment("text", model.text_ids("a red circle") + [eos], True)]),
            model.build_sequence([Segment("text", model.text_ids("a red circle")), Segment("image", codes, True)]),
            model.build_sequence([Segment("text", model.text_ids(" ")), Segment("video", [codes, codes], True)])]
    batch = model.collate(seqs)
    assert int(batch.image_targets.sum()) == 3 * codes.shape[0] * codes.shape[1]
    model.zero_grad()
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    for part in (model.llm.lm_head, model.mm_projector, model.depth_transformer):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    model.zero_grad()


def test_siglip_vision_tower_shape() -> None:
    """The official-shape path: a transformers SigLIP encoder (second-to-last layer) feeding the quantizer."""
    from genfoundry.vilau import TowerConfig, VisionTower

    cfg = TowerConfig(image_size=32, encoder="siglip", code_dim=8, codebook_size=16, depth=2, align_dim=8,
                      siglip={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                              "num_attention_heads": 2, "patch_size": 8},
                      text={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "max_position_embeddings": 8})
    tower = VisionTower(cfg, vocab_size=20, pad_id=0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = tower(images, torch.randint(1, 20, (2, 8)))
    assert out.codes.shape == (2, 4, 4, 2) and out.reconstruction.shape == images.shape
    assert set(out.losses) == {"reconstruction", "commitment", "contrastive", "total"}
    with pytest.raises(ValueError, match="siglip"):
        TowerConfig(encoder="siglip")


@pytest.mark.parametrize("rank_by", list(RANKERS))
def test_best_of_candidates_keeps_the_rankers_choice(model: VilaU, rank_by: str) -> None:
    prompts = ["a red circle", "two blue squares"]
    best = generate_codes(model, prompts, seed=11, candidates=3, rank_by=rank_by)
    assert torch.equal(generate_codes(model, prompts, seed=11, candidates=1), generate_codes(model, prompts, seed=11))
    # the candidates are the rows of one batch of every prompt repeated, drawn with the same seed
    drawn = [p for p in prompts for _ in range(3)]
    every = generate_codes(model, drawn, seed=11)
    scores = RANKERS[rank_by](model, every[:, 0], drawn).reshape(2, 3)
    assert torch.equal(best, every[scores.argmax(1) + torch.tensor([0, 3])])
    assert best.shape == (2, 1, *every.shape[2:])
    with pytest.raises(ValueError, match="candidates must be a positive integer"):
        generate_codes(model, prompts, candidates=0)
    with pytest.raises(ValueError, match="images only"):
        generate_codes(model, prompts, frames=2, candidates=2)
    with pytest.raises(ValueError, match="rank_by must be one of caption\\+answers, caption, answers, alignment"):
        generate_codes(model, prompts, candidates=2, rank_by="clip")


def random_codes_and_captions(model: VilaU, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Three images of random codes and three captions (one, counting, a relation) to score them by."""
    torch.manual_seed(seed)
    g, d, k = model.config.tower.grid, model.config.tower.depth, model.config.tower.codebook_size
    return (torch.randint(0, k, (3, g, g, d)),
            ["a red circle", "two blue squares", "a green triangle to the left of a red circle"])


def test_caption_log_likelihood_is_the_captioning_loss(model: VilaU) -> None:
    """Independent of its batching: each image's score is minus the summed text cross-entropy that
    VilaU.forward (the training loss) gives its [image, caption <eos>] sequence alone."""
    from genfoundry.vilau.model import Segment

    codes, captions = random_codes_and_captions(model, seed=3)
    got = caption_log_likelihoods(model, codes, captions, reencode=False, batch_size=2)
    eos = model.tokenizer.eos_token_id
    for c, caption, value in zip(codes, captions, got):
        tokens = model.text_ids(caption) + [eos]
        batch = model.collate([model.build_sequence([Segment("image", c), Segment("text", tokens, train=True)])])
        with torch.no_grad():
            loss = model(batch)["text_loss"]
        assert value.item() == pytest.approx(-loss.item() * len(tokens), rel=1e-4, abs=1e-4)
    # re-encoding reads the codes' pixels again: the same as scoring the re-tokenized codes directly
    again = model.tower.tokenize(model.tower.detokenize(codes))
    assert torch.allclose(caption_log_likelihoods(model, codes, captions),
                          caption_log_likelihoods(model, again, captions, reencode=False), atol=1e-5)
    with pytest.raises(ValueError, match="one caption per image"):
        caption_log_likelihoods(model, codes, captions[:2])


def test_answer_log_likelihood_is_the_vqa_loss_over_the_captions_questions(model: VilaU) -> None:
    """Each image's score is minus the summed answer cross-entropy that VilaU.forward (the VQA training
    loss) gives each [image, question, answer <eos>] of its caption's questions, summed; the default
    ranker adds the caption likelihood; captions outside the grammar get a clear error (or 0)."""
    from genfoundry.shapes import caption_questions
    from genfoundry.vilau.model import Segment

    codes, captions = random_codes_and_captions(model, seed=4)
    got = answer_log_likelihoods(model, codes, captions, reencode=False, batch_size=5)
    eos = model.tokenizer.eos_token_id
    for c, caption, value in zip(codes, captions, got):
        expected = 0.0
        for q, a in caption_questions(caption):
            tokens = model.text_ids(a) + [eos]
            seq = model.build_sequence([Segment("image", c), Segment("text", model.text_ids(q)),
                                        Segment("text", tokens, train=True)])
            with torch.no_grad():
                expected -= model(model.collate([seq]))["text_loss"].item() * len(tokens)
        assert value.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)
    both = caption_and_answer_log_likelihoods(model, codes, captions)
    assert torch.allclose(both, caption_log_likelihoods(model, codes, captions)
                          + answer_log_likelihoods(model, codes, captions), atol=1e-4)
    assert RANKERS[DEFAULT_RANKER] is caption_and_answer_log_likelihoods
    import inspect

    from genfoundry.vilau import cli
    assert cli.DEFAULT_RANKER == DEFAULT_RANKER  # the CLI names it without importing torch
    assert inspect.signature(VilaU.generate_image).parameters["rank_by"].default == DEFAULT_RANKER
    odd = ["a red circle", "red circle"]  # the second is in the vocabulary but outside the caption grammar
    with pytest.raises(ValueError, match="needs ShapeWorld captions"):
        answer_log_likelihoods(model, codes[:2], odd)
    assert answer_log_likelihoods(model, codes[:2], odd, strict=False)[1] == 0
    with pytest.raises(ValueError, match="rank_by='answers' needs ShapeWorld captions"):
        generate_codes(model, odd, candidates=2, rank_by="answers")
    assert generate_codes(model, odd, seed=1, candidates=2).shape[0] == 2  # the default falls back to the caption
