"""A lean KV-cached decoder for the Llama backbone (gpt-fast style), used by VILA-U generation.

transformers' generic path (DynamicCache, mask builders, output capturing) costs several times more
than the arithmetic when one position of a small model is decoded at a time. This decoder runs the
same modules (the same weights, projections, norms and RoPE tables of the transformers model) with
a preallocated cache that doubles when full, one boolean key mask per row (left padding) and
`scaled_dot_product_attention`. Positions are column indices, as transformers numbers them when it
is given no position ids; RoPE only sees differences, so left padding does not change a row.

`use_cache=False` runs the whole sequence again at every step through the same code, so the two
modes differ only in the cache (what the speed benchmark compares).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INITIAL_CAPACITY = 256


def supports(llm: nn.Module) -> bool:
    """Can this decoder run `llm` (a transformers LlamaModel, or another model with the same parts)?"""
    layers = getattr(llm, "layers", None)
    if layers is None or not hasattr(llm, "rotary_emb") or not hasattr(llm, "norm") or not len(layers):
        return False
    layer = layers[0]
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    parts = [(attn, ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")),
             (mlp, ("gate_proj", "up_proj", "down_proj", "act_fn")),
             (layer, ("input_layernorm", "post_attention_layernorm"))]
    if not all(owner is not None and all(hasattr(owner, name) for name in names) for owner, names in parts):
        return False
    config = llm.config
    # sliding windows, soft-capping or other attention variants would need more than this decoder does
    return getattr(config, "sliding_window", None) is None and getattr(config, "attn_logit_softcapping", None) is None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaDecoder:
    """Feed embeddings [B, n, H] (with a key mask, 0 = left padding) -> hidden states of the new positions."""

    def __init__(self, llm: nn.Module, use_cache: bool = True) -> None:
        if not supports(llm):
            raise ValueError(f"{type(llm).__name__} is not a Llama-style model this decoder can run")
        self.llm = llm
        self.use_cache = use_cache
        config = llm.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = llm.layers[0].self_attn.head_dim
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.key_mask: torch.Tensor | None = None  # [B, capacity] bool, True = a real position
        self.cos = self.sin = None
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # without the cache: everything fed so far

    # ------------------------------------------------------------------ cache storage
    def _reserve(self, batch: int, needed: int, like: torch.Tensor) -> None:
        capacity = self.key_mask.shape[1] if self.key_mask is not None else 0
        if needed <= capacity:
            return
        new = max(INITIAL_CAPACITY, capacity)
        while new < needed:
            new *= 2
        shape = (batch, self.kv_heads, new, self.head_dim)
        for store in (self.keys, self.values):
            for i in range(len(self.llm.layers)):
                grown = like.new_zeros(shape)
                if capacity:
                    grown[:, :, :capacity] = store[i]
                if i < len(store):
                    store[i] = grown
                else:
                    store.append(grown)
        mask = torch.zeros((batch, new), dtype=torch.bool, device=like.device)
        if capacity:
            mask[:, :capacity] = self.key_mask
        self.key_mask = mask
        positions = torch.arange(new, device=like.device)[None]
        cos, sin = self.llm.rotary_emb(like, positions)
        self.cos, self.sin = cos[0], sin[0]  # [capacity, head_dim]

    def reset(self) -> None:
        self.length = 0
        self.keys, self.values, self.key_mask = [], [], None

    # ------------------------------------------------------------------ forward
    def feed(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """embeds [B, n, H], mask [B, n] (0 = padding) appended -> hidden states [B, n, H] of those positions."""
        if self.use_cache:
            return self._run(embeds, mask)
        self.inputs.append((embeds, mask))
        self.reset()
        everything = self._run(torch.cat([e for e, _ in self.inputs], 1), torch.cat([m for _, m in self.inputs], 1))
        return everything[:, -embeds.shape[1]:]

    def _run(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        start, end = self.length, self.length + n
        self._reserve(b, end, x)
        self.key_mask[:, start:end] = mask.bool()
        cos = self.cos[start:end].to(x.dtype)[None, None]
        sin = self.sin[start:end].to(x.dtype)[None, None]
        # query i (column start + i) sees real keys up to its own column, and always itself: a padding
        # row then has a key, where some attention kernels would return NaN for a row with none (its
        # output is never used: no real query attends to a padding key)
        rows = torch.arange(start, end, device=x.device)[:, None]
        columns = torch.arange(end, device=x.device)[None]
        attend = (self.key_mask[:, None, :end] & (columns <= rows)) | (columns == rows)
        attend = attend[:, None]  # [B, 1, n, end]
        if bool(attend.all()):
            attend = None
        for i, layer in enumerate(self.llm.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            keys, values = self.keys[i][:, :, :end], self.values[i][:, :, :end]
            if self.kv_heads != self.heads:
                repeat = self.heads // self.kv_heads
                keys, values = keys.repeat_interleave(repeat, 1), values.repeat_interleave(repeat, 1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, scale=attn.scaling)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
            mlp = layer.mlp
            h = layer.post_attention_layernorm(x)
            x = x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))
        self.length = end
        return self.llm.norm(x)
