"""Normalisation layers and the adaLN modulation used by DiT-style blocks."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension; the variance is always computed in fp32.

    `weight` (and optional `bias`) are cast like diffusers' RMSNorm: a half-precision weight turns the
    normalised value into that dtype before scaling; without a weight the input dtype is kept.
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        out = x * torch.rsqrt(variance + self.eps)
        if self.weight is None:
            return out.to(x.dtype)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            out = out.to(self.weight.dtype)
        out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation `x * (1 + scale) + shift` (shift/scale broadcast over tokens)."""
    return torch.addcmul(shift, x, 1 + scale)
