"""The depth transformer: from the LLM hidden state at one image position, predict its D residual codes.

It is a small causal transformer over the depth axis (length D), run independently for every
position. Input at depth 1 is a projection of the LLM hidden state; input at depth d > 1 is a
projection of the cumulative sum of the code embeddings of depths 1..d-1; every input adds a learned
depth embedding. The output at depth d is the distribution of the code at depth d, so (with the
causal mask) it depends on the codes of depths < d only.

Two architectures, chosen by `DepthConfig.architecture`:
- "genfoundry" (`DepthTransformer`): fused q/k/v, MLP ratio `mlp_ratio`, a final LayerNorm and one
  classifier per depth (each depth has its own codebook);
- "rqtransformer" (`RQTransformer`): the authors' released depth transformer, with their parameter
  names: GPT blocks (`ln1`, `attn.{query,key,value,proj}`, `ln2`, `mlp.0`/`mlp.2`, MLP ratio 4),
  `pos_emb_d` [1, D, E], and one LayerNorm + Linear classifier (with bias) shared by every depth.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


DEPTH_ARCHITECTURES = ("genfoundry", "rqtransformer")


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
    architecture: str = "genfoundry"  # or "rqtransformer" (the authors' module; its MLP ratio is 4)

    def __post_init__(self) -> None:
        if self.architecture not in DEPTH_ARCHITECTURES:
            raise ValueError(f"depth transformer architecture must be one of {DEPTH_ARCHITECTURES}, "
                             f"got {self.architecture!r}")
        if self.architecture == "rqtransformer":
            self.mlp_ratio = 4.0  # fixed in the authors' blocks
        if self.hidden_size % self.num_heads:
            raise ValueError(f"depth transformer hidden_size {self.hidden_size} must be divisible by "
                             f"num_heads {self.num_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


def depth_inputs(hidden_in: nn.Module, code_in: nn.Module, hidden: torch.Tensor, prefix_sums: torch.Tensor | None,
                 depth: int) -> torch.Tensor:
    """The depth sequence [M, L, E]: `hidden_in(hidden)` first, then `code_in` of each prefix sum."""
    m = hidden.shape[0]
    x = hidden_in(hidden)[:, None, :]
    if prefix_sums is not None and prefix_sums.shape[1] > 0:
        if prefix_sums.shape[0] != m or prefix_sums.shape[1] > depth - 1:
            raise ValueError(f"prefix_sums must be [{m}, < {depth}, C], got {tuple(prefix_sums.shape)}")
        x = torch.cat([x, code_in(prefix_sums.to(x.dtype))], dim=1)
    return x


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
        x = depth_inputs(self.hidden_in, self.code_in, hidden, prefix_sums, self.config.depth)
        length = x.shape[1]
        x = x + self.depth_embedding[:length]
        for block in self.blocks:
            x = block(x)
        if last_only:
            return self.norm(x[:, -1]) @ self.heads[length - 1]
        x = self.norm(x)
        return torch.einsum("mld,ldk->mlk", x, self.heads[:length])



# ----------------------------------------------------------------------------------------------
# The authors' depth transformer ("rqtransformer"), module names as in their checkpoints


class GPTSelfAttention(nn.Module):
    """Causal multi-head self-attention with separate query/key/value projections (biases on)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, length, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(m, length, self.heads, dim // self.heads).transpose(1, 2)

        attn = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                              is_causal=True)
        return self.proj(attn.transpose(1, 2).reshape(m, length, dim))


class GPTBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln1(x)), then + mlp(ln2(x)) with an exact-GELU MLP of ratio 4."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = GPTSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPTStack(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(GPTBlock(dim, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class RQTransformer(nn.Module):
    """The released depth transformer: `in_mlp_2` projects the LLM hidden state (depth 1), `in_mlp_1` the
    cumulative code embeddings (depths 2..D), `pos_emb_d` marks the depth, `head_transformer` runs causally
    over the depths and `classifier_mlp` (LayerNorm + Linear, one for every depth) gives the code logits.
    Same call as `DepthTransformer`."""

    def __init__(self, config: DepthConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.in_mlp_1 = nn.Linear(config.code_dim, dim)
        self.in_mlp_2 = nn.Linear(config.llm_hidden_size, dim)
        self.pos_emb_d = nn.Parameter(torch.randn(1, config.depth, dim) * 0.02)
        self.head_transformer = GPTStack(dim, config.num_heads, config.num_layers)
        self.classifier_mlp = nn.Sequential(OrderedDict([
            ("layer_norm", nn.LayerNorm(dim)), ("linear", nn.Linear(dim, config.codebook_size))]))

    def forward(self, hidden: torch.Tensor, prefix_sums: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """As `DepthTransformer.forward`: logits [M, L, codebook_size], or [M, codebook_size] for depth L."""
        x = depth_inputs(self.in_mlp_2, self.in_mlp_1, hidden, prefix_sums, self.config.depth)
        x = self.head_transformer(x + self.pos_emb_d[:, :x.shape[1]])
        return self.classifier_mlp(x[:, -1] if last_only else x)


def build_depth_transformer(config: DepthConfig) -> nn.Module:
    """The depth transformer `config.architecture` names."""
    return RQTransformer(config) if config.architecture == "rqtransformer" else DepthTransformer(config)
