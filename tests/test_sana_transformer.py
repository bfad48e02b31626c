"""SanaTransformer: fp32 parity with diffusers' SanaTransformer2DModel on tiny random configs."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from genfoundry import hub  # noqa: E402
from genfoundry.sana import NAMED_CONFIGS, SanaTransformer, SanaTransformerConfig  # noqa: E402

TINY = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
    num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=12,
    sample_size=8, patch_size=1,
)
VARIANTS = {
    "nope": {},
    "pe_patch2": dict(interpolation_scale=2.0, patch_size=2, sample_size=16),  # 4K-style: sincos PE on
    "qk_norm_bias": dict(qk_norm="rms_norm_across_heads", attention_bias=True),
}


def random_diffusers_model(**overrides):
    torch.manual_seed(0)
    model = diffusers.SanaTransformer2DModel(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # default init leaves some tensors at exact ones/zeros; make every weight matter
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(height, width, masked, seed=1):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, height, width, generator=gen)
    text = torch.randn(2, 6, 12, generator=gen)
    # the last position is padding in every row: exercises the CPU trimming of shared padding
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]) if masked else None
    return latents, torch.tensor([3.0, 711.0]), text, mask


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    ref = random_diffusers_model(**VARIANTS[request.param])
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    return ref, SanaTransformer.from_pretrained(folder)


@pytest.mark.parametrize("size", [(8, 8), (12, 16)])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_diffusers(pair, size, masked):
    ref, ours = pair
    latents, t, text, mask = inputs(*size, masked)
    with torch.no_grad():
        expected = ref(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample
        got = ours(latents, t, text, mask)
    assert got.shape == expected.shape == latents.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_masked_keys_are_ignored(pair):
    _, ours = pair
    latents, t, text, mask = inputs(8, 8, masked=True)
    with torch.no_grad():
        masked, unmasked = ours(latents, t, text, mask), ours(latents, t, text, None)
        for row, length in ((0, 3), (1, 5)):  # = the same prompt without its padding
            alone = ours(latents[row:row + 1], t[row:row + 1], text[row:row + 1, :length])
            assert torch.allclose(masked[row], alone[0], atol=1e-5)
    assert (masked - unmasked).abs().max() > 1e-4


def test_save_pretrained_loads_in_diffusers(pair, tmp_path):
    ref, ours = pair
    ours.save_pretrained(tmp_path)
    back = diffusers.SanaTransformer2DModel.from_pretrained(tmp_path).eval()
    latents, t, text, mask = inputs(8, 8, masked=True)
    with torch.no_grad():
        a = back(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample
        b = ref(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample
    assert torch.equal(a, b)
    assert SanaTransformer.from_pretrained(tmp_path).config == ours.config


def test_named_configs_have_official_shapes():
    small, large = NAMED_CONFIGS["sana-0.6b"], NAMED_CONFIGS["sana-1.6b"]
    assert (small.num_layers, small.inner_dim, small.num_cross_attention_heads, small.cross_attention_head_dim) == (
        28, 1152, 16, 72)
    assert (large.num_layers, large.inner_dim, large.num_cross_attention_heads, large.cross_attention_head_dim) == (
        20, 2240, 20, 112)
    with torch.device("meta"):
        params = sum(p.numel() for p in SanaTransformer("sana-0.6b").parameters())
        ref = sum(p.numel() for p in diffusers.SanaTransformer2DModel(**vars(small) | {"out_channels": 32}).parameters())
    assert params == ref and 560e6 < params < 620e6


def test_from_pretrained_builds_on_meta_without_random_init(pair, tmp_path, monkeypatch):
    _, ours = pair
    ours.save_pretrained(tmp_path)
    calls = []
    original = torch.Tensor.normal_
    monkeypatch.setattr(torch.Tensor, "normal_", lambda self, *a, **k: calls.append(self.device) or original(self, *a, **k))
    loaded = SanaTransformer.from_pretrained(tmp_path)
    assert all(d.type == "meta" for d in calls)
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def test_bad_inputs_and_checkpoints(pair, tmp_path):
    _, ours = pair
    latents, t, text, mask = inputs(8, 8, masked=True)
    with pytest.raises(ValueError, match="latents must be"):
        ours(latents[:, :3], t, text, mask)
    with pytest.raises(ValueError, match="text must be"):
        ours(latents, t, text[:, :, :5], mask)
    with pytest.raises(ValueError, match="text_mask must be"):
        ours(latents, t, text, mask[:, :3])
    with pytest.raises(ValueError, match="patch_size"):
        SanaTransformer(SanaTransformerConfig(**{**TINY, "patch_size": 0}))
    state = {k: v for k, v in ours.state_dict().items() if "transformer_blocks.1." not in k}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(hub.CheckpointError, match="(?s)missing keys.*unexpected keys"):
        SanaTransformer.from_state_dict(state, ours.config)
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderDC"}')
    with pytest.raises(hub.CheckpointError, match="AutoencoderDC"):
        SanaTransformer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        SanaTransformer(SanaTransformerConfig(**{**TINY, "cross_attention_dim": 8}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_gpu_is_finite_and_close(pair, dtype):
    _, ours = pair
    half = SanaTransformer.from_state_dict(ours.state_dict(), ours.config, dtype=dtype, device="cuda")
    latents, t, text, mask = inputs(8, 8, masked=True)
    with torch.no_grad():
        expected = ours(latents, t, text, mask)
        got = half(latents.cuda().to(dtype), t.cuda(), text.cuda().to(dtype), mask.cuda()).float().cpu()
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 0.05 * expected.abs().max().item() + 0.05


def test_loads_variant_weight_files(pair, tmp_path):
    _, ours = pair
    ours.save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").rename(tmp_path / "diffusion_pytorch_model.bf16.safetensors")
    loaded = SanaTransformer.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ours.state_dict().values()))
    (tmp_path / "diffusion_pytorch_model.bf16.safetensors").unlink()
    with pytest.raises(hub.CheckpointError, match="found: none"):
        SanaTransformer.from_pretrained(tmp_path)


def test_text_context_computed_once_matches_every_step(pair):
    """encode_text once, then forward(..., text_context=...) per step = forward(text, mask) per step,
    against diffusers too; rows() slices it; misuse is a clear error."""
    ref, ours = pair
    latents, _, text, mask = inputs(8, 8, masked=True)
    with torch.no_grad():
        context = ours.encode_text(text, mask)
        assert context.batch == 2 and len(context.kv) == ours.config.num_layers
        for t in (torch.tensor([999.0, 999.0]), torch.tensor([500.0, 20.0])):
            expected = ref(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample
            torch.testing.assert_close(ours(latents, t, text_context=context), ours(latents, t, text, mask),
                                       rtol=0, atol=0)
            assert (ours(latents, t, text_context=context) - expected).abs().max().item() <= 1e-4
        first = ours(latents[:1], t[:1], text_context=context.rows(1))
        torch.testing.assert_close(first, ours(latents[:1], t[:1], text[:1], mask[:1]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="either text"):
        ours(latents, t, text, mask, text_context=context)
    with pytest.raises(ValueError, match="holds 2 rows but latents have 1"):
        ours(latents[:1], t[:1], text_context=context)
    with pytest.raises(ValueError, match="give the text embeddings"):
        ours(latents, t)
