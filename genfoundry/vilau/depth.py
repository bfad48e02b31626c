"""The depth transformer: from the LLM hidden state at one image position, predict its D residual codes.

It is a small causal transformer over the depth axis (length D), run independently for every
position. Input at depth 1 is a projection of the LLM hidden state; input at depth d > 1 is a
projection of the cumulative sum of the code embeddings of depths 1..d-1; every input adds a learned
depth embedding. The output at depth d is the distribution of the code at depth d, so (with the
causal mask) it depends on the codes of depths < d only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DepthConfig:
    llm_hidden_size: int = 256
    code_dim: int = 32
    codebook_size: int = 512
    depth: int = 4
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"depth transformer hidden_size {self.hidden_size} must be divisible by "
                             f"num_heads {self.num_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(m, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(m, length, dim))
        return x + self.mlp(self.norm2(x))


class DepthTransformer(nn.Module):
    def __init__(self, config: DepthConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.hidden_in = nn.Linear(config.llm_hidden_size, dim)
        self.code_in = nn.Linear(config.code_dim, dim)
        self.depth_embedding = nn.Parameter(torch.randn(config.depth, dim) * 0.02)
        self.blocks = nn.ModuleList(CausalBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(dim)
        # One classifier per depth: each depth has its own codebook.
        self.heads = nn.Parameter(torch.randn(config.depth, dim, config.codebook_size) * dim ** -0.5)

    def forward(self, hidden: torch.Tensor, prefix_sums: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """hidden [M, H_llm]; prefix_sums [M, L-1, code_dim] = cumulative code embeddings of depths
        1..L-1 (L <= D; None or empty for L = 1) -> logits [M, L, codebook_size] for depths 1..L
        (with `last_only`, [M, codebook_size] for depth L alone: sampling needs no other, and at
        decoding time reading the other depths' classifiers costs more than the arithmetic)."""
        m = hidden.shape[0]
        x = self.hidden_in(hidden)[:, None, :]
        if prefix_sums is not None and prefix_sums.shape[1] > 0:
            if prefix_sums.shape[0] != m or prefix_sums.shape[1] > self.config.depth - 1:
                raise ValueError(f"prefix_sums must be [{m}, < {self.config.depth}, C], got {tuple(prefix_sums.shape)}")
            x = torch.cat([x, self.code_in(prefix_sums.to(x.dtype))], dim=1)
        length = x.shape[1]
        x = x + self.depth_embedding[:length]
        for block in self.blocks:
            x = block(x)
        if last_only:
            return self.norm(x[:, -1]) @ self.heads[length - 1]
        x = self.norm(x)
        return torch.einsum("mld,ldk->mlk", x, self.heads[:length])
