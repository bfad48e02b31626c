"""quantize(): methods, equivalences, shared smoothing, diffusers/transformers models, bad input."""

import copy

import pytest
import torch
from torch import nn

from genfoundry.svdquant import QuantConfig, SVDQLinear, W4A16Linear, W8A8Linear, quantize
from genfoundry.svdquant.linear import PointwiseConv
from genfoundry.svdquant import quantizers as Q
from genfoundry.svdquant.lowrank import rank_r_svd, refine_lowrank
from genfoundry.svdquant.smooth import SMOOTH_GRID


def _outlier_inputs(n_batches=3, k=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    gain = torch.ones(k)
    gain[torch.randperm(k, generator=g)[:4]] = 25.0
    return [torch.randn(2, 16, k, generator=g) * gain for _ in range(n_batches)]


class Attn(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / 8, dim=-1)
        return self.o(a @ self.v(x))


def _rel_err(model, ref_model, xs):
    with torch.no_grad():
        num = sum(float((model(x) - ref_model(x)).pow(2).sum()) for x in xs)
        den = sum(float(ref_model(x).pow(2).sum()) for x in xs)
    return num / den


def test_grid_has_39_pairs():
    assert len(SMOOTH_GRID) == 39 and SMOOTH_GRID[0] == (0.0, 0.0) and (0.5, 0.5) in SMOOTH_GRID


def test_rank0_without_smoothing_equals_rtn_w4a4():
    torch.manual_seed(0)
    lin = nn.Linear(128, 32)
    model = nn.Sequential(copy.deepcopy(lin))
    quantize(model, None, QuantConfig(method="rtn", skip=[], progress=False))
    layer = model[0]
    assert isinstance(layer, SVDQLinear) and layer.rank == 0 and torch.equal(layer.smooth, torch.ones(128))
    x = torch.randn(5, 128) * 4
    rtn = Q.fake_quant_act(x, "int4", 64) @ Q.fake_quant_weight(lin.weight.detach(), "int4", 64).t() + lin.bias
    torch.testing.assert_close(layer(x), rtn.detach(), rtol=1e-6, atol=1e-5)


def test_methods_error_order_and_module_types():
    torch.manual_seed(0)
    ref = Attn()
    xs = _outlier_inputs()
    errs, types = {}, {}
    for method in ["rtn", "smoothquant", "svdquant", "w4a16", "w8a8"]:
        m = copy.deepcopy(ref)
        cfg = QuantConfig(method=method, skip=[], progress=False, rank=16 if method == "svdquant" else None,
                          calib_tokens=64)
        quantize(m, lambda mod: [mod(x) for x in xs], cfg)
        errs[method], types[method] = _rel_err(m, ref, xs), type(m.q)
    assert errs["rtn"] > errs["smoothquant"] > errs["svdquant"]
    assert errs["w8a8"] < errs["svdquant"]
    assert types["svdquant"] is SVDQLinear and types["w4a16"] is W4A16Linear and types["w8a8"] is W8A8Linear


def test_qkv_share_one_smoothing_factor():
    torch.manual_seed(1)
    m = Attn()
    xs = _outlier_inputs(2)
    quantize(m, lambda mod: [mod(x) for x in xs], QuantConfig(rank=8, skip=[], progress=False, calib_tokens=32))
    assert torch.equal(m.q.smooth, m.k.smooth) and torch.equal(m.k.smooth, m.v.smooth)
    assert not torch.equal(m.q.smooth, m.o.smooth)


def test_low_rank_refinement_never_worse_than_plain_svd():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g)
    w[:, :3] *= 20
    qw = lambda r: Q.fake_quant_weight(r, "int4", 64)  # noqa: E731
    err = lambda up, down, rq: float((rq + (up @ down.t()).float() - w).pow(2).sum())  # noqa: E731
    res = refine_lowrank(w, 8, qw, err, max_iters=20)
    up, down = rank_r_svd(w, 8)
    plain = err(up, down, qw((w.double() - up @ down.t()).float()))
    assert res.error <= plain and res.up.shape == (64, 8) and res.down.shape == (64, 8)


def test_randomized_svd_matches_exact_on_low_rank_plus_noise():
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(600, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 400, generator=g,
                                                                              dtype=torch.float64))
    w += 1e-3 * torch.randn(600, 400, generator=g, dtype=torch.float64)
    up, down = rank_r_svd(w, 12, generator=torch.Generator().manual_seed(1))
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    exact = (u[:, :12] * s[:12]) @ vh[:12]
    assert float((up @ down.t() - exact).norm() / exact.norm()) < 1e-6


def test_nvfp4_and_unsigned_paths():
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
    xs = _outlier_inputs(2)
    ref = copy.deepcopy(mlp)
    m = copy.deepcopy(mlp)
    quantize(m, lambda mod: [mod(x) for x in xs],
             QuantConfig(rank=8, skip=[], unsigned=["2"], progress=False, calib_tokens=32))
    assert m[2].act_unsigned and not m[0].act_unsigned
    assert _rel_err(m, ref, xs) < 0.05
    m4 = copy.deepcopy(mlp)
    quantize(m4, lambda mod: [mod(x) for x in xs], QuantConfig(weight="nvfp4", rank=8, skip=[], progress=False,
                                                                 calib_tokens=32))
    assert m4[0].weight_format == "nvfp4" and m4[0].wscales.dtype == torch.float8_e4m3fn
    assert _rel_err(m4, ref, xs) < 0.05


def test_tiny_diffusers_sana_model_uses_sana_defaults():
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(0)
    model = SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=32,
                                   num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=32,
                                   cross_attention_dim=64, caption_channels=32, sample_size=8, patch_size=1,
                                   mlp_ratio=2.0).eval()
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100, 700]), torch.randn(2, 5, 32, generator=g))
               for _ in range(2)]

    def calibrate(m):
        for lat, t, enc in batches:
            m(lat, encoder_hidden_states=enc, timestep=t)

    quantize(model, calibrate, QuantConfig(rank=8, progress=False, calib_tokens=64))
    blk = model.transformer_blocks[0]
    assert isinstance(blk.attn1.to_q, SVDQLinear) and isinstance(blk.attn2.to_q, SVDQLinear)
    assert type(blk.attn2.to_k) is nn.Linear and type(model.proj_out) is nn.Linear  # SANA skip defaults
    assert type(model.caption_projection.linear_1) is nn.Linear
    assert isinstance(model.time_embed.linear, W4A16Linear)
    assert isinstance(blk.ff.conv_inverted, PointwiseConv) and isinstance(blk.ff.conv_point, PointwiseConv)
    with torch.no_grad():
        out = model(*batches[0][:1], encoder_hidden_states=batches[0][2], timestep=batches[0][1]).sample
        exp = ref(*batches[0][:1], encoder_hidden_states=batches[0][2], timestep=batches[0][1]).sample
    assert float((out - exp).norm() / exp.norm()) < 0.1


def test_tiny_transformers_llama_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    ref = copy.deepcopy(model)
    ids = [torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    quantize(model, lambda m: [m(input_ids=i) for i in ids], QuantConfig(rank=8, progress=False, calib_tokens=32))
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, SVDQLinear) and isinstance(layer.mlp.down_proj, SVDQLinear)
    assert type(model.lm_head) is nn.Linear
    assert torch.equal(layer.self_attn.q_proj.smooth, layer.self_attn.k_proj.smooth)  # shared input
    with torch.no_grad():
        a, b = model(input_ids=ids[0]).logits, ref(input_ids=ids[0]).logits
    assert float((a - b).norm() / b.norm()) < 0.2


def test_bad_inputs_raise_clear_errors():
    xs = _outlier_inputs(1)
    with pytest.raises(ValueError, match="not a multiple of group size 64.*in_features=96"):
        quantize(nn.Sequential(nn.Linear(96, 8)), None, QuantConfig(method="rtn", skip=[], progress=False))
    kept = quantize(nn.Sequential(nn.Linear(96, 64), nn.Linear(64, 8)), None,
                    QuantConfig(method="rtn", skip=[], progress=False, indivisible="skip"))
    assert type(kept[0]) is nn.Linear and isinstance(kept[1], SVDQLinear)
    with pytest.raises(ValueError, match=r"rank 80 exceeds min\(in, out\) = 64"):
        quantize(nn.Sequential(nn.Linear(64, 64)), lambda m: m(xs[0]), QuantConfig(rank=80, skip=[]))
    with pytest.raises(ValueError, match="unknown quantization method"):
        QuantConfig(method="gptq").resolved()
    with pytest.raises(ValueError, match="takes weight in"):
        QuantConfig(method="w4a16", weight="nvfp4").resolved()
    with pytest.raises(ValueError, match="needs a `calibrate"):
        quantize(nn.Sequential(nn.Linear(64, 64)), None, QuantConfig(skip=[], progress=False))
    bad = xs[0].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer '0'.*NaN or Inf"):
        quantize(nn.Sequential(nn.Linear(64, 64)), lambda m: m(bad), QuantConfig(rank=4, skip=[], progress=False))
    with pytest.raises(ValueError, match="no nn.Linear .*layer left"):
        quantize(nn.Sequential(nn.Linear(64, 64)), None, QuantConfig(method="rtn", skip=["*"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("weight", ["int4", "nvfp4"])
def test_quantized_model_on_gpu_auto_backend_matches_reference(weight):
    import genfoundry.nunchaku as nk

    torch.manual_seed(0)
    m = Attn().cuda().half()
    xs = [x.cuda().half() for x in _outlier_inputs(2)]
    quantize(m, lambda mod: [mod(x) for x in xs], QuantConfig(weight=weight, rank=16, skip=[], progress=False))
    with torch.no_grad():
        auto = m(xs[0])
        with nk.use_backend("reference"):
            ref = m(xs[0])
    assert auto.dtype == torch.float16
    assert float((auto.float() - ref.float()).norm() / ref.float().norm()) < 2e-2


def test_shared_low_rank_down_projection_for_qkv():
    torch.manual_seed(3)
    m = Attn()
    ref = copy.deepcopy(m)
    xs = _outlier_inputs(2)
    quantize(m, lambda mod: [mod(x) for x in xs],
             QuantConfig(rank=8, skip=[], progress=False, calib_tokens=32, share_lowrank=True))
    assert torch.equal(m.q.lora_down, m.k.lora_down) and torch.equal(m.k.lora_down, m.v.lora_down)
    assert not torch.equal(m.q.lora_up, m.k.lora_up)
    assert _rel_err(m, ref, xs) < 0.05


def test_int8_low_rank_branch_against_an_integer_reference(tmp_path):
    """lowrank_bits=8: the branch equals integer GEMMs on int8 codes (int64 accumulate, then scales),
    the 4-bit part is unchanged, the error stays close to the 16-bit branch's, and it survives a save/load."""
    from genfoundry.svdquant import load_quantized, save_quantized

    torch.manual_seed(0)
    ref = Attn()
    xs = _outlier_inputs()
    models = {}
    for bits in (16, 8):
        m = copy.deepcopy(ref)
        quantize(m, lambda mod: [mod(x) for x in xs], QuantConfig(rank=16, lowrank_bits=bits, skip=[], progress=False,
                                                                   calib_tokens=64))
        models[bits] = m
    wide, narrow = models[16].q, models[8].q
    assert narrow.lowrank_bits == 8 and narrow.spec()["lowrank_bits"] == 8 and "int8 low-rank" in repr(narrow)
    assert torch.equal(wide.lora_down, narrow.lora_down) and torch.equal(wide.qweight, narrow.qweight)

    def codes(t, dim):  # symmetric int8 along `dim` -> (int64 codes, scales broadcast along dim)
        s = t.abs().amax(dim=dim, keepdim=True) / 127.0
        return torch.round(t / s).clamp(-128, 127).to(torch.int64), s

    x = xs[0].reshape(-1, 64)
    xq, xs_ = codes(x, 1)
    dq, ds = codes(narrow.lora_down.float(), 0)
    act = (xq @ dq).double() * xs_.double() * ds.double()
    aq, as_ = codes(act.float(), 1)
    uq, us = codes(narrow.lora_up.float(), 1)
    branch = (aq @ uq.t()).double() * as_.double() * us.t().double()
    with torch.no_grad():
        four_bit = wide(x) - x @ wide.lora_down @ wide.lora_up.t()
        torch.testing.assert_close(narrow(x), (four_bit.double() + branch).float(), rtol=1e-4, atol=1e-3)
        e16, e8 = _rel_err(models[16], ref, xs), _rel_err(models[8], ref, xs)
    assert e16 <= e8 < 1.5 * e16
    path = save_quantized(models[8], tmp_path / "r8.safetensors")
    fresh = Attn()
    load_quantized(fresh, path)
    assert fresh.q.lowrank_bits == 8
    with torch.no_grad():
        assert torch.equal(fresh(xs[0]), models[8](xs[0]))
    with pytest.raises(ValueError, match="lowrank_bits must be 16 or 8"):
        QuantConfig(lowrank_bits=4).resolved()
    with pytest.raises(ValueError, match="needs a low-rank branch"):
        QuantConfig(method="rtn", lowrank_bits=8).resolved()
