"""LoRA on a quantized model, and save_quantized -> load_quantized."""

import copy

import pytest
import torch
from torch import nn

from genfoundry import hub
from genfoundry.svdquant import (
    QuantConfig,
    SVDQLinear,
    add_lora,
    load_quantized,
    lora_names,
    quantize,
    read_quantization_config,
    remove_lora,
    save_quantized,
    set_lora_strength,
)


class Block(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.attn = nn.ModuleDict({"to_q": nn.Linear(d, d), "to_out": nn.Linear(d, d, bias=False)})
        self.ff = nn.Sequential(nn.Linear(d, 128), nn.GELU(), nn.Linear(128, d))
        self.proj_out = nn.Linear(d, 8)

    def forward(self, x):
        h = x + self.attn["to_out"](torch.relu(self.attn["to_q"](x)))
        return self.proj_out(h + self.ff(h))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 64, generator=g) * (1 + 10 * (torch.arange(64) % 17 == 0)) for _ in range(2)]


@pytest.fixture(scope="module")
def quantized():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the function-scoped one above
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = Block()
    model = copy.deepcopy(fresh)
    xs = _inputs()
    quantize(model, lambda m: [m(x) for x in xs],
             QuantConfig(rank=8, skip=["proj_out"], unsigned=["ff.2"], progress=False, calib_tokens=32))
    torch.set_num_threads(old)
    return fresh, model


def _lora_peft(d_in, d_out, r, seed, alpha=None, prefix="transformer.attn.to_q"):
    g = torch.Generator().manual_seed(seed)
    sd = {f"{prefix}.lora_A.weight": torch.randn(r, d_in, generator=g) * 0.1,
          f"{prefix}.lora_B.weight": torch.randn(d_out, r, generator=g) * 0.1}
    if alpha is not None:
        sd[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    return sd


def test_lora_on_quantized_equals_quantized_plus_separate_lora(quantized):
    _, base = quantized
    model = copy.deepcopy(base)
    sd = _lora_peft(64, 64, 4, seed=1, alpha=8)
    x = _inputs(5)[0]
    q = model.attn["to_q"]
    assert isinstance(q, SVDQLinear)
    with torch.no_grad():
        expect = q(x) + 1.5 * (8 / 4) * (x @ sd["transformer.attn.to_q.lora_A.weight"].t()) @ \
            sd["transformer.attn.to_q.lora_B.weight"].t()
        qweight_before = q.qweight.clone()
        name = add_lora(model, sd, strength=1.5)
        torch.testing.assert_close(q(x), expect, rtol=1e-5, atol=1e-5)
    assert torch.equal(q.qweight, qweight_before)  # no re-quantization
    assert q.lora_down.shape[1] == 16 and q.lora_down.shape[1] >= q.rank + 4  # 8 + 4 padded to 16
    assert lora_names(model) == [name]


def test_strength_remove_and_several_loras_with_kohya_keys(quantized, tmp_path):
    _, base = quantized
    model = copy.deepcopy(base)
    x = _inputs(6)[0]
    with torch.no_grad():
        plain = model(x)
        peft = _lora_peft(64, 64, 4, seed=2)
        g = torch.Generator().manual_seed(3)
        kohya = {"lora_unet_ff_0.lora_down.weight": torch.randn(2, 64, generator=g) * 0.1,
                 "lora_unet_ff_0.lora_up.weight": torch.randn(128, 2, generator=g) * 0.1,
                 "lora_unet_ff_0.alpha": torch.tensor(2.0),
                 "lora_unet_proj_out.lora_down.weight": torch.randn(2, 64, generator=g) * 0.1,  # 16-bit layer
                 "lora_unet_proj_out.lora_up.weight": torch.randn(8, 2, generator=g) * 0.1}
        hub.save_file(kohya, tmp_path / "style.safetensors")
        a = add_lora(model, peft, 1.0)
        add_lora(model, tmp_path / "style.safetensors", 1.0, name="style")
        both = model(x)
        assert lora_names(model) == [a, "style"]
        set_lora_strength(model, 0.0, "style")
        only_a = model(x)
        remove_lora(model, "style")
        torch.testing.assert_close(model(x), only_a, rtol=1e-5, atol=1e-5)
        set_lora_strength(model, 0.0)
        torch.testing.assert_close(model(x), plain, rtol=1e-5, atol=1e-5)
        remove_lora(model)
        assert lora_names(model) == [] and model.attn["to_q"].lora_down.shape[1] == model.attn["to_q"].rank
        torch.testing.assert_close(model(x), plain, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(both, only_a) and not torch.allclose(only_a, plain)


def test_lora_errors_name_the_layer(quantized):
    _, base = quantized
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match=r"layer 'attn.to_q' does not fit.*64 -> 64.*A \[4, 32\]"):
        add_lora(model, _lora_peft(32, 64, 4, seed=0))
    with pytest.raises(ValueError, match="match no layer"):
        add_lora(model, _lora_peft(64, 64, 4, seed=0, prefix="blocks.9.nothing"))
    with pytest.raises(ValueError, match="no LoRA weights found"):
        add_lora(model, {"foo.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="no LoRA named 'x'"):
        remove_lora(model, "x")


def test_save_load_identical_outputs_without_calibration(quantized, tmp_path):
    fresh, model = quantized
    x = _inputs(7)[0]
    path = save_quantized(model, tmp_path / "q.safetensors")
    meta = read_quantization_config(path)
    assert meta["method"] == "svdquant" and meta["rank"] == 8 and meta["group_size"] == 64
    assert meta["layers"]["ff.2"]["act_unsigned"] is True and "proj_out" not in meta["layers"]
    with torch.random.fork_rng():
        torch.manual_seed(123)  # a freshly built model with different random weights
        target = Block()
    load_quantized(target, path)
    with torch.no_grad():
        assert torch.equal(target(x), model(x))
    # a model with a LoRA attached saves its base quantized weights only
    with_lora = copy.deepcopy(model)
    add_lora(with_lora, _lora_peft(64, 64, 4, seed=0))
    save_quantized(with_lora, tmp_path / "q2.safetensors")
    t1, _ = hub.load_file(tmp_path / "q.safetensors")
    t2, _ = hub.load_file(tmp_path / "q2.safetensors")
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)


def test_load_into_another_model_is_a_clear_error(quantized, tmp_path):
    _, model = quantized
    path = save_quantized(model, tmp_path / "q.safetensors")
    other = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(hub.CheckpointError, match="different model.*Block"):
        load_quantized(other, path)
    hub.save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(hub.CheckpointError, match="not a quantized checkpoint"):
        load_quantized(Block(), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="no quantized layer"):
        save_quantized(nn.Sequential(nn.Linear(4, 4)), tmp_path / "none.safetensors")


@pytest.mark.parametrize("method,weight", [("rtn", "nvfp4"), ("w4a16", "nf4"), ("w8a8", "int8")])
def test_save_load_other_formats(tmp_path, method, weight):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    xs = _inputs()
    quantize(model, (lambda m: [m(x) for x in xs]) if method == "w8a8" else None,
             QuantConfig(method=method, weight=weight, skip=[], progress=False))
    path = save_quantized(model, tmp_path / f"{method}.safetensors")
    fresh = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    load_quantized(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(xs[0]), model(xs[0]))
    assert read_quantization_config(path)["weight"] == weight
