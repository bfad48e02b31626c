"""Attention: ReLU linear attention (SANA / EfficientViT) and softmax attention with a key mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry.nn.norms import RMSNorm

# Additive bias for masked keys. Finite, so a row with every key masked gives a uniform average
# instead of NaN, and large enough that exp() of it underflows to exactly 0 next to any real key.
MASKED_KEY_BIAS = -10000.0


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """O_i = sum_j V_j relu(K_j)^T relu(Q_i) / (sum_j relu(K_j)^T relu(Q_i) + eps).

    q, k, v: [B, heads, N, d] (any strides). Computed in fp32 (half precision overflows the sums).
    Returns [B, heads, N, d] in fp32. Cost O(N d^2): the d x d summary sum_j K_j^T V_j is built once.
    """
    q = F.relu(q).float()
    k = F.relu(k).float()
    v = v.float()
    kv = torch.matmul(k.transpose(-1, -2), v)  # [B, h, d, d]
    k_sum = k.sum(dim=-2).unsqueeze(-1)  # [B, h, d, 1]
    # One matmul gives numerator and denominator: the last column of [kv | k_sum] is the normaliser.
    out = torch.matmul(q, torch.cat([kv, k_sum], dim=-1))  # [B, h, N, d + 1]
    return out[..., :-1] / (out[..., -1:] + eps)


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product softmax attention; q [B,h,N,d], k/v [B,h,L,d], bias broadcastable to [B,h,N,L]."""
    if bias is not None:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def text_mask_to_bias(mask: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Key mask [B, L] (1 keep, 0 drop; bool or numeric) -> additive bias [B, 1, 1, L]."""
    if mask is None:
        return None
    if mask.ndim != 2:
        raise ValueError(f"text mask must be [batch, length], got shape {tuple(mask.shape)}")
    keep = mask.bool() if mask.dtype == torch.bool else mask != 0
    bias = torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill_(~keep, MASKED_KEY_BIAS)
    return bias[:, None, None, :]


def _qk_norm(kind: str | None, dim: int, eps: float) -> RMSNorm | None:
    if kind is None:
        return None
    if kind == "rms_norm_across_heads":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unsupported qk_norm {kind!r}: expected None or 'rms_norm_across_heads'")


ATTENTION_KERNELS = ("relu_linear", "softmax")


class LinearSelfAttention(nn.Module):
    """Multi-head ReLU linear self-attention over tokens [B, N, C] (SANA's `attn1`).

    `kernel="softmax"` swaps only the attention kernel for scaled dot-product softmax (same
    projections and parameters): the quadratic baseline SANA's linear attention replaces.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int = 32,
        qkv_bias: bool = False,
        out_bias: bool = True,
        qk_norm: str | None = None,
        eps: float = 1e-15,
        kernel: str = "relu_linear",
    ) -> None:
        super().__init__()
        if kernel not in ATTENTION_KERNELS:
            raise ValueError(f"kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}")
        inner = heads * head_dim
        self.heads, self.head_dim, self.eps, self.kernel = heads, head_dim, eps, kernel
        self.to_q = nn.Linear(dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(dim, inner, bias=qkv_bias)
        self.norm_q = _qk_norm(qk_norm, inner, 1e-5)
        self.norm_k = _qk_norm(qk_norm, inner, 1e-5)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=out_bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        split = (batch, tokens, self.heads, self.head_dim)
        q, k, v = (t.view(split).transpose(1, 2) for t in (q, k, v))
        if self.kernel == "softmax":
            out = softmax_attention(q, k, v)
        else:
            out = relu_linear_attention(q, k, v, self.eps)
        out = out.transpose(1, 2).reshape(batch, tokens, -1).to(x.dtype)
        out = self.to_out[0](out)
        if out.dtype == torch.float16:
            out = out.clamp(-65504, 65504)
        return out


class CrossAttention(nn.Module):
    """Multi-head softmax attention from tokens [B, N, C] to a context [B, L, Cc] with a key bias."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        head_dim: int,
        bias: bool = True,
        out_bias: bool = True,
        qk_norm: str | None = None,
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.norm_q = _qk_norm(qk_norm, inner, 1e-5)
        self.norm_k = _qk_norm(qk_norm, inner, 1e-5)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=out_bias)])

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, heads, L, head_dim] of a context [B, L, Cc]. They depend on the context
        alone, so a caller attending to one context many times (a sampler's steps) computes them once."""
        batch = context.shape[0]
        k, v = self.to_k(context), self.to_v(context)
        if self.norm_k is not None:
            k = self.norm_k(k)
        k = k.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, bias: torch.Tensor | None = None, *,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`kv`: the context's keys and values from `project_context` (then `context` is not read)."""
        batch = x.shape[0]
        q = self.to_q(x)
        if self.norm_q is not None:
            q = self.norm_q(q)
        k, v = kv if kv is not None else self.project_context(context)
        q = q.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        out = softmax_attention(q, k, v, bias)
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * self.head_dim)
        return self.to_out[0](out)
