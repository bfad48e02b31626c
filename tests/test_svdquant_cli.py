"""`genfoundry quantize` on a tiny SANA pipeline folder, then `genfoundry generate --quantized` with the file."""

import pytest
import torch
import typer
from typer.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from genfoundry.svdquant import SVDQLinear, read_quantization_config  # noqa: E402
from genfoundry.svdquant.cli import calibration_prompts, register  # noqa: E402


def test_quantize_command_then_generate_quantized(tmp_path, tiny_sana_pipeline):
    from genfoundry.sana import SanaPipeline
    from genfoundry.sana.cli import register as register_generate
    from genfoundry.svdquant import load_quantized

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        app = typer.Typer()

        @app.callback()
        def _root() -> None:
            """test root"""

        register(app)
        register_generate(app)
        out = tmp_path / "q.safetensors"
        result = CliRunner().invoke(app, ["quantize", "--model", str(tiny_sana_pipeline), "--rank", "8",
                                          "--lowrank-bits", "8", "--calib-prompts", "2", "--calib-steps", "2",
                                          "--size", "16", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert "quantized layers" in result.output and "low-rank branch int8" in result.output and out.exists()
        meta = read_quantization_config(out)
        assert meta["method"] == "svdquant" and meta["rank"] == 8 and meta["lowrank_bits"] == 8
        assert meta["layers"]["transformer_blocks.0.attn1.to_q"]["lowrank_bits"] == 8
        assert "transformer_blocks.0.attn1.to_q" in meta["layers"]
        pipe = SanaPipeline.from_pretrained(tiny_sana_pipeline)
        load_quantized(pipe.transformer, out)
        assert isinstance(pipe.transformer.transformer_blocks[0].attn1.to_q, SVDQLinear)
        images = pipe(["a red circle"], height=16, width=16, steps=2, seed=0, progress=False, warn_unknown_words=False)
        assert images[0].size == (16, 16)
        result = CliRunner().invoke(app, ["generate", "a red circle", "--model", str(tiny_sana_pipeline),
                                          "--quantized", str(out), "--steps", "2", "-o", str(tmp_path / "g.png")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "g.png").exists()
        result = CliRunner().invoke(app, ["generate", "a red circle", "--model", str(tiny_sana_pipeline),
                                          "--quantized", str(tiny_sana_pipeline / "vae" / "config.json"),
                                          "--steps", "2", "-o", str(tmp_path / "h.png")])
        assert result.exit_code == 2 and "cannot apply quantized file" in result.output
        bad = CliRunner().invoke(app, ["quantize", "--model", str(tiny_sana_pipeline), "--method", "gptq",
                                       "-o", str(tmp_path / "x.safetensors")])
        assert bad.exit_code != 0 and "unknown quantization method" in bad.output
        bad = CliRunner().invoke(app, ["quantize", "--model", str(tiny_sana_pipeline), "--lowrank-bits", "4",
                                       "-o", str(tmp_path / "x.safetensors")])
        assert bad.exit_code != 0 and "lowrank_bits must be 16 or 8" in bad.output
    finally:
        torch.set_num_threads(old)


def test_calibration_prompts_are_seeded_shapeworld_captions():
    a, b = calibration_prompts(5, seed=1), calibration_prompts(5, seed=1)
    assert a == b and len(a) == 5 and all(isinstance(p, str) and p for p in a)
