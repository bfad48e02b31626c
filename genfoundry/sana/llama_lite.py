"""Inference-only Llama decoder (the base model's last hidden state) without importing transformers'
modelling code, which costs seconds of start-up on a small CPU; `genfoundry generate` with the
embedded model spends more time importing than computing.

Same parameter names and config.json as transformers' `LlamaModel`, so a folder saved by either loads
in the other. Only the plain architecture is covered (default RoPE, no biases, SiLU MLP, no tensor
parallel slicing); `unsupported_reason(config)` says why a config needs transformers instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TRANSFORMERS_CLASS = "LlamaModel"


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """None when `config` (a parsed config.json) is a plain Llama this module computes exactly."""
    if config.get("model_type") != "llama":
        return f"model_type {config.get('model_type')!r} is not 'llama'"
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return f"rope type {rope.get('rope_type', rope.get('type'))!r} is not 'default'"
    for key, plain in (("attention_bias", False), ("mlp_bias", False), ("hidden_act", "silu"), ("pretraining_tp", 1)):
        if config.get(key, plain) != plain:
            return f"{key}={config.get(key)!r} (only {plain!r} is implemented)"
    return None


@dataclass
class LlamaLiteConfig:
    raw: dict[str, Any]  # the config.json, written back unchanged by to_json_string

    @property
    def hidden_size(self) -> int:
        return int(self.raw["hidden_size"])

    @property
    def architectures(self) -> list[str]:
        return list(self.raw.get("architectures") or [TRANSFORMERS_CLASS])

    @architectures.setter
    def architectures(self, value: list[str]) -> None:
        self.raw["architectures"] = list(value)

    def to_json_string(self) -> str:
        return json.dumps(self.raw, indent=2, sort_keys=True) + "\n"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if self.kv_heads != self.heads:  # grouped-query attention: each K/V head serves a group of Q heads
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: dict[str, Any], head_dim: int) -> None:
        super().__init__()
        hidden, eps = int(c["hidden_size"]), float(c.get("rms_norm_eps", 1e-6))
        heads = int(c["num_attention_heads"])
        self.input_layernorm = RMSNorm(hidden, eps)
        self.self_attn = Attention(hidden, heads, int(c.get("num_key_value_heads") or heads), head_dim)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.mlp = MLP(hidden, int(c["intermediate_size"]))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class LiteOutput:
    last_hidden_state: torch.Tensor


class LlamaLite(nn.Module):
    """`LlamaLite(config_dict)(input_ids, attention_mask).last_hidden_state`, as transformers' LlamaModel."""

    transformers_class = TRANSFORMERS_CLASS

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        reason = unsupported_reason(config)
        if reason:
            raise ValueError(f"LlamaLite cannot compute this config: {reason}")
        self.config = LlamaLiteConfig(dict(config))
        c = self.config.raw
        hidden = int(c["hidden_size"])
        self.head_dim = int(c.get("head_dim") or hidden // int(c["num_attention_heads"]))
        # weights come from load_state_dict: no random init (on the meta device it would import torch._dynamo)
        self.embed_tokens = nn.Embedding(int(c["vocab_size"]), hidden, padding_idx=c.get("pad_token_id"),
                                         _weight=torch.empty(int(c["vocab_size"]), hidden))
        self.layers = nn.ModuleList(DecoderLayer(c, self.head_dim) for _ in range(int(c["num_hidden_layers"])))
        self.norm = RMSNorm(hidden, float(c.get("rms_norm_eps", 1e-6)))

    @staticmethod
    def rope_frequencies(config: dict[str, Any], head_dim: int) -> torch.Tensor:
        return 1.0 / (_rope_theta(config) ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> LiteOutput:
        b, n = input_ids.shape
        x = self.embed_tokens(input_ids)
        # RoPE angles in float32 whatever the weights' dtype (as transformers does)
        inv_freq = self.rope_frequencies(self.config.raw, self.head_dim).to(x.device)
        angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        # causal, and no query looks at a padded key
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]
            # a row with nothing to look at (left padding) would give NaN: let it see itself
            mask = mask | (~mask.any(-1, keepdim=True) & torch.eye(n, dtype=torch.bool, device=x.device))
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return LiteOutput(self.norm(x))
