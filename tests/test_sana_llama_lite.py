"""The native Llama text encoder against transformers' LlamaModel (the independent reference)."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

from genfoundry import hub
from genfoundry.sana.llama_lite import LlamaLite, unsupported_reason
from genfoundry.sana.text_encoder import TextEncoder
from genfoundry.shapes.tokenizer import build_tokenizer


def _config(**kw) -> LlamaConfig:
    base = dict(vocab_size=50, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, rms_norm_eps=1e-6)
    base.update(kw)
    return LlamaConfig(**base)


@pytest.mark.parametrize("kw", [{}, {"num_key_value_heads": 2}, {"head_dim": 16}, {"rope_theta": 500.0}])
def test_matches_transformers_with_right_padding(kw) -> None:
    torch.manual_seed(0)
    config = _config(**kw)
    ref = LlamaModel(config).eval()
    lite = LlamaLite(json.loads(config.to_json_string()))
    lite.load_state_dict(ref.state_dict())
    ids = torch.randint(1, 50, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = lite(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def _folder(tmp_path, model_cls=LlamaModel, **kw):
    torch.manual_seed(1)
    tok = build_tokenizer()
    model = model_cls(_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **kw)).eval()
    model.save_pretrained(tmp_path / "te")
    tok.save_pretrained(tmp_path / "te")
    return tmp_path / "te"


@pytest.mark.parametrize("model_cls", [LlamaModel, LlamaForCausalLM])
def test_text_encoder_native_equals_transformers(tmp_path, model_cls) -> None:
    folder = _folder(tmp_path, model_cls)
    native = TextEncoder.from_pretrained(folder, max_length=12, complex_human_instruction=None)
    reference = TextEncoder.from_pretrained(folder, native=False, max_length=12, complex_human_instruction=None)
    assert isinstance(native.model, LlamaLite) and not isinstance(reference.model, LlamaLite)
    prompts = ["a red circle to the left of a blue square", "two green triangles"]
    (a, mask_a), (b, mask_b) = native.encode(prompts), reference.encode(prompts)
    assert torch.equal(mask_a, mask_b)
    # hidden states of the prompt positions (the DiT masks the rest; transformers' output there is arbitrary)
    valid = mask_a.bool()
    torch.testing.assert_close(a[valid], b[valid], atol=2e-5, rtol=1e-4)
    assert native.unknown_words("a red hexagon") == ["hexagon"]


def test_unsupported_configs_fall_back_or_fail_clearly(tmp_path) -> None:
    folder = _folder(tmp_path, rope_scaling={"rope_type": "linear", "factor": 2.0})
    raw = json.loads((folder / "config.json").read_text())
    assert "linear" in unsupported_reason(raw)
    assert not isinstance(TextEncoder.from_pretrained(folder).model, LlamaLite)
    with pytest.raises(hub.CheckpointError, match="native Llama.*linear"):
        TextEncoder.from_pretrained(folder, native=True)
    with pytest.raises(ValueError, match="model_type"):
        LlamaLite({"model_type": "gemma2"})


def test_native_folder_saves_as_llama_model(tmp_path) -> None:
    from genfoundry.sana.pipeline import _save_text_model

    folder = _folder(tmp_path)
    native = TextEncoder.from_pretrained(folder)
    _save_text_model(native.model, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["architectures"] == ["LlamaModel"]
    reloaded = LlamaModel.from_pretrained(tmp_path / "again")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).last_hidden_state,
                                   native.model(input_ids=ids).last_hidden_state, atol=2e-5, rtol=1e-4)
