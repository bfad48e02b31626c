"""Evaluation helpers and training utilities of the SANA trainer (no model training here)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genfoundry.sana import train as sana_train
from genfoundry.sana.evaluate import dcae_psnr, format_table, heldout_prompts, score_images
from genfoundry.shapes import CATEGORIES, render


def test_heldout_prompts_are_balanced_and_deterministic():
    prompts = heldout_prompts(20, seed=3)
    assert prompts == heldout_prompts(20, seed=3) and prompts != heldout_prompts(20, seed=4)
    assert [c for _, c in prompts] == [CATEGORIES[i % 5] for i in range(20)]
    with pytest.raises(ValueError, match="prompts"):
        heldout_prompts(0)


def test_true_renders_score_one_and_blank_images_zero():
    prompts = heldout_prompts(10, seed=1)
    report = score_images([render(p, seed=i) for i, (p, _) in enumerate(prompts)], prompts)
    assert report.overall == 1.0 and set(report.per_category) == set(CATEGORIES)
    blank = score_images([render("a red circle").point(lambda _: 0)] * len(prompts), prompts)
    assert blank.overall == 0.0
    table = format_table(report, psnr=31.5)
    assert "| **overall** | 10 | 10 | **1.000** |" in table and "31.50 dB" in table


class _Identity(nn.Module):
    spatial_compression_ratio = 1

    def __init__(self, noise: float = 0.0):
        super().__init__()
        self.noise = noise
        self.p = nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.p.device

    @property
    def dtype(self):
        return self.p.dtype

    def encode(self, x):
        return x

    def decode(self, z):
        return z + self.noise


def test_dcae_psnr_measures_reconstruction_error():
    assert dcae_psnr(_Identity(), count=3) > 100
    # a constant error of 0.02 in [-1, 1] is 0.01 in [0, 1]: PSNR = 10 log10(1 / 1e-4) = 40 dB
    assert math.isclose(dcae_psnr(_Identity(0.02), count=3), 40.0, abs_tol=0.6)


def test_learning_rate_schedule_and_step_generator():
    lrs = [sana_train.learning_rate(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    cpu = torch.device("cpu")
    a = torch.rand(4, generator=sana_train.step_generator(0, "dcae", 7, 0, cpu))
    b = torch.rand(4, generator=sana_train.step_generator(0, "dcae", 7, 0, cpu))
    c = torch.rand(4, generator=sana_train.step_generator(0, "dcae", 7, 1, cpu))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_presets_and_overrides():
    cfg = sana_train.preset("gpu")
    assert cfg.data.size == 64 and cfg.dcae.compression in (8, 16) and 8 <= cfg.dit.depth <= 12
    assert 256 <= cfg.dit.width <= 384 and cfg.dit.cfg_dropout == 0.1
    tiny = sana_train.preset("tiny", **{"dit.steps": 3, "seed": 5})
    assert tiny.dit.steps == 3 and tiny.seed == 5 and sana_train.preset("tiny").dit.steps != 3
    with pytest.raises(ValueError, match="unknown config field"):
        sana_train.preset("tiny", **{"dit.stepz": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        sana_train.preset("huge")


def test_gpu_preset_fits_the_size_budget():
    """The embedded model must stay <= 40 MB in fp16: count parameters on the meta device."""
    from genfoundry.sana.dcae import DCAE
    from genfoundry.sana.transformer import SanaTransformer
    from genfoundry.shapes.tokenizer import build_tokenizer

    cfg = sana_train.preset("gpu")
    latent = cfg.data.size // cfg.dcae.compression
    with torch.device("meta"):
        dit = SanaTransformer(sana_train.transformer_config(cfg.dit, cfg.dcae.latent_channels, latent,
                                                            cfg.text.hidden_size))
        vae = DCAE(sana_train.dcae_config(cfg.dcae))
        lm = sana_train.build_language_model(cfg.text, build_tokenizer())
    text = sum(p.numel() for p in lm.parameters())  # upper bound: only feature_layers are kept
    total = sum(p.numel() for m in (dit, vae) for p in m.parameters()) + text
    assert 2 * total <= 40e6, f"{2 * total / 1e6:.1f} MB"
