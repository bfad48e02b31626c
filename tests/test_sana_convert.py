"""Original SANA .pth layout <-> diffusers layout, loading with weights_only=True."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from genfoundry import hub  # noqa: E402
from genfoundry.sana import SanaTransformer, SanaTransformerConfig  # noqa: E402
from genfoundry.sana.convert import (  # noqa: E402
    diffusers_to_original,
    infer_config,
    is_original_layout,
    original_to_diffusers,
)

TINY = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
    num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=12,
    sample_size=8, patch_size=1, qk_norm="rms_norm_across_heads",
)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = diffusers.SanaTransformer2DModel(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_original_names_follow_the_documented_map(reference):
    original = diffusers_to_original(reference.state_dict())
    assert is_original_layout(original)
    for key in ("x_embedder.proj.weight", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.bias", "t_block.1.weight",
                "y_embedder.y_proj.fc1.weight", "y_embedder.y_proj.fc2.bias", "attention_y_norm.weight",
                "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.bias", "blocks.0.attn.q_norm.weight",
                "blocks.0.cross_attn.q_linear.weight", "blocks.0.cross_attn.kv_linear.bias",
                "blocks.0.cross_attn.proj.weight", "blocks.0.mlp.inverted_conv.conv.weight",
                "blocks.0.mlp.depth_conv.conv.bias", "blocks.0.mlp.point_conv.conv.weight",
                "final_layer.linear.weight", "final_layer.scale_shift_table", "blocks.0.scale_shift_table"):
        assert key in original, key
    assert original["blocks.1.attn.qkv.weight"].shape == (48, 16)
    assert original["blocks.0.cross_attn.kv_linear.weight"].shape == (32, 16)
    back = original_to_diffusers(original)
    assert back.keys() == reference.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in reference.state_dict().items())


def test_pth_loads_with_weights_only_and_matches_diffusers(reference, tmp_path):
    original = diffusers_to_original(reference.state_dict())
    original["y_embedder.y_embedding"] = torch.randn(7, 12)  # dropped on load
    path = tmp_path / "sana_tiny.pth"
    torch.save({"state_dict": original}, path)
    ours = SanaTransformer.from_pretrained(path, config=SanaTransformerConfig(**TINY))
    gen = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 6, 12, generator=gen)
    t = torch.tensor([500.0])
    with torch.no_grad():
        expected = reference(latents, encoder_hidden_states=text, timestep=t).sample
        got = ours(latents, t, text)
    assert (got - expected).abs().max().item() <= 1e-4


def test_pth_without_config_needs_a_known_width(reference, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(diffusers_to_original(reference.state_dict()), path)
    with pytest.raises(hub.CheckpointError, match="matches no named SANA config"):
        SanaTransformer.from_pretrained(path)


def test_infer_config_of_official_shapes():
    with torch.device("meta"):
        for name in ("sana-0.6b", "sana-1.6b"):
            model = SanaTransformer(name)
            state = original_to_diffusers(diffusers_to_original(model.state_dict()))
            inferred = infer_config(state)
            assert dataclasses.asdict(inferred) == dataclasses.asdict(model.config), name


def test_unsafe_or_foreign_checkpoints_are_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1.0)}, unsafe)
    with pytest.raises(hub.CheckpointError, match="weights-only"):
        SanaTransformer.from_pretrained(unsafe)
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.conv_in.weight": torch.zeros(2, 3, 3, 3)}, foreign)
    with pytest.raises(hub.CheckpointError, match="does not look like a SANA transformer"):
        SanaTransformer.from_pretrained(foreign)
    with pytest.raises(hub.CheckpointError, match="no diffusers equivalent"):
        original_to_diffusers({"blocks.0.attn.unknown.weight": torch.zeros(1)})


def test_legacy_non_zip_pth_loads(reference, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": diffusers_to_original(reference.state_dict())}, path, _use_new_zipfile_serialization=False)
    ours = SanaTransformer.from_pretrained(path, config=SanaTransformerConfig(**TINY))
    assert torch.equal(ours.state_dict()["proj_out.weight"], reference.state_dict()["proj_out.weight"])
