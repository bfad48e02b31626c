"""`genfoundry quantize` on a tiny SANA pipeline folder, then `genfoundry generate --quantized` with the file."""

import pytest
import torch
import typer
from typer.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from genfoundry.svdquant import SVDQLinear, read_quantization_config  # noqa: E402
from genfoundry.svdquant.cli import calibration_prompts, register  # noqa: E402


def _tiny_pipeline_folder(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    words = "a red blue green yellow purple cyan circle square triangle and two three four".split()
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    text = Gemma2Model(Gemma2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=8, pad_token_id=0,
                                    bos_token_id=1, eos_token_id=2)).eval()
    transformer = diffusers.SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=32, num_layers=1,
        num_cross_attention_heads=2, cross_attention_head_dim=32, cross_attention_dim=64, caption_channels=16,
        sample_size=4, patch_size=1, mlp_ratio=2.0).eval()
    vae = diffusers.AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=4,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8, 16), decoder_block_out_channels=(8, 8, 16),
        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), (5,)), decoder_qkv_multiscales=((), (), (5,)), scaling_factor=0.5).eval()
    scheduler = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
                                                      prediction_type="flow_prediction")
    diffusers.SanaPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=transformer,
                           scheduler=scheduler).save_pretrained(folder)


def test_quantize_command_then_generate_quantized(tmp_path):
    from genfoundry.sana import SanaPipeline
    from genfoundry.sana.cli import register as register_generate
    from genfoundry.svdquant import load_quantized

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _tiny_pipeline_folder(tmp_path / "pipe")
        app = typer.Typer()

        @app.callback()
        def _root() -> None:
            """test root"""

        register(app)
        register_generate(app)
        out = tmp_path / "q.safetensors"
        result = CliRunner().invoke(app, ["quantize", "--model", str(tmp_path / "pipe"), "--rank", "8",
                                          "--calib-prompts", "2", "--calib-steps", "2", "--size", "16",
                                          "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert "quantized layers" in result.output and out.exists()
        meta = read_quantization_config(out)
        assert meta["method"] == "svdquant" and meta["rank"] == 8
        assert "transformer_blocks.0.attn1.to_q" in meta["layers"]
        pipe = SanaPipeline.from_pretrained(tmp_path / "pipe")
        load_quantized(pipe.transformer, out)
        assert isinstance(pipe.transformer.transformer_blocks[0].attn1.to_q, SVDQLinear)
        images = pipe(["a red circle"], height=16, width=16, steps=2, seed=0, progress=False, warn_unknown_words=False)
        assert images[0].size == (16, 16)
        result = CliRunner().invoke(app, ["generate", "a red circle", "--model", str(tmp_path / "pipe"),
                                          "--quantized", str(out), "--steps", "2", "-o", str(tmp_path / "g.png")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "g.png").exists()
        result = CliRunner().invoke(app, ["generate", "a red circle", "--model", str(tmp_path / "pipe"),
                                          "--quantized", str(tmp_path / "pipe" / "vae" / "config.json"),
                                          "--steps", "2", "-o", str(tmp_path / "h.png")])
        assert result.exit_code == 2 and "cannot apply quantized file" in result.output
        bad = CliRunner().invoke(app, ["quantize", "--model", str(tmp_path / "pipe"), "--method", "gptq",
                                       "-o", str(tmp_path / "x.safetensors")])
        assert bad.exit_code != 0 and "unknown quantization method" in bad.output
    finally:
        torch.set_num_threads(old)


def test_calibration_prompts_are_seeded_shapeworld_captions():
    a, b = calibration_prompts(5, seed=1), calibration_prompts(5, seed=1)
    assert a == b and len(a) == 5 and all(isinstance(p, str) and p for p in a)
