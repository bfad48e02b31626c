"""The model registry (genfoundry.models) and the layer declarations the generic quantizer reads;
quantized VILA-U through `genfoundry quantize`, `ask` / `imagine --quantized` and a save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from genfoundry import models
from genfoundry.cli import app
from genfoundry.hub import CheckpointError
from genfoundry.sana import SanaTransformer
from genfoundry.svdquant import QuantConfig, SVDQLinear, load_quantized, quantize, read_quantization_config, save_quantized
from genfoundry.svdquant.quantize import GENERIC_SKIP, default_patterns
from genfoundry.vilau import VilaU, VilaUConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_vilau_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vilau") / "model"
    VilaU(VilaUConfig.tiny()).eval().save_pretrained(folder)
    return folder


def test_families_recognise_their_folders(tiny_sana_pipeline, tiny_vilau_folder, tmp_path):
    assert models.family_of(tiny_sana_pipeline).name == "sana"
    assert models.family_of(tiny_vilau_folder).name == "vila-u"
    assert models.family_of("vila-u-shapes").name == "vila-u"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not a model folder genfoundry knows"):
        models.family_of(tmp_path)


def test_models_declare_their_skipped_layers():
    # our SANA transformer declares them as class attributes, diffusers' through the sana registration
    from diffusers import SanaTransformer2DModel

    assert models.declared_layers(nn.Sequential(nn.Linear(4, 4))) is None
    assert default_patterns(nn.Sequential(nn.Linear(4, 4)))[0] == GENERIC_SKIP
    sana_skip, sana_w4a16 = list(SanaTransformer.quantization_skip), list(SanaTransformer.quantization_weight_only)
    assert "proj_out" in sana_skip and sana_w4a16 == ["*time_embed.linear"]
    foreign = SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                     num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                     cross_attention_dim=16, caption_channels=8, sample_size=4, patch_size=1)
    assert default_patterns(foreign) == (sana_skip, sana_w4a16)
    assert default_patterns(VilaU(VilaUConfig.tiny()))[0] == list(VilaU.quantization_skip)


def test_quantized_vilau_round_trip_keeps_the_tower(tiny_vilau_folder, tmp_path):
    from genfoundry.vilau.quantization import FAMILY

    vila = FAMILY.load(tiny_vilau_folder, torch.device("cpu"), None)
    tower_before = {k: v.clone() for k, v in vila.tower.state_dict().items()}
    calibrate = FAMILY.calibrator(vila, models.Calibration(prompts=4, batch_size=4))
    quantize(FAMILY.target(vila), calibrate, QuantConfig(rank=8, group_size=32, progress=False, calib_tokens=64))
    quantized = {n for n, m in vila.named_modules() if isinstance(m, SVDQLinear)}
    assert "llm.model.layers.0.self_attn.q_proj" in quantized and "depth_transformer.blocks.0.qkv" in quantized
    assert not any(n.startswith(("tower.", "mm_projector.")) for n in quantized)
    assert "llm.lm_head" not in quantized and "depth_transformer.code_in" not in quantized
    assert all(torch.equal(v, tower_before[k]) for k, v in vila.tower.state_dict().items())
    path = save_quantized(vila, tmp_path / "q.safetensors")
    fresh = VilaU.from_pretrained(tiny_vilau_folder)
    load_quantized(fresh, path)
    image = torch.zeros(3, 32, 32)
    assert fresh.answer(image, "what color is the circle?", max_new_tokens=3) == \
        vila.answer(image, "what color is the circle?", max_new_tokens=3)
    a = fresh.generate_image("a red circle", seed=1)
    b = vila.generate_image("a red circle", seed=1)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_quantize_command_on_vilau_then_ask_and_imagine(tiny_vilau_folder, tmp_path):
    out = tmp_path / "vq.safetensors"
    result = runner.invoke(app, ["quantize", "--model", str(tiny_vilau_folder), "--rank", "8", "--group-size", "32",
                                 "--calib-prompts", "4", "--batch-size", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_quantization_config(out)
    assert meta["model_class"] == "VilaU" and "llm.model.layers.1.mlp.down_proj" in meta["layers"]
    from genfoundry.shapes import render

    render("a red circle", size=32).save(tmp_path / "c.png")
    result = runner.invoke(app, ["ask", str(tmp_path / "c.png"), "what color is the circle?", "--model",
                                 str(tiny_vilau_folder), "--quantized", str(out), "--device", "cpu",
                                 "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["imagine", "a red circle", "-o", str(tmp_path / "i.png"), "--model",
                                 str(tiny_vilau_folder), "--quantized", str(out), "--candidates", "1", "--seed", "0",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output and (tmp_path / "i.png").exists()
    bad = runner.invoke(app, ["imagine", "a red circle", "-o", str(tmp_path / "j.png"), "--model", str(tiny_vilau_folder),
                              "--quantized", str(tmp_path / "c.png"), "--device", "cpu"])
    assert bad.exit_code == 2 and "cannot apply quantized file" in bad.output


def test_quantized_eval_table_puts_both_models_side_by_side():
    from genfoundry.vilau.evaluate import results_markdown

    results = {"vqa": {"accuracy": 0.9, "questions": 10, "per_type": {"color": 0.9}},
               "generation": {"3.0": {"score": 0.5, "prompts": 10, "per_category": {"counting": 0.5}}},
               "quantized": {"file": "q.safetensors", "method": "svdquant", "weight": "int4", "rank": 32,
                             "vqa": {"accuracy": 0.88, "questions": 10, "per_type": {"color": 0.88}},
                             "generation": {"3.0": {"score": 0.45, "prompts": 10, "per_category": {}}}}}
    text = results_markdown(results)
    assert "| VQA accuracy (10 questions) | 0.900 | 0.880 | -0.020 |" in text
    assert "| generation score cfg 3.0 (10 prompts) | 0.500 | 0.450 | -0.050 |" in text


def test_load_quantized_cached_reuses_only_a_matching_file(tiny_sana_pipeline, tmp_path):
    file = tmp_path / "cache" / "q.safetensors"
    calibration = models.Calibration(prompts=1, steps=2, batch_size=1, size=32)
    config = QuantConfig(method="rtn", progress=False, indivisible="skip")
    pipe, reused = models.load_quantized_cached(tiny_sana_pipeline, file, config, calibration)
    assert not reused and file.is_file() and isinstance(pipe.transformer.transformer_blocks[0].attn1.to_q, SVDQLinear)
    _, reused = models.load_quantized_cached(tiny_sana_pipeline, file, config, calibration)
    assert reused
    _, reused = models.load_quantized_cached(tiny_sana_pipeline, file, QuantConfig(method="w4a16", progress=False,
                                                                                   indivisible="skip"), calibration)
    assert not reused and read_quantization_config(file)["method"] == "w4a16"
