"""SanaPipeline takes diffusers' argument names: num_inference_steps, generator, output_type, return_dict,
torch_dtype; outputs compared with diffusers' own SanaPipeline on the same tiny folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")

from genfoundry.errors import InputError  # noqa: E402
from genfoundry.hub import load_file  # noqa: E402
from genfoundry.sana import SanaPipeline, SanaPipelineOutput  # noqa: E402

PROMPT = ["a red circle", "two blue squares"]
STEPS = 3


@pytest.fixture(scope="module")
def pipes(tiny_sana_pipeline):
    ref = diffusers.SanaPipeline.from_pretrained(tiny_sana_pipeline)
    ref.set_progress_bar_config(disable=True)
    return SanaPipeline.from_pretrained(tiny_sana_pipeline), ref


def _diffusers(ref, output_type, seed=3):
    return ref(PROMPT, negative_prompt="", height=32, width=32, num_inference_steps=STEPS, guidance_scale=4.5,
               generator=torch.Generator().manual_seed(seed), output_type=output_type,
               use_resolution_binning=False, clean_caption=False).images


def _ours(pipe, output_type, seed=3, **kwargs):
    return pipe(PROMPT, height=32, width=32, num_inference_steps=STEPS, guidance_scale=4.5,
                generator=torch.Generator().manual_seed(seed), output_type=output_type, progress=False,
                warn_unknown_words=False, **kwargs)


@pytest.mark.parametrize("output_type", ["np", "pt", "latent"])
def test_output_types_match_diffusers(pipes, output_type):
    ours, ref = pipes
    got, expected = _ours(ours, output_type), _diffusers(ref, output_type)
    assert type(got) is type(expected) and tuple(got.shape) == tuple(expected.shape)
    if output_type == "np":
        assert got.shape == (2, 32, 32, 3) and got.dtype == np.float32 and 0.0 <= got.min() and got.max() <= 1.0
        assert np.abs(got - expected).max() <= 1e-4
    else:
        assert got.dtype == torch.float32
        assert (got - expected.float()).abs().max().item() <= 1e-4
    if output_type == "pt":
        assert got.shape == (2, 3, 32, 32) and 0.0 <= got.min().item() and got.max().item() <= 1.0
    if output_type == "latent":
        assert got.shape == (2, 4, 8, 8)


def test_return_dict_generators_and_old_names(pipes):
    ours, _ = pipes
    output = _ours(ours, "pil", return_dict=True)
    assert isinstance(output, SanaPipelineOutput) and all(isinstance(im, Image.Image) for im in output.images)
    (images,) = _ours(ours, "pil", return_dict=False)
    legacy = ours(PROMPT, height=32, width=32, steps=STEPS, guidance_scale=4.5, seed=3, progress=False,
                  warn_unknown_words=False)
    assert isinstance(legacy, list)  # today's call keeps returning the list
    for a, b, c in zip(output.images, images, legacy):  # one generator seeded 3 == seed=3
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))
    per_image = ours(PROMPT, height=32, width=32, num_inference_steps=STEPS, output_type="latent", progress=False,
                     generator=[torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)],
                     warn_unknown_words=False)
    seeds = ours(PROMPT, height=32, width=32, steps=STEPS, output_type="latent", seed=[5, 6], progress=False,
                 warn_unknown_words=False)
    assert torch.equal(per_image, seeds)


def test_bad_diffusers_arguments_are_clear_errors(pipes):
    ours, _ = pipes
    with pytest.raises(InputError, match="output_type must be one of"):
        ours("a red circle", height=32, width=32, steps=1, output_type="jpg")
    with pytest.raises(InputError, match="disagree"):
        ours("a red circle", height=32, width=32, steps=2, num_inference_steps=3)
    with pytest.raises(InputError, match="both seed"):
        ours("a red circle", height=32, width=32, steps=1, seed=4, generator=torch.Generator())
    with pytest.raises(InputError, match="torch.Generator"):
        ours("a red circle", height=32, width=32, steps=1, generator=7)


def test_torch_dtype_alias_and_save_pretrained_dtype(pipes, tiny_sana_pipeline, tmp_path):
    pipe = SanaPipeline.from_pretrained(tiny_sana_pipeline, torch_dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16
    with pytest.raises(InputError, match="disagree"):
        SanaPipeline.from_pretrained(tiny_sana_pipeline, dtype=torch.float32, torch_dtype=torch.bfloat16)
    ours, _ = pipes
    ours.save_pretrained(tmp_path / "half", dtype=torch.float16)
    tensors, _ = load_file(tmp_path / "half" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    tensors, _ = load_file(tmp_path / "half" / "text_encoder" / "model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    reloaded = SanaPipeline.from_pretrained(tmp_path / "half")  # fp16 on disk, fp32 compute on the CPU
    a = reloaded(PROMPT, height=32, width=32, steps=STEPS, seed=3, output_type="latent", progress=False,
                 warn_unknown_words=False)
    b = _ours(ours, "latent")
    assert (a - b).abs().max().item() < 0.05  # only the fp16 rounding of the weights differs
    by_diffusers = diffusers.SanaPipeline.from_pretrained(tmp_path / "half", dtype=torch.float32)
    assert by_diffusers.transformer.dtype == torch.float32
