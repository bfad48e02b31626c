"""quantize() on genfoundry's own SANA transformer: Linear and 1x1-conv layers, save/load, LoRA."""

import copy

import pytest
import torch
from torch import nn

from genfoundry.svdquant import QuantConfig, SVDQLinear, add_lora, load_quantized, quantize, save_quantized
from genfoundry.svdquant.linear import PointwiseConv, W4A16Linear

sana = pytest.importorskip("genfoundry.sana")


def _tiny():
    cfg = sana.SanaTransformerConfig(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=32,
                                     num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=32,
                                     cross_attention_dim=64, caption_channels=32, mlp_ratio=2.0, sample_size=8)
    return sana.SanaTransformer(cfg).eval()


def test_quantize_sana_transformer_save_load_and_lora(tmp_path):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = _tiny()
        ref = copy.deepcopy(model)
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(2, 4, 8, 8, generator=g), torch.tensor([50.0, 800.0]),
                    torch.randn(2, 6, 32, generator=g)) for _ in range(2)]

        def calibrate(m):
            for lat, t, text in batches:
                m(lat, t, text)

        quantize(model, calibrate, QuantConfig(rank=8, progress=False, calib_tokens=64))
        blk = model.transformer_blocks[0]
        # the FFN's 1x1 convs are quantized when their forward runs, else kept (never a broken model)
        assert isinstance(blk.ff.conv_inverted, (PointwiseConv, nn.Conv2d))
        assert type(blk.ff.conv_depth) is nn.Conv2d  # depthwise 3x3 stays
        assert isinstance(blk.attn1.to_q, SVDQLinear) and type(blk.attn2.to_k) is nn.Linear
        assert isinstance(model.time_embed.linear, W4A16Linear) and type(model.patch_embed.proj) is nn.Conv2d
        lat, t, text = batches[0]
        with torch.no_grad():
            out, exp = model(lat, t, text), ref(lat, t, text)
            assert float((out - exp).norm() / exp.norm()) < 0.1
            path = save_quantized(model, tmp_path / "sana.safetensors")
            torch.manual_seed(1)
            fresh = _tiny()
            load_quantized(fresh, path)
            assert torch.equal(fresh(lat, t, text), out)
            lora = {"lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(4, 64) * .1,
                    "lora_unet_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(64, 4) * .1}
            add_lora(fresh, lora, 1.0)
            assert fresh.transformer_blocks[0].attn1.to_q.lora_down.shape[1] == 16
            assert not torch.allclose(fresh(lat, t, text), out)
    finally:
        torch.set_num_threads(old)


class ConvFFN(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Conv2d(64, 128, 1)
        self.down = nn.Conv2d(128, 64, 1, bias=False)
        self.skipped = nn.Conv2d(64, 64, 1)  # never called through its forward

    def forward(self, x):
        y = self.down(torch.relu(self.up(x)))
        return y + torch.nn.functional.conv2d(x, self.skipped.weight) * 0.1


def test_pointwise_convs_save_load_and_conv_lora(tmp_path):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = ConvFFN()
        ref = copy.deepcopy(model)
        xs = [torch.randn(2, 64, 4, 4) for _ in range(2)]
        quantize(model, lambda m: [m(x) for x in xs], QuantConfig(rank=8, skip=[], progress=False, calib_tokens=32))
        assert isinstance(model.up, PointwiseConv) and isinstance(model.down.linear, SVDQLinear)
        assert type(model.skipped) is nn.Conv2d
        with torch.no_grad():
            out = model(xs[0])
            assert float((out - ref(xs[0])).norm() / ref(xs[0]).norm()) < 0.25  # W4A4 on random weights
            path = save_quantized(model, tmp_path / "conv.safetensors")
            torch.manual_seed(3)
            fresh = ConvFFN()
            load_quantized(fresh, path)
            assert torch.equal(fresh(xs[0]), out)
            down = torch.randn(4, 64, 1, 1) * 0.1
            up = torch.randn(128, 4, 1, 1) * 0.1
            add_lora(fresh, {"up.lora_down.weight": down, "up.lora_up.weight": up}, 1.0)
            h = fresh.up(xs[0])
            expect = out.new_tensor(0)  # recompute the conv LoRA by hand on the first layer
            base = model.up(xs[0])
            lora = torch.einsum("bchw,rc->brhw", xs[0], down[:, :, 0, 0])
            expect = base + torch.einsum("brhw,nr->bnhw", lora, up[:, :, 0, 0])
            torch.testing.assert_close(h, expect, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(old)
