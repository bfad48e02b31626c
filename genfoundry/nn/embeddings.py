"""Timestep and position embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_sinusoidal(
    timesteps: torch.Tensor,
    dim: int = 256,
    max_period: float = 10000.0,
    cos_first: bool = True,
    freq_shift: float = 0.0,
) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps [B] -> [B, dim] in fp32.

    Frequencies are exp(-log(max_period) * i / (dim/2 - freq_shift)); the output is [cos, sin] when
    `cos_first` (DiT / PixArt / SANA), else [sin, cos].
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D [batch], got shape {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * freqs[None, :]
    parts = (torch.cos(angles), torch.sin(angles)) if cos_first else (torch.sin(angles), torch.cos(angles))
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def sincos_pos_embed_2d(
    dim: int,
    height: int,
    width: int,
    base_size: int,
    interpolation_scale: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """2-D sin-cos position embedding [height * width, dim] (row-major tokens), computed in fp64.

    Grid coordinates are scaled so a `base_size` grid spans [0, base_size) regardless of the actual
    size, then divided by `interpolation_scale` (PixArt/SANA high-resolution convention). The first half
    of the channels encodes the column (x) coordinate, the second half the row (y) coordinate.
    """
    if dim % 4:
        raise ValueError(f"sincos position embedding needs dim divisible by 4, got {dim}")
    rows = torch.arange(height, dtype=torch.float64, device=device) / (height / base_size) / interpolation_scale
    cols = torch.arange(width, dtype=torch.float64, device=device) / (width / base_size) / interpolation_scale
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        omega = torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4.0)
        omega = 1.0 / 10000**omega
        out = pos.reshape(-1, 1) * omega[None, :]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([encode(grid_x), encode(grid_y)], dim=1).float()
