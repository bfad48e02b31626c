"""Original SANA checkpoint (.pth, `blocks.N.attn.qkv` keys) <-> diffusers key layout.

The original repo fuses q/k/v of the linear attention (`attn.qkv`) and k/v of the cross-attention
(`cross_attn.kv_linear`); diffusers keeps them separate. Dropped on the way in: `y_embedding` (the
learned null caption, unused at inference since the negative prompt is encoded) and `pos_embed`
(recomputed from the config).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from genfoundry import hub
from genfoundry.sana.transformer import NAMED_CONFIGS, SanaTransformerConfig

# Renames that are one tensor to one tensor: (original prefix, diffusers prefix).
_TOP_LEVEL = [
    ("x_embedder.proj.", "patch_embed.proj."),
    ("t_embedder.mlp.0.", "time_embed.emb.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "time_embed.emb.timestep_embedder.linear_2."),
    ("t_block.1.", "time_embed.linear."),
    ("y_embedder.y_proj.fc1.", "caption_projection.linear_1."),
    ("y_embedder.y_proj.fc2.", "caption_projection.linear_2."),
    ("attention_y_norm.", "caption_norm."),
    ("final_layer.linear.", "proj_out."),
    ("final_layer.scale_shift_table", "scale_shift_table"),
]
_IN_BLOCK = [
    ("scale_shift_table", "scale_shift_table"),
    ("attn.proj.", "attn1.to_out.0."),
    ("attn.q_norm.", "attn1.norm_q."),
    ("attn.k_norm.", "attn1.norm_k."),
    ("cross_attn.q_linear.", "attn2.to_q."),
    ("cross_attn.proj.", "attn2.to_out.0."),
    ("cross_attn.q_norm.", "attn2.norm_q."),
    ("cross_attn.k_norm.", "attn2.norm_k."),
    ("mlp.inverted_conv.conv.", "ff.conv_inverted."),
    ("mlp.depth_conv.conv.", "ff.conv_depth."),
    ("mlp.point_conv.conv.", "ff.conv_point."),
]
# Fused original tensors split along dim 0 into these diffusers names.
_FUSED = [
    ("attn.qkv.", ("attn1.to_q.", "attn1.to_k.", "attn1.to_v.")),
    ("cross_attn.kv_linear.", ("attn2.to_k.", "attn2.to_v.")),
]
_DROPPED = ("y_embedder.y_embedding", "pos_embed")
_BLOCK_ORIG = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BLOCK_DIFF = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


def is_original_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("blocks.", "x_embedder.", "t_block.")) for k in state)


def original_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        match = _BLOCK_ORIG.match(key)
        if match:
            index, rest = match.groups()
            prefix = f"transformer_blocks.{index}."
            if _map_fused(rest, value, prefix, out) or _map_prefix(rest, value, _IN_BLOCK, prefix, out):
                continue
        elif _map_prefix(key, value, _TOP_LEVEL, "", out):
            continue
        unknown.append(key)
    if unknown:
        raise hub.CheckpointError(
            f"original SANA checkpoint has keys with no diffusers equivalent: {unknown[:20]}"
            + (f" ... and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        )
    return out


def diffusers_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    fused_parts: dict[str, list[torch.Tensor | None]] = {}
    for key, value in state.items():
        match = _BLOCK_DIFF.match(key)
        if match:
            index, rest = match.groups()
            prefix = f"blocks.{index}."
            done = False
            for orig, parts in _FUSED:
                for i, part in enumerate(parts):
                    if rest.startswith(part):
                        name = prefix + orig + rest[len(part):]
                        fused_parts.setdefault(name, [None] * len(parts))[i] = value
                        done = True
            if done:
                continue
            for orig, diff in _IN_BLOCK:
                if rest.startswith(diff):
                    out[prefix + orig + rest[len(diff):]] = value
                    break
            else:
                raise hub.CheckpointError(f"diffusers key {key!r} has no original SANA equivalent")
            continue
        for orig, diff in _TOP_LEVEL:
            if key.startswith(diff):
                out[orig + key[len(diff):]] = value
                break
        else:
            raise hub.CheckpointError(f"diffusers key {key!r} has no original SANA equivalent")
    for name, parts in fused_parts.items():
        if any(p is None for p in parts):
            raise hub.CheckpointError(f"cannot build {name}: some of its q/k/v parts are missing")
        out[name] = torch.cat(parts, dim=0)
    return out


def _map_prefix(key, value, table, out_prefix, out) -> bool:
    for orig, diff in table:
        if key.startswith(orig):
            out[out_prefix + diff + key[len(orig):]] = value
            return True
    return False


def _map_fused(rest, value, prefix, out) -> bool:
    for orig, parts in _FUSED:
        if rest.startswith(orig):
            if value.shape[0] % len(parts):
                raise hub.CheckpointError(f"{prefix}{rest}: dim 0 ({value.shape[0]}) not divisible by {len(parts)}")
            for part, chunk in zip(parts, value.chunk(len(parts), dim=0)):
                out[prefix + part + rest[len(orig):]] = chunk.clone()
            return True
    return False


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A .pth/.pt/.bin (torch.load with weights_only=True) or .safetensors file -> flat state dict."""
    path = Path(path)
    if not path.exists():
        raise hub.CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return hub.load_file(path)[0]
    if path.suffix not in (".pth", ".pt", ".bin", ".ckpt"):
        raise hub.CheckpointError(
            f"{path}: expected a diffusers folder, a .pth/.pt/.bin original checkpoint or a .safetensors file"
        )
    try:
        try:  # memory-mapped: a multi-GB checkpoint is not read into RAM twice
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:  # noqa: BLE001 - torch raises many types for corrupt/unsafe files
        raise hub.CheckpointError(f"could not read {path} as a weights-only torch checkpoint: {err}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise hub.CheckpointError(f"{path} does not hold a state dict of tensors (or a 'state_dict' entry)")
    return dict(obj)


def infer_config(state: dict[str, torch.Tensor], what: str = "checkpoint") -> SanaTransformerConfig:
    """Architecture from diffusers-named weight shapes; cross-attention heads from the named config
    of the same width (the file does not record them)."""
    if "patch_embed.proj.weight" not in state or "transformer_blocks.0.attn1.to_q.weight" not in state:
        raise hub.CheckpointError(
            f"{what} does not look like a SANA transformer checkpoint (first keys: {list(state)[:5]})"
        )
    dim, in_channels, patch = state["patch_embed.proj.weight"].shape[:3]
    layers = 1 + max(int(_BLOCK_DIFF.match(k).group(1)) for k in state if _BLOCK_DIFF.match(k))
    hidden = state["transformer_blocks.0.ff.conv_inverted.weight"].shape[0] // 2
    named = [c for c in NAMED_CONFIGS.values() if c.inner_dim == dim and c.interpolation_scale is None]
    if not named:
        raise hub.CheckpointError(
            f"{what}: width {dim} matches no named SANA config ({', '.join(NAMED_CONFIGS)}); "
            "pass config=SanaTransformerConfig(...) to say how many cross-attention heads it has"
        )
    cfg = SanaTransformerConfig(
        in_channels=in_channels,
        out_channels=state["proj_out.weight"].shape[0] // patch**2,
        num_attention_heads=dim // 32,
        attention_head_dim=32,
        num_layers=layers,
        num_cross_attention_heads=named[0].num_cross_attention_heads,
        cross_attention_head_dim=named[0].cross_attention_head_dim,
        cross_attention_dim=dim,
        caption_channels=state["caption_projection.linear_1.weight"].shape[1],
        mlp_ratio=hidden / dim,
        attention_bias="transformer_blocks.0.attn1.to_q.bias" in state,
        patch_size=patch,
        qk_norm="rms_norm_across_heads" if "transformer_blocks.0.attn1.norm_q.weight" in state else None,
    )
    if int(cfg.mlp_ratio * dim) != hidden:
        raise hub.CheckpointError(f"{what}: FFN width {hidden} is not int(ratio * {dim}) for any float ratio")
    return cfg


def pos_embed_config(pos_embed: torch.Tensor, patch_size: int) -> tuple[int, float]:
    """(sample_size, interpolation_scale) for an original checkpoint that carries a `pos_embed`
    [1, N, C]: square grid of N tokens; scale = sample_size / 64 (2K -> 1.0, 4K -> 2.0)."""
    side = math.isqrt(pos_embed.shape[1])
    sample_size = side * patch_size
    return sample_size, sample_size / 64
