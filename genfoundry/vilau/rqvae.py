"""The authors' released vision tower ("rqvaesiglip"), with the module names of their checkpoints.

- `siglip_model`: a whole SigLIP (vision and text transformers, `logit_scale`, `logit_bias`). Images
  run through the vision embeddings and encoder layers 0 .. L-2 only; that output (one vector per
  patch, SigLIP's hidden size) is quantized as it is. The last layer, `post_layernorm`, the pooling
  head and the text side are carried in the checkpoint and unused at inference.
- `quantizer`: residual quantization over D depths (genfoundry.vilau.tower.ResidualQuantizer, with the
  padding row every released codebook has).
- `post_quant_conv` (1x1, code dim -> z_channels) and `decoder`, a VQGAN-style pixel decoder
  (`conv_in`, `mid.block_1/attn_1/block_2`, `up.{level}.block/attn/upsample`, `norm_out`, `conv_out`).

The SigLIP shape is not stored in the released folder: their config names a Hugging Face model
(`pretrained_model`), whose shapes `SIGLIP_CONFIGS` holds for the two VILA-U uses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry.errors import InputError
from genfoundry.vilau.tower import CodeTower, QuantizerOutput, ResidualQuantizer, TowerConfig

# Shapes of the SigLIP models the released towers start from (their public config.json files);
# everything else is the transformers default (gelu_pytorch_tanh, LayerNorm eps 1e-6, text vocab 32000,
# 64 text positions).
SIGLIP_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "google/siglip-large-patch16-256": {
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "image_size": 256, "patch_size": 16},
        "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16},
    },
    "google/siglip-so400m-patch14-384": {
        "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                   "num_attention_heads": 16, "image_size": 384, "patch_size": 14},
        "text": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                 "num_attention_heads": 16},
    },
}


def siglip_shapes(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vision, text) config kwargs of a released SigLIP in SIGLIP_CONFIGS, the text side's vocabulary
    and length (transformers' defaults, the released values) spelled out."""
    known = SIGLIP_CONFIGS[name]
    return dict(known["vision"]), {**known["text"], "vocab_size": 32000, "max_position_embeddings": 64}


def _transformer_of(model: nn.Module, name: str) -> nn.Module:
    """The vision/text transformer inside a transformers Siglip*Model: `model.<name>` where the release
    nests it (transformers 4.x), the model itself where it does not (5.x); either way its parameters are
    named `embeddings.*`, `encoder.*`, ... as in the authors' checkpoints."""
    return getattr(model, name, model)


class SiglipPair(nn.Module):
    """SigLIP's two towers and its logit scale and bias, named as in `SiglipModel`."""

    def __init__(self, vision: dict[str, Any], text: dict[str, Any]) -> None:
        super().__init__()
        from transformers import SiglipTextConfig, SiglipTextModel, SiglipVisionConfig, SiglipVisionModel

        text = dict(text)
        # SigLIP pools the last position, so these ids are unused; transformers' defaults lie outside
        # a small vocabulary and would only draw warnings.
        text.setdefault("bos_token_id", None)
        text.setdefault("eos_token_id", None)
        self.vision_model = _transformer_of(SiglipVisionModel(SiglipVisionConfig(**vision)), "vision_model")
        self.text_model = _transformer_of(SiglipTextModel(SiglipTextConfig(**text)), "text_model")
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))


# ----------------------------------------------------------------------------------------------
# The pixel decoder (VQGAN style)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map (1x1 q/k/v/out convolutions)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, 1, c, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(tokens(self.q(y)), tokens(self.k(y)), tokens(self.v(y)))
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class PixelDecoder(nn.Module):
    """z [B, z_channels, r, r] -> image [B, out_ch, r * 2^(levels-1), ...]; keyword arguments as the
    released `ddconfig` (extra keys such as `double_z` are ignored)."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: list[int], num_res_blocks: int,
                 attn_resolutions: list[int], z_channels: int, resolution: int, dropout: float = 0.0,
                 resamp_with_conv: bool = True, **_ignored: Any) -> None:
        super().__init__()
        levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        ups: list[nn.Module] = []
        for level in reversed(range(levels)):  # lowest resolution first; stored highest first (up.0)
            up = nn.Module()
            up.block = nn.ModuleList()
            up.attn = nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if res in attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level:
                up.upsample = Upsample(block_in, resamp_with_conv)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------
# The tower


class RQVAESiglipTower(CodeTower):
    """Images <-> residual codes with the released tower's modules; the same calls as
    `genfoundry.vilau.tower.VisionTower` for inference (tokenize, detokenize, encode, codes_to_features)."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        if config.architecture != "rqvaesiglip":
            raise ValueError(f"RQVAESiglipTower needs a tower config of architecture 'rqvaesiglip', "
                             f"got {config.architecture!r}")
        self.config = config
        self.siglip_model = SiglipPair(config.siglip, config.text)
        self.quantizer = ResidualQuantizer(config.depth, config.codebook_size, config.code_dim, config.ema_decay,
                                           config.dead_code_threshold, config.commitment_weight, padding_row=True)
        self.post_quant_conv = nn.Conv2d(config.code_dim, int(config.pixel_decoder["z_channels"]), 1)
        self.decoder = PixelDecoder(**config.pixel_decoder)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] -> SigLIP features after encoder layer L-2, [B, g*g, C]."""
        self._check_images(images)
        vision = self.siglip_model.vision_model
        h = vision.embeddings(images.to(vision.embeddings.patch_embedding.weight.dtype))
        for layer in vision.encoder.layers[:-1]:
            out = layer(h, None)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """images -> (quantized grid [B, C, g, g], quantizer output with codes [B*g*g, D])."""
        z = self.features(images)
        b, c = z.shape[0], z.shape[-1]
        q = self.quantizer(z.reshape(-1, c))
        g = self.config.grid
        return q.quantized.reshape(b, g, g, c).permute(0, 3, 1, 2), q

    @torch.no_grad()
    def detokenize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, g, g, D] -> images [B, 3, S, S] in [-1, 1] (float32)."""
        self._check_codes(codes)
        z = self.codes_to_features(codes)
        if self.config.decoder_latent_shape:
            z = F.interpolate(z.float(), size=tuple(self.config.decoder_latent_shape), mode="bilinear").to(z.dtype)
        return self.decoder(self.post_quant_conv(z)).float().clamp(-1, 1)

    def _text_side_unavailable(self, what: str):
        raise InputError(f"{what} needs the tower's SigLIP text side with SigLIP's own tokenizer, which the "
                         "released VILA-U folder does not include; rank candidates with another method")

    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        self._text_side_unavailable("text-image alignment")

    def text_embedding(self, text_ids: torch.Tensor) -> torch.Tensor:
        self._text_side_unavailable("text-image alignment")

    def forward(self, images: torch.Tensor, text_ids: torch.Tensor | None = None):
        raise InputError("the authors' vision tower runs for inference only here (their tower training code "
                         "was not released); train a 'genfoundry' tower instead")
