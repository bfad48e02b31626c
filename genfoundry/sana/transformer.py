"""SANA's linear diffusion transformer (parameter names = diffusers' `SanaTransformer2DModel`).

Block: x += gate_msa * LinearAttn(modulate(LN(x))); x += CrossAttn(x, text); x += gate_mlp *
MixFFN(modulate(LN(x)), H, W), with one shared adaLN-single timestep projection and a learned
per-block `scale_shift_table`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry import hub
from genfoundry.nn import (
    CrossAttention,
    GLUMBConv,
    LinearSelfAttention,
    RMSNorm,
    TimestepEmbedding,
    modulate,
    sincos_pos_embed_2d,
    text_mask_to_bias,
    timestep_sinusoidal,
)

DIFFUSERS_CLASS = "SanaTransformer2DModel"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


@dataclass
class SanaTransformerConfig:
    """Architecture of a SANA transformer. Field names and meanings follow diffusers' config.json."""

    in_channels: int = 32
    out_channels: int | None = 32
    num_attention_heads: int = 36
    attention_head_dim: int = 32
    num_layers: int = 28
    num_cross_attention_heads: int = 16
    cross_attention_head_dim: int = 72
    cross_attention_dim: int = 1152
    caption_channels: int = 2304
    mlp_ratio: float = 2.5
    attention_bias: bool = False
    sample_size: int = 32
    patch_size: int = 1
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    interpolation_scale: float | None = None  # None: no position embedding (NoPE); else sincos PE
    qk_norm: str | None = None  # SANA 1.5: "rms_norm_across_heads"
    timestep_scale: float = 1.0  # the pipeline multiplies timesteps by this before the model

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def out_dim(self) -> int:
        return self.out_channels or self.in_channels

    def validate(self) -> None:
        if self.cross_attention_dim != self.inner_dim:
            raise ValueError(
                f"cross_attention_dim ({self.cross_attention_dim}) must equal num_attention_heads * "
                f"attention_head_dim ({self.inner_dim}): the text is projected to the model width"
            )
        if self.num_cross_attention_heads * self.cross_attention_head_dim <= 0:
            raise ValueError("cross-attention heads and head dim must be positive")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")

    @classmethod
    def from_dict(cls, raw: dict, what: str = "config") -> SanaTransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if raw.get("guidance_embeds"):
            raise hub.CheckpointError(f"{what}: guidance_embeds=True (SANA-Sprint) is not supported")
        ignored = {"dropout", "guidance_embeds", "guidance_embeds_scale"}
        unknown = [k for k in raw if not k.startswith("_") and k not in known and k not in ignored]
        if unknown:
            warnings.warn(f"{what}: ignoring unknown SANA transformer config keys {unknown}", stacklevel=3)
        cfg = cls(**{k: v for k, v in raw.items() if k in known})
        cfg.validate()
        return cfg

    def to_diffusers_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(dropout=0.0, guidance_embeds=False, guidance_embeds_scale=0.1)
        return out


# Official shapes (REFERENCE.md). 1024px models are NoPE; the 4K model turns on sincos PE.
NAMED_CONFIGS: dict[str, SanaTransformerConfig] = {
    "sana-0.6b": SanaTransformerConfig(),
    "sana-1.6b": SanaTransformerConfig(
        num_attention_heads=70, num_layers=20, num_cross_attention_heads=20,
        cross_attention_head_dim=112, cross_attention_dim=2240,
    ),
    "sana-1.6b-4k": SanaTransformerConfig(
        num_attention_heads=70, num_layers=20, num_cross_attention_heads=20,
        cross_attention_head_dim=112, cross_attention_dim=2240, sample_size=128, interpolation_scale=2.0,
    ),
}


def named_config(name: str) -> SanaTransformerConfig:
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown SANA config {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    return dataclasses.replace(NAMED_CONFIGS[name])


class PatchEmbed(nn.Module):
    """Conv patchify (kernel = stride = p) to row-major tokens, plus optional sincos PE."""

    def __init__(self, cfg: SanaTransformerConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.inner_dim, cfg.patch_size, stride=cfg.patch_size)
        self.base_size = cfg.sample_size // cfg.patch_size
        self.interpolation_scale = cfg.interpolation_scale
        self._pe_cache: dict[tuple, torch.Tensor] = {}

    def position_embedding(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._pe_cache:
            self._pe_cache.clear()
            pe = sincos_pos_embed_2d(self.proj.out_channels, height, width, self.base_size,
                                     self.interpolation_scale, device=device)
            self._pe_cache[key] = pe[None]
        return self._pe_cache[key]

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.proj(latents)
        height, width = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if self.interpolation_scale is None:
            return x
        return (x + self.position_embedding(height, width, x.device)).to(x.dtype)


class AdaLNSingle(nn.Module):
    """Timestep -> (6C modulation shared by all blocks, C embedding for the final layer)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.emb = nn.Module()
        self.emb.timestep_embedder = TimestepEmbedding(256, dim)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.emb.timestep_embedder(timestep_sinusoidal(timestep, 256).to(dtype))
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(text), approximate="tanh"))


class SanaBlock(nn.Module):
    def __init__(self, cfg: SanaTransformerConfig) -> None:
        super().__init__()
        dim = cfg.inner_dim
        self.eps = cfg.norm_eps
        self.attn1 = LinearSelfAttention(dim, cfg.num_attention_heads, cfg.attention_head_dim,
                                         qkv_bias=cfg.attention_bias, qk_norm=cfg.qk_norm)
        self.attn2 = CrossAttention(dim, cfg.cross_attention_dim, cfg.num_cross_attention_heads,
                                    cfg.cross_attention_head_dim, qk_norm=cfg.qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.norm_elementwise_affine else None
        self.ff = GLUMBConv(dim, dim, cfg.mlp_ratio)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim).div_(dim**0.5))  # in place: on the meta device "/" imports torch._dynamo (~1 s)

    def forward(
        self,
        x: torch.Tensor,
        t6: torch.Tensor,
        context: torch.Tensor | None,
        context_bias: torch.Tensor | None,
        height: int,
        width: int,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        batch, _, dim = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t6.view(batch, 6, dim)
        ).chunk(6, dim=1)
        h = modulate(F.layer_norm(x, (dim,), eps=self.eps), shift_msa, scale_msa).to(x.dtype)
        x = torch.addcmul(x, gate_msa, self.attn1(h))
        x = x + self.attn2(x, context, context_bias, kv=context_kv)
        h = self.norm2(x) if self.norm2 is not None else F.layer_norm(x, (dim,), eps=self.eps)
        h = modulate(h, shift_mlp, scale_mlp)
        return torch.addcmul(x, gate_mlp, self.ff.forward_tokens(h, height, width))


@dataclass
class TextContext:
    """The text side of a SANA forward pass (see `SanaTransformer.encode_text`): per block the
    cross-attention keys and values [B, heads, L, head_dim], and the key bias [B, 1, 1, L] or None."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    bias: torch.Tensor | None

    @property
    def batch(self) -> int:
        return self.kv[0][0].shape[0] if self.kv else 0

    def rows(self, n: int) -> TextContext:
        """The first n rows (the layout-guided steps of a pipeline use more rows than the others)."""
        if n == self.batch:
            return self
        return TextContext([(k[:n], v[:n]) for k, v in self.kv], None if self.bias is None else self.bias[:n])


class SanaTransformer(nn.Module):
    """The SANA DiT. `forward(latents[B,C,H,W], timestep[B] in [0,1000), text[B,L,D], text_mask[B,L])`
    returns the flow velocity [B, C_out, H, W]."""

    # What SVDQuant leaves alone (glob patterns of module names, read by genfoundry.svdquant.quantize):
    # the embedders, the text-side cross-attention keys/values (computed once per image) and the output
    # projection stay in 16 bits; the adaLN-single projection gets 4-bit weights, 16-bit activations.
    quantization_skip = ("*patch_embed*", "*time_embed.emb*", "*caption_projection*", "proj_out",
                         "*attn2.to_k", "*attn2.to_v")
    quantization_weight_only = ("*time_embed.linear",)

    def __init__(self, config: SanaTransformerConfig | str | None = None) -> None:
        super().__init__()
        cfg = named_config(config) if isinstance(config, str) else (config or SanaTransformerConfig())
        cfg.validate()
        self.config = cfg
        dim = cfg.inner_dim
        self.patch_embed = PatchEmbed(cfg)
        self.time_embed = AdaLNSingle(dim)
        self.caption_projection = CaptionProjection(cfg.caption_channels, dim)
        self.caption_norm = RMSNorm(dim, eps=1e-5)
        self.transformer_blocks = nn.ModuleList([SanaBlock(cfg) for _ in range(cfg.num_layers)])
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim).div_(dim**0.5))
        self.proj_out = nn.Linear(dim, cfg.patch_size**2 * cfg.out_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj_out.weight.device

    def encode_text(self, text: torch.Tensor, text_mask: torch.Tensor | None = None) -> TextContext:
        """What every denoising step computes from the text alone: the caption projection, every
        block's cross-attention keys and values, and the key bias. A sampler computes it once per
        generation and passes it as `forward(..., text_context=...)`: same output, fewer FLOPs."""
        self._check_text(text, text_mask, text.shape[0] if text.ndim == 3 else -1)
        return self._encode_text(text, text_mask)

    def _encode_text(self, text: torch.Tensor, text_mask: torch.Tensor | None) -> TextContext:
        if text_mask is not None and text.device.type == "cpu" and not torch.compiler.is_compiling():
            text, text_mask = trim_text_padding(text, text_mask)
        context = self.caption_norm(self.caption_projection(text.to(self.dtype)))
        kv = [block.attn2.project_context(context) for block in self.transformer_blocks]
        return TextContext(kv, text_mask_to_bias(text_mask, self.dtype))

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        text_context: TextContext | None = None,
    ) -> torch.Tensor:
        """`text` [B, L, caption_channels] with `text_mask` [B, L], or instead `text_context` from
        `encode_text` (the same for every step of a generation)."""
        cfg = self.config
        batch, channels, height, width = self._check_inputs(latents, text, text_mask, text_context)
        p = cfg.patch_size
        timestep = torch.as_tensor(timestep, device=latents.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        x = self.patch_embed(latents)
        t6, t_emb = self.time_embed(timestep.reshape(batch), x.dtype)
        if text_context is None:
            text_context = self._encode_text(text, text_mask)  # _check_inputs checked the text
        grid_h, grid_w = height // p, width // p
        for block, kv in zip(self.transformer_blocks, text_context.kv):
            x = block(x, t6, None, text_context.bias, grid_h, grid_w, context_kv=kv)
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
        x = modulate(F.layer_norm(x, (x.shape[-1],), eps=1e-6), shift, scale)
        x = self.proj_out(x)
        x = x.view(batch, grid_h, grid_w, p, p, cfg.out_dim).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(batch, cfg.out_dim, height, width)

    def _check_inputs(self, latents, text, text_mask, text_context) -> tuple[int, int, int, int]:
        cfg = self.config
        if latents.ndim != 4 or latents.shape[1] != cfg.in_channels:
            raise ValueError(f"latents must be [B, {cfg.in_channels}, H, W], got {tuple(latents.shape)}")
        batch, channels, height, width = latents.shape
        if height % cfg.patch_size or width % cfg.patch_size:
            raise ValueError(f"latent size {height}x{width} is not a multiple of patch_size {cfg.patch_size}")
        if text_context is None:
            if text is None:
                raise ValueError("give the text embeddings (text, text_mask) or a text_context from encode_text")
            self._check_text(text, text_mask, batch)
        elif text is not None:
            raise ValueError("give either text (and text_mask) or text_context, not both")
        elif not isinstance(text_context, TextContext) or len(text_context.kv) != cfg.num_layers:
            raise ValueError("text_context must come from this model's encode_text")
        elif text_context.batch != batch:
            raise ValueError(f"text_context holds {text_context.batch} rows but latents have {batch}; "
                             "slice it with text_context.rows(n)")
        return batch, channels, height, width

    def _check_text(self, text, text_mask, batch: int) -> None:
        cfg = self.config
        if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != cfg.caption_channels:
            raise ValueError(
                f"text must be [{batch}, L, {cfg.caption_channels}], got {tuple(text.shape)}"
            )
        if text_mask is not None and tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"text_mask must be {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")

    # ------------------------------------------------------------------------------------------
    # checkpoints

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        config: SanaTransformerConfig | str | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> SanaTransformer:
        """Load a diffusers folder (config.json + safetensors, or a pipeline folder's transformer/),
        or an original SANA .pth / .safetensors (`config` names the architecture where the file
        cannot tell it, e.g. "sana-1.6b"; otherwise it is inferred from the weights' shapes)."""
        from genfoundry.sana import convert

        path = hub.resolve(path)
        if path.is_dir():
            if not (path / CONFIG_NAME).exists() and (path / "transformer" / CONFIG_NAME).exists():
                path = path / "transformer"
            cfg = read_config(path) if config is None else _as_config(config)
            state = _read_diffusers_weights(path)
        else:
            state = convert.read_original_checkpoint(path)
            pos_embed = state.get("pos_embed")
            if convert.is_original_layout(state):
                state = convert.original_to_diffusers(state)
            if config is not None:
                cfg = _as_config(config)
            else:
                cfg = convert.infer_config(state, what=str(path))
                if pos_embed is not None:  # the original keeps a PE buffer only when PE is on
                    cfg.sample_size, cfg.interpolation_scale = convert.pos_embed_config(pos_embed, cfg.patch_size)
        return cls.from_state_dict(state, cfg, dtype=dtype, device=device, what=str(path))

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, torch.Tensor],
        config: SanaTransformerConfig | str,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        what: str = "state dict",
    ) -> SanaTransformer:
        """Build on the meta device (no random init) and adopt the given tensors."""
        with torch.device("meta"):
            model = cls(_as_config(config))
        hub.check_state_dict(state, model.state_dict(), what)
        model.load_state_dict(state, assign=True)
        return model.to(device=device, dtype=dtype).eval()

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the diffusers layout: config.json + diffusion_pytorch_model.safetensors (floating-point
        weights cast to `dtype` on disk when given)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        hub.write_json_atomic(path / CONFIG_NAME, {
            "_class_name": DIFFUSERS_CLASS, "_diffusers_version": _diffusers_version(),
            **self.config.to_diffusers_dict(),
        })
        hub.save_file(hub.cast_floating(self.state_dict(), dtype), path / WEIGHTS_NAME, metadata={"format": "pt"})
        return path


def trim_text_padding(text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing positions masked out in every row (right padding). Masked keys get exactly zero
    attention weight, so the output is unchanged while the text projections and cross-attention
    shrink from the padded length (300) to the longest prompt. Needs a host sync: CPU only."""
    keep = mask != 0
    used = keep.any(dim=0)
    if bool(used.all()) or not bool(used.any()):
        return text, mask
    length = int(used.nonzero().max()) + 1
    return text[:, :length], mask[:, :length]


def _as_config(config: SanaTransformerConfig | str) -> SanaTransformerConfig:
    return named_config(config) if isinstance(config, str) else config


def _diffusers_version() -> str:
    try:
        import diffusers

        return diffusers.__version__
    except ImportError:
        return "0.32.0"


def read_config(folder: Path) -> SanaTransformerConfig:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists():
        raise hub.CheckpointError(f"{folder} has no {CONFIG_NAME}: not a diffusers transformer folder")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise hub.CheckpointError(f"{cfg_path} is not valid JSON: {err}") from None
    found = raw.get("_class_name")
    if found is not None and found != DIFFUSERS_CLASS:
        raise hub.CheckpointError(
            f"{folder} holds a {found} checkpoint, expected a SANA transformer ({DIFFUSERS_CLASS})"
        )
    if found is None and "num_attention_heads" not in raw:
        raise hub.CheckpointError(f"{cfg_path} does not describe a SANA transformer (no num_attention_heads)")
    return SanaTransformerConfig.from_dict(raw, what=str(cfg_path))


def _read_diffusers_weights(folder: Path) -> dict[str, torch.Tensor]:
    single, index = folder / WEIGHTS_NAME, folder / WEIGHTS_INDEX_NAME
    if single.exists():
        return hub.load_file(single)[0]
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(hub.load_file(folder / shard)[0])
        return state
    # variant files (e.g. diffusion_pytorch_model.bf16.safetensors, or its sharded index)
    indexes = sorted(folder.glob("diffusion_pytorch_model*.safetensors.index*.json"))
    singles = sorted(folder.glob("diffusion_pytorch_model.*.safetensors"))
    if len(indexes) == 1:
        state = {}
        for shard in sorted(set(json.loads(indexes[0].read_text())["weight_map"].values())):
            state.update(hub.load_file(folder / shard)[0])
        return state
    if len(singles) == 1:
        return hub.load_file(singles[0])[0]
    found = ", ".join(p.name for p in indexes + singles) or "none"
    raise hub.CheckpointError(
        f"{folder} has neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME} nor exactly one variant file (found: {found})"
    )
