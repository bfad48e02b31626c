"""DC-AE: parity with diffusers' AutoencoderDC, checkpoint round trips, tiling, configs, errors."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genfoundry import hub
from genfoundry.sana.dcae import DCAE, DCAEConfig, blend_weights, tile_starts

diffusers = pytest.importorskip("diffusers")
AutoencoderDC = diffusers.AutoencoderDC

# SANA style: strided-conv down, interpolate up, RMSNorm, EfficientViT with 5x5 multiscale q/k/v,
# residual shortcuts on; depth 2 in the attention stages.
SANA_STYLE = DCAEConfig.make(
    compression=8, latent_channels=4, base_width=8, encoder_depth=(1, 1, 2, 2), decoder_depth=(1, 2, 1, 2),
    head_dim=8, scaling_factor=0.5,
)
# The other dialect: pixel_unshuffle / pixel_shuffle, empty first stage (in/out convs resample),
# BatchNorm + ReLU decoder stages, two q/k/v scales, different encoder/decoder widths, no in/out shortcuts.
SHUFFLE_STYLE = DCAEConfig(
    in_channels=3,
    latent_channels=8,
    attention_head_dim=16,
    encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
    decoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
    encoder_block_out_channels=(8, 32, 64),
    decoder_block_out_channels=(8, 16, 32),
    encoder_layers_per_block=(0, 1, 2),
    decoder_layers_per_block=(0, 1, 2),
    encoder_qkv_multiscales=((), (), (3, 5)),
    decoder_qkv_multiscales=((), (3,), (3, 5)),
    downsample_block_type="pixel_unshuffle",
    upsample_block_type="pixel_shuffle",
    decoder_norm_types=("batch_norm", "batch_norm", "rms_norm"),
    decoder_act_fns=("relu", "relu", "silu"),
    encoder_out_shortcut=False,
    decoder_in_shortcut=False,
    scaling_factor=0.3,
)
CONFIGS = {"sana_style": SANA_STYLE, "shuffle_style": SHUFFLE_STYLE}
TOL = 1e-4


def random_diffusers_model(config: DCAEConfig, seed: int = 0) -> torch.nn.Module:
    """A diffusers AutoencoderDC with every parameter and BatchNorm statistic perturbed away from init."""
    torch.manual_seed(seed)
    model = AutoencoderDC(**config.to_diffusers_dict()).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn_like(buf))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand_like(buf))
    return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    """(diffusers model, our model loaded from the diffusers save, config)."""
    config = CONFIGS[request.param]
    ref = random_diffusers_model(config)
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    return ref, DCAE.from_pretrained(folder), config


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("size", [16, 32])
def test_parity_with_diffusers(pair, size):
    # size 16 with head_dim 16 puts the deepest shuffle-style stage at 4x4 <= head_dim, where diffusers
    # switches to its quadratic attention form; 32 uses its linear form.
    ref, ours, config = pair
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref_latents = ref.encode(images).latent
        latents = ours.encode(images)
        side = size // config.spatial_compression_ratio
        assert latents.shape == (2, config.latent_channels, side, side)
        assert max_diff(latents, ref_latents) <= TOL
        z = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
        ref_images = ref.decode(z).sample
        assert max_diff(ours.decode(z), ref_images) <= TOL
    assert ref_images.abs().max() > 0.1  # the comparison is not between two near-zero outputs


def test_our_save_loads_in_diffusers(pair, tmp_path):
    _, ours, config = pair
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "AutoencoderDC"
    theirs = AutoencoderDC.from_pretrained(tmp_path).eval()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert max_diff(theirs.encode(images).latent, ours.encode(images)) <= TOL
        z = torch.randn(1, config.latent_channels, 4, 4)
        assert max_diff(theirs.decode(z).sample, ours.decode(z)) <= TOL
    assert theirs.config.scaling_factor == pytest.approx(config.scaling_factor)
    again = DCAE.from_pretrained(tmp_path)
    assert again.config == ours.config
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_pipeline_folder_and_dtype(pair, tmp_path):
    _, ours, _ = pair
    ours.save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text("{}")
    half = DCAE.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = ours.encode(images)
        assert max_diff(half.encode(images).float(), reference) < 0.05 * reference.abs().max()


def test_official_config_matches_diffusers_shapes():
    config = DCAEConfig.named("dc-ae-f32c32")
    assert config.spatial_compression_ratio == 32 and config.latent_channels == 32
    assert config.scaling_factor == pytest.approx(0.41407)
    with torch.device("meta"):
        ours = DCAE(config)
        theirs = AutoencoderDC(**config.to_diffusers_dict())
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes
    params = sum(p.numel() for p in ours.parameters())
    assert 300e6 < params < 325e6  # the paper's ~312M
    assert ours.spatial_compression_ratio == 32


def test_loading_does_not_random_init(pair, tmp_path, monkeypatch):
    _, ours, _ = pair
    ours.save_pretrained(tmp_path)
    devices = []
    original = torch.nn.init.kaiming_uniform_

    def recording(tensor, *args, **kwargs):
        devices.append(tensor.device.type)
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", recording)
    loaded = DCAE.from_pretrained(tmp_path)
    assert devices and set(devices) == {"meta"}
    assert all(p.device.type == "cpu" for p in loaded.parameters())


@pytest.mark.parametrize("compression", [8, 16, 32, 64])
def test_tiny_configs_for_every_compression(compression):
    config = DCAEConfig.tiny(compression=compression, latent_channels=4)
    model = DCAE.from_config(config, seed=0)
    assert model.spatial_compression_ratio == compression
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    latents = model.encode(images)
    assert latents.shape == (2, 4, 64 // compression, 64 // compression)
    recon = model(images)
    assert recon.shape == images.shape
    recon.square().mean().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_from_config_is_seeded():
    a = DCAE.from_config(SANA_STYLE, seed=3)
    b = DCAE.from_config(SANA_STYLE.to_diffusers_dict(), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----------------------------------------------------------------------------------------------
# tiling


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 40),
    tile=st.integers(1, 16),
    overlap_frac=st.floats(0, 0.9),
    scale=st.sampled_from([1, 4]),
)
def test_blend_weights_cover_and_sum_to_one(length, tile, overlap_frac, scale):
    tile = min(tile, length)
    overlap = min(int(overlap_frac * tile), tile - 1)
    starts = tile_starts(length, tile, tile - overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    weights = blend_weights(starts, tile, length, scale)
    total = torch.zeros(length * scale)
    for start, w in zip(starts, weights):
        assert w.shape == (tile * scale,) and w.min() >= 0 and w.max() <= 1 + 1e-6
        total[start * scale : start * scale + tile * scale] += w
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


def test_blend_is_a_linear_ramp_between_two_tiles():
    # two 8-cell tiles over 12 cells overlap by 4: a 1-cell margin each side, a 2-cell linear ramp between
    left, right = blend_weights([0, 4], 8, 12)
    assert torch.allclose(right[:4], torch.tensor([0.0, 0.25, 0.75, 1.0]), atol=1e-5)
    assert torch.allclose(left[4:], torch.tensor([1.0, 0.75, 0.25, 0.0]), atol=1e-5)


def test_single_tile_is_exact():
    model = DCAE.from_config(SANA_STYLE, seed=0).eval()
    z = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(model.decode(z, tile_size=64, tile_overlap=16), model.decode(z))


def test_tiling_without_attention_converges_to_untiled():
    """Conv-only stages: with tiles and overlaps wider than the receptive field the seams vanish."""
    model = DCAE.from_config(DCAEConfig.tiny(compression=8, base_width=8, attention_stages=0), seed=0).eval()
    z = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    images = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref_dec, ref_enc = model.decode(z), model.encode(images)
        small = model.decode(z, tile_size=64, tile_overlap=16)
        dec = model.decode(z, tile_size=160, tile_overlap=96)
        enc = model.encode(images, tile_size=160, tile_overlap=96)
    assert max_diff(dec, ref_dec) < 5e-3 < max_diff(small, ref_dec)
    assert max_diff(enc, ref_enc) < 2e-2


def test_full_tiling_approximates_global_attention():
    """Linear attention sees only its tile, so tiling approximates; the error shrinks as tiles grow."""
    model = DCAE.from_config(SANA_STYLE, seed=0).eval()
    z = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.decode(z)
        errors = [
            (model.decode(z, tile_size=8 * t, tile_overlap=8 * o) - ref).abs().mean().item()
            for t, o in [(8, 2), (16, 8), (20, 12)]
        ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.25 * ref.std().item()


@pytest.mark.parametrize(
    "config, tile, overlap", [(SANA_STYLE, 12, 4), (SHUFFLE_STYLE, 16, 8)], ids=["sana_style", "shuffle_style"]
)
def test_tiling_with_global_attention_matches_untiled(config, tile, overlap):
    """Attention stages untiled, conv stages tiled: seams vanish once the overlap covers the convs."""
    model = DCAE.from_config(config, seed=0).eval()
    f = model.spatial_compression_ratio
    z = torch.randn(1, config.latent_channels, 24, 24, generator=torch.Generator().manual_seed(0))
    images = torch.rand(1, 3, 24 * f, 24 * f, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sizes = {"tile_size": tile * f, "tile_overlap": overlap * f}
    with torch.no_grad():
        dec = model.decode(z, global_attention=True, **sizes)
        enc = model.encode(images, global_attention=True, **sizes)
        tiles_only = model.decode(z, **sizes)
        ref_dec, ref_enc = model.decode(z), model.encode(images)
    assert max_diff(dec, ref_dec) < 5e-3 < max_diff(tiles_only, ref_dec)
    assert max_diff(enc, ref_enc) < 2e-2


def test_tiled_shapes_odd_sizes_enable_tiling_and_grad():
    model = DCAE.from_config(SANA_STYLE, seed=0)
    z = torch.randn(2, 4, 13, 7, requires_grad=True)
    out = model.decode(z, tile=True, tile_size=64, tile_overlap=16)
    assert out.shape == (2, 3, 104, 56)
    out.mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    model.enable_tiling(tile_size=32, tile_overlap=8)
    images = torch.rand(1, 3, 40, 72) * 2 - 1
    with torch.no_grad():
        tiled = model.encode(images)
        assert tiled.shape == (1, 4, 5, 9)
        assert not torch.equal(tiled, model.encode(images, tile=False))
        assert model.encode(images, global_attention=True).shape == (1, 4, 5, 9)
        assert model.decode(tiled, global_attention=True).shape == (1, 3, 40, 72)
    model.disable_tiling()
    assert model.tiling is None


# ----------------------------------------------------------------------------------------------
# errors


def test_input_errors():
    model = DCAE.from_config(SANA_STYLE, seed=0)
    with pytest.raises(ValueError, match="4 channels .* expects 3"):
        model.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="30x32 is not a multiple of the DC-AE compression 8"):
        model.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="latents have 3 channels but this DC-AE expects 4"):
        model.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="4-D"):
        model.decode(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="tile_size must be a positive multiple of the compression 8"):
        model.decode(torch.zeros(1, 4, 4, 4), tile_size=20)
    with pytest.raises(ValueError, match="tile_overlap"):
        model.decode(torch.zeros(1, 4, 4, 4), tile_size=32, tile_overlap=32)
    with torch.device("meta"):
        elsewhere = DCAE(SANA_STYLE)
    with pytest.raises(ValueError, match="latents are on cpu but the DC-AE is on meta"):
        elsewhere.decode(torch.zeros(1, 4, 4, 4))


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of attention_head_dim"):
        DCAEConfig.make(compression=8, base_width=8, head_dim=24)
    with pytest.raises(ValueError, match="power of two"):
        DCAEConfig.make(compression=12)
    with pytest.raises(ValueError, match="unknown block type"):
        DCAEConfig(encoder_block_types="Transformer")
    with pytest.raises(ValueError, match="multiple of latent_channels"):
        DCAEConfig.tiny(latent_channels=5)
    with pytest.raises(ValueError, match="unknown DC-AE config"):
        DCAEConfig.named("dc-ae-f7")


def test_checkpoint_errors(tmp_path):
    transformer = tmp_path / "transformer"
    transformer.mkdir()
    (transformer / "config.json").write_text(json.dumps({"_class_name": "SanaTransformer2DModel"}))
    with pytest.raises(hub.CheckpointError, match="SanaTransformer2DModel checkpoint, not a DC-AE"):
        DCAE.from_pretrained(transformer)
    with pytest.raises(hub.CheckpointError, match="no config.json"):
        DCAE.from_pretrained(tmp_path)

    model = DCAE.from_config(SANA_STYLE, seed=0)
    folder = model.save_pretrained(tmp_path / "vae")
    state = model.state_dict()
    state.pop("decoder.conv_in.weight")
    state["decoder.extra.weight"] = torch.zeros(1)
    hub.save_file(state, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(hub.CheckpointError, match=r"missing keys \(1\): decoder.conv_in.weight") as err:
        DCAE.from_pretrained(folder)
    assert "unexpected keys (1): decoder.extra.weight" in str(err.value)

    other = DCAE.from_config(DCAEConfig.tiny(latent_channels=8), seed=0)
    hub.save_file(other.state_dict(), folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(hub.CheckpointError, match="wrong shapes"):
        DCAE.from_pretrained(folder)

    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(hub.CheckpointError, match="neither diffusion_pytorch_model.safetensors"):
        DCAE.from_pretrained(folder)

    config = json.loads((folder / "config.json").read_text())
    config["not_a_dcae_key"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.CheckpointError, match="unknown DC-AE config keys"):
        DCAE.from_pretrained(folder)
