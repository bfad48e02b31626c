"""Building blocks of the deep-compression autoencoder (DC-AE): its encoder and decoder.

Module and parameter names follow diffusers' `AutoencoderDC` (`encoder.down_blocks.i.j.attn.to_q`,
`decoder.up_blocks.i.0.conv`, ...) so a diffusers checkpoint loads into these modules unchanged.

Residual autoencoding (the DC-AE idea): every resolution change has a parameter-free shortcut that
moves information between space and channels, so each block only learns a residual.
- down: pixel_unshuffle(x, 2) (C -> 4C channels at half the size), then the mean over groups of
  4C / C_out consecutive channels -> C_out;
- up: repeat_interleave each channel 4 C_out / C_in times, then pixel_shuffle(2) -> C_out at twice the size;
- encoder output adds the group mean of its last features; decoder input adds the channel-repeated latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry.nn import GLUMBConv, RMSNorm, relu_linear_attention

NORM_TYPES = ("rms_norm", "batch_norm")
ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "mish": nn.Mish}
BLOCK_TYPES = ("ResBlock", "EfficientViTBlock")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def make_norm(norm_type: str, channels: int) -> nn.Module:
    """A norm over the channels of [B, C, H, W]: RMSNorm (eps 1e-5, weight and bias) or BatchNorm2d."""
    if norm_type == "rms_norm":
        return ChannelRMSNorm(channels)
    if norm_type == "batch_norm":
        return nn.BatchNorm2d(channels, eps=1e-5)
    raise ValueError(f"unknown norm type {norm_type!r}: expected one of {NORM_TYPES}")


class ChannelRMSNorm(RMSNorm):
    """RMSNorm over the channels of [B, C, H, W] (diffusers moves channels last; so do we)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-5, affine=True, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock(nn.Module):
    """x + norm(conv2(act(conv1(x)))): 3x3 conv (bias) -> activation -> 3x3 conv (no bias) -> norm."""

    def __init__(self, channels: int, norm_type: str, act_fn: str) -> None:
        super().__init__()
        self.nonlinearity = make_activation(act_fn)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = make_norm(norm_type, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv2(self.nonlinearity(self.conv1(x))))


class MultiscaleProjection(nn.Module):
    """One extra scale of q/k/v: a k x k depthwise conv, then a 1x1 conv grouped per head (of q, k and v)."""

    def __init__(self, channels: int, heads: int, kernel_size: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False
        )
        self.proj_out = nn.Conv2d(channels, channels, 1, groups=3 * heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))


class MultiscaleLinearAttention(nn.Module):
    """LiteMLA: ReLU linear attention over all positions with multi-scale q/k/v tokens, plus a residual.

    q, k, v = 1x1 projections (`to_q/to_k/to_v`, no bias), stacked as 3C channels; each kernel size adds
    an aggregated copy (depthwise k x k + grouped 1x1). The stacked channels are read as heads of
    3 * head_dim consecutive channels, each split into its own (q, k, v) -- the channel order of the
    original single `qkv` conv. Every head attends with ReLU linear attention in fp32, then a 1x1
    projection (`to_out`) and a channel norm (`norm_out`).

    diffusers switches to an equivalent quadratic form when H*W <= head_dim; both compute
    sum_j v_j (k_j . q_i) / (sum_j k_j . q_i + eps), so one fp32 linear form is used here.
    """

    def __init__(
        self,
        channels: int,
        head_dim: int,
        kernel_sizes: tuple[int, ...],
        norm_type: str,
        eps: float = 1e-15,
    ) -> None:
        super().__init__()
        heads = channels // head_dim
        inner = heads * head_dim
        self.head_dim, self.eps = head_dim, eps
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(channels, inner, bias=False)
        self.to_v = nn.Linear(channels, inner, bias=False)
        self.to_qkv_multiscale = nn.ModuleList(
            MultiscaleProjection(3 * inner, heads, kernel) for kernel in kernel_sizes
        )
        self.to_out = nn.Linear(inner * (1 + len(kernel_sizes)), channels, bias=False)
        self.norm_out = make_norm(norm_type, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        w_qkv = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        qkv = F.conv2d(x, w_qkv[:, :, None, None])
        qkv = torch.cat([qkv, *(scale(qkv) for scale in self.to_qkv_multiscale)], dim=1)
        qkv = qkv.reshape(batch, -1, 3 * self.head_dim, height * width).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)  # each [B, heads * scales, N, head_dim]
        out = relu_linear_attention(q, k, v, self.eps)
        out = out.transpose(-1, -2).reshape(batch, -1, height, width).to(x.dtype)
        out = F.conv2d(out, self.to_out.weight[:, :, None, None])
        return x + self.norm_out(out)


class EfficientViTBlock(nn.Module):
    """Global context (LiteMLA) then local mixing (GLUMBConv, expand 4, RMSNorm), each with a residual."""

    def __init__(self, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], norm_type: str) -> None:
        super().__init__()
        self.attn = MultiscaleLinearAttention(channels, head_dim, kernel_sizes, norm_type)
        self.conv_out = GLUMBConv(channels, channels, expand_ratio=4.0, norm="rms_norm", residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.attn(x))


def make_block(
    block_type: str, channels: int, head_dim: int, norm_type: str, act_fn: str, kernel_sizes: tuple[int, ...]
) -> nn.Module:
    if block_type == "ResBlock":
        return ResBlock(channels, norm_type, act_fn)
    if block_type == "EfficientViTBlock":
        return EfficientViTBlock(channels, head_dim, kernel_sizes, norm_type)
    raise ValueError(f"unknown DC-AE block type {block_type!r}: expected one of {BLOCK_TYPES}")


class DownsampleBlock(nn.Module):
    """Halve H and W: a 3x3 conv (stride 2, or stride 1 + pixel_unshuffle) plus the group-mean shortcut."""

    def __init__(self, in_channels: int, out_channels: int, pixel_unshuffle: bool, shortcut: bool) -> None:
        super().__init__()
        self.pixel_unshuffle = pixel_unshuffle
        self.shortcut = shortcut
        self.group_size = in_channels * 4 // out_channels
        conv_out = out_channels // 4 if pixel_unshuffle else out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, 3, stride=1 if pixel_unshuffle else 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.pixel_unshuffle:
            out = F.pixel_unshuffle(out, 2)
        if self.shortcut:
            out = out + F.pixel_unshuffle(x, 2).unflatten(1, (-1, self.group_size)).mean(dim=2)
        return out


class UpsampleBlock(nn.Module):
    """Double H and W: nearest-upsample + 3x3 conv, or 3x3 conv + pixel_shuffle; plus the repeat shortcut."""

    def __init__(self, in_channels: int, out_channels: int, interpolate: bool, shortcut: bool) -> None:
        super().__init__()
        self.interpolate = interpolate
        self.shortcut = shortcut
        self.repeats = out_channels * 4 // in_channels
        self.conv = nn.Conv2d(in_channels, out_channels if interpolate else out_channels * 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolate:
            out = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        else:
            out = F.pixel_shuffle(self.conv(x), 2)
        if self.shortcut:
            out = out + F.pixel_shuffle(x.repeat_interleave(self.repeats, dim=1), 2)
        return out


class Encoder(nn.Module):
    """images [B, in, H, W] -> latents [B, latent, H / 2^(S-1), W / 2^(S-1)] for S stages.

    Stage i runs `layers[i]` blocks at width `widths[i]`, then (except the last stage) halves the
    resolution. A stage with 0 layers is skipped: the input conv then downsamples straight to the
    next stage's width.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        head_dim: int,
        block_types: tuple[str, ...],
        widths: tuple[int, ...],
        layers: tuple[int, ...],
        multiscales: tuple[tuple[int, ...], ...],
        pixel_unshuffle: bool,
        out_shortcut: bool,
    ) -> None:
        super().__init__()
        stages = len(widths)
        if layers[0] > 0:
            self.conv_in = nn.Conv2d(in_channels, widths[0], 3, 1, 1)
        else:
            self.conv_in = DownsampleBlock(in_channels, widths[1], pixel_unshuffle, shortcut=False)
        self.down_blocks = nn.ModuleList()
        for i in range(stages):
            stage = [
                make_block(block_types[i], widths[i], head_dim, "rms_norm", "silu", multiscales[i])
                for _ in range(layers[i])
            ]
            if i < stages - 1 and layers[i] > 0:
                stage.append(DownsampleBlock(widths[i], widths[i + 1], pixel_unshuffle, shortcut=True))
            self.down_blocks.append(nn.Sequential(*stage))
        self.conv_out = nn.Conv2d(widths[-1], latent_channels, 3, 1, 1)
        self.out_group_size = widths[-1] // latent_channels if out_shortcut else None

    def first_attention_stage(self) -> int:
        """Index of the first stage with an EfficientViT block (len(stages) if none)."""
        return _first_attention_stage(self.down_blocks)

    def forward_convs(self, x: torch.Tensor, split: int) -> torch.Tensor:
        """The high-resolution part: input conv and stages [0, split) -> features at 1 / 2^split size."""
        x = self.conv_in(x)
        for stage in self.down_blocks[:split]:
            x = stage(x)
        return x

    def forward_rest(self, x: torch.Tensor, split: int) -> torch.Tensor:
        """Stages [split, S) and the output conv + shortcut."""
        for stage in self.down_blocks[split:]:
            x = stage(x)
        out = self.conv_out(x)
        if self.out_group_size is not None:
            out = out + x.unflatten(1, (-1, self.out_group_size)).mean(dim=2)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_rest(self.forward_convs(x, 0), 0)


class Decoder(nn.Module):
    """latents -> images: stages from the deepest to the first, then channel RMSNorm, activation, conv.

    `up_blocks[i]` is stage i (upsample from stage i+1's width first, then its blocks); they run in
    reverse order, as in diffusers.
    """

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        head_dim: int,
        block_types: tuple[str, ...],
        widths: tuple[int, ...],
        layers: tuple[int, ...],
        multiscales: tuple[tuple[int, ...], ...],
        norm_types: tuple[str, ...],
        act_fns: tuple[str, ...],
        interpolate: bool,
        in_shortcut: bool,
        conv_act_fn: str,
    ) -> None:
        super().__init__()
        stages = len(widths)
        self.conv_in = nn.Conv2d(latent_channels, widths[-1], 3, 1, 1)
        self.in_repeats = widths[-1] // latent_channels if in_shortcut else None
        self.up_blocks = nn.ModuleList()
        for i in range(stages):
            stage: list[nn.Module] = []
            if i < stages - 1 and layers[i] > 0:
                stage.append(UpsampleBlock(widths[i + 1], widths[i], interpolate, shortcut=True))
            stage += [
                make_block(block_types[i], widths[i], head_dim, norm_types[i], act_fns[i], multiscales[i])
                for _ in range(layers[i])
            ]
            self.up_blocks.append(nn.Sequential(*stage))
        channels = widths[0] if layers[0] > 0 else widths[1]
        self.norm_out = make_norm("rms_norm", channels)
        self.conv_act = make_activation(conv_act_fn)
        if layers[0] > 0:
            self.conv_out = nn.Conv2d(channels, out_channels, 3, 1, 1)
        else:
            self.conv_out = UpsampleBlock(channels, out_channels, interpolate, shortcut=False)

    def first_attention_stage(self) -> int:
        """Index of the first (highest-resolution) stage with an EfficientViT block (len(stages) if none)."""
        return _first_attention_stage(self.up_blocks)

    def forward_head(self, z: torch.Tensor, split: int) -> torch.Tensor:
        """The low-resolution part: input conv + shortcut and stages S-1 .. split -> features of stage `split`."""
        x = self.conv_in(z)
        if self.in_repeats is not None:
            x = x + z.repeat_interleave(self.in_repeats, dim=1)
        for stage in reversed(self.up_blocks[split:]):
            x = stage(x)
        return x

    def forward_convs(self, x: torch.Tensor, split: int) -> torch.Tensor:
        """Stages split-1 .. 0 and the output norm, activation and conv -> images."""
        for stage in reversed(self.up_blocks[:split]):
            x = stage(x)
        return self.conv_out(self.conv_act(self.norm_out(x)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_convs(self.forward_head(z, 0), 0)


def _first_attention_stage(stages: nn.ModuleList) -> int:
    for i, stage in enumerate(stages):
        if any(isinstance(block, EfficientViTBlock) for block in stage):
            return i
    return len(stages)
