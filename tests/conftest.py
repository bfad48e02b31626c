import pytest
import torch

# The tests use tiny models: on a small shared machine one intra-op thread is much faster than several
# (measured up to ~100x on 2 oversubscribed cores), and results do not depend on it.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sana_pipeline(tmp_path_factory):
    """Folder of a tiny random SANA pipeline in the diffusers layout (built once per test session)."""
    folder = tmp_path_factory.mktemp("tiny-sana") / "pipe"
    _tiny_sana_pipeline_folder(folder)
    return folder


def _tiny_sana_pipeline_folder(folder):
    """A diffusers SanaPipeline with tiny random parts and a word-level tokenizer, saved to `folder`."""
    import diffusers

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


# A tour on tiny settings: the tiny SANA pipeline, the embedded VILA-U, a 2x2 accelerator (a few minutes
# on 2 CPU cores), run once per session for the tour and report tests.
QUICK_TOUR_ARGS = ["--count", "5", "--steps", "2", "--calib-prompts", "1", "--calib-steps", "2", "--baselines", "rtn",
                   "--vilau-candidates", "1", "--lego-array", "2x2", "--device", "cpu"]


@pytest.fixture(scope="session")
def quick_tour(tmp_path_factory, tiny_sana_pipeline):
    """(output folder, CLI result) of `genfoundry tour` on tiny settings."""
    from typer.testing import CliRunner

    from genfoundry.cli import app

    out = tmp_path_factory.mktemp("tour") / "out"
    result = CliRunner().invoke(app, ["tour", "-o", str(out), "--sana-model", str(tiny_sana_pipeline), *QUICK_TOUR_ARGS])
    return out, result
