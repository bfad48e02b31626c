"""GLUMBConv (Mix-FFN): 1x1 expand -> SiLU -> 3x3 depthwise -> GLU gate -> 1x1 project."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry.nn.norms import RMSNorm


class GLUMBConv(nn.Module):
    """Gated inverted-bottleneck conv block used as the FFN of SANA and in DC-AE's EfficientViT stages.

    hidden = int(expand_ratio * in_channels). `conv_inverted`: in -> 2*hidden (1x1, bias), SiLU;
    `conv_depth`: 3x3 depthwise over 2*hidden (bias); split into (x, gate), x * SiLU(gate);
    `conv_point`: hidden -> out (1x1, no bias). Optional channel RMSNorm (`norm="rms_norm"`) and residual.

    `forward` takes [B, C, H, W]; `forward_tokens` takes row-major tokens [B, H*W, C] and runs the same
    convs on a channels-last view of them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: float = 4.0,
        norm: str | None = None,
        residual: bool = False,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        if norm not in (None, "rms_norm"):
            raise ValueError(f"GLUMBConv norm must be None or 'rms_norm', got {norm!r}")
        hidden = hidden_channels if hidden_channels is not None else int(expand_ratio * in_channels)
        self.hidden_channels = hidden
        self.residual = residual
        self.conv_inverted = nn.Conv2d(in_channels, 2 * hidden, 1)
        self.conv_depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.conv_point = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.norm = RMSNorm(out_channels, eps=1e-5, affine=True, bias=True) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv_inverted(x))
        h = self.conv_depth(h)
        h, gate = h.chunk(2, dim=1)
        h = self.conv_point(h * F.silu(gate))
        if self.norm is not None:
            h = self.norm(h.movedim(1, -1)).movedim(-1, 1)
        return h + x if self.residual else h

    def forward_tokens(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, tokens, channels = x.shape
        if tokens != height * width:
            raise ValueError(f"GLUMBConv got {tokens} tokens for a {height}x{width} grid")
        # Row-major tokens [B, H*W, C] viewed as [B, C, H, W] form a channels-last tensor, so every conv
        # below runs without layout copies. The 1x1 convs are called as modules (not F.linear on their
        # weights) so that wrappers such as the SVDQuant W4A4 layer see them.
        h = x.view(batch, height, width, channels).permute(0, 3, 1, 2)
        h = self.conv_depth(F.silu(self.conv_inverted(h)))
        h, gate = h.chunk(2, dim=1)
        h = self.conv_point(h * F.silu(gate))
        h = h.permute(0, 2, 3, 1).reshape(batch, tokens, -1)
        if self.norm is not None:
            h = self.norm(h)
        return h + x if self.residual else h
