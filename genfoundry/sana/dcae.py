"""DC-AE: the deep-compression autoencoder of SANA (32x spatial compression in the official model).

`DCAE.encode(images in [-1, 1]) -> latents` and `DCAE.decode(latents) -> images` work on RAW latents:
neither multiplies by `config.scaling_factor`. Whoever feeds latents to a diffusion model applies it
(`z_model = encode(x) * scaling_factor`, `x = decode(z_model / scaling_factor)`), as diffusers'
pipelines do with `AutoencoderDC`.

Configs: `DCAEConfig.named("dc-ae-f32c32")` (the official SANA autoencoder, ~312M parameters),
`DCAEConfig.make(compression=8..64, latent_channels, widths, ...)` for any SANA-style size, and
`DCAEConfig.tiny(...)` for tests and 64x64 ShapeWorld training; `DCAE.from_config(config, seed=...)`.

Checkpoints are diffusers `AutoencoderDC` folders (`config.json` + `diffusion_pytorch_model.safetensors`)
both ways: `DCAE.from_pretrained` reads one, `save_pretrained` writes one that diffusers loads.

Tiling (`decode(z, tile=True)`, `enable_tiling(...)`): the input is cut into overlapping tiles, each
tile runs through the network alone, and the outputs are blended with linear ramps across the middle
of every overlap, so memory is bounded by one tile's activations plus the output. Conv layers see zero
padding at tile borders and the linear attention of the EfficientViT stages only sees its own tile (it
is global in the untiled model), so tiled output approximates the untiled one; larger tiles and
overlaps bring it closer. `global_attention=True` runs the low-resolution attention stages untiled and
tiles only the high-resolution conv stages: attention stays exact and the seams vanish once the overlap
covers the conv receptive field, at the price of memory that grows (slowly) with the image. An input no
larger than one tile runs untiled (identical results).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from genfoundry import hub
from genfoundry.sana.dcae_blocks import ACTIVATIONS, BLOCK_TYPES, NORM_TYPES, Decoder, Encoder

DIFFUSERS_CLASS = "AutoencoderDC"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
# The first diffusers release with AutoencoderDC; written when diffusers is not installed.
MIN_DIFFUSERS_VERSION = "0.32.0"

DOWNSAMPLE_TYPES = ("pixel_unshuffle", "conv", "Conv")
UPSAMPLE_TYPES = ("pixel_shuffle", "interpolate")

# Default tiling, in latent pixels: 32x32-latent tiles (1024 px at f32) overlapping by 8 latents.
DEFAULT_TILE_LATENTS = 32
DEFAULT_OVERLAP_LATENTS = 8

_PerStage = tuple[str, ...]


@dataclass
class DCAEConfig:
    """Architecture of a DC-AE. Field names and defaults are those of diffusers' `AutoencoderDC`.

    Per-stage fields (`*_block_types`, `decoder_norm_types`, `decoder_act_fns`) accept one string for
    every stage; lists become tuples. Stage i of S has width `*_block_out_channels[i]` and runs
    `*_layers_per_block[i]` blocks; the spatial compression is 2^(S-1).
    """

    in_channels: int = 3
    latent_channels: int = 32
    attention_head_dim: int = 32
    encoder_block_types: str | _PerStage = "ResBlock"
    decoder_block_types: str | _PerStage = "ResBlock"
    encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    upsample_block_type: str = "pixel_shuffle"
    downsample_block_type: str = "pixel_unshuffle"
    decoder_norm_types: str | _PerStage = "rms_norm"
    decoder_act_fns: str | _PerStage = "silu"
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    decoder_conv_act_fn: str = "relu"
    scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        stages = len(self.encoder_block_out_channels)

        def per_stage(value) -> tuple:
            return (value,) * stages if isinstance(value, str) else tuple(value)

        self.encoder_block_out_channels = tuple(int(w) for w in self.encoder_block_out_channels)
        self.decoder_block_out_channels = tuple(int(w) for w in self.decoder_block_out_channels)
        self.encoder_layers_per_block = tuple(int(n) for n in self.encoder_layers_per_block)
        self.decoder_layers_per_block = tuple(int(n) for n in self.decoder_layers_per_block)
        self.encoder_qkv_multiscales = tuple(tuple(int(k) for k in s) for s in self.encoder_qkv_multiscales)
        self.decoder_qkv_multiscales = tuple(tuple(int(k) for k in s) for s in self.decoder_qkv_multiscales)
        self.encoder_block_types = per_stage(self.encoder_block_types)
        self.decoder_block_types = per_stage(self.decoder_block_types)
        self.decoder_norm_types = per_stage(self.decoder_norm_types)
        self.decoder_act_fns = per_stage(self.decoder_act_fns)
        self.scaling_factor = float(self.scaling_factor)
        self.validate()

    @property
    def spatial_compression_ratio(self) -> int:
        return 2 ** (len(self.encoder_block_out_channels) - 1)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field (and what it must be)."""
        stages = len(self.encoder_block_out_channels)
        if stages < 1:
            raise ValueError("DCAEConfig needs at least one stage in encoder_block_out_channels")
        if len(self.decoder_block_out_channels) != stages:
            raise ValueError(
                f"encoder has {stages} stages but decoder_block_out_channels has "
                f"{len(self.decoder_block_out_channels)}: both sides must change resolution the same number of times"
            )
        for side in ("encoder", "decoder"):
            for name in ("block_types", "layers_per_block", "qkv_multiscales"):
                value = getattr(self, f"{side}_{name}")
                if len(value) != stages:
                    raise ValueError(f"{side}_{name} has {len(value)} entries, expected one per stage ({stages})")
        for name in ("decoder_norm_types", "decoder_act_fns"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected one per stage ({stages})")
        for value in (*self.encoder_block_types, *self.decoder_block_types):
            if value not in BLOCK_TYPES:
                raise ValueError(f"unknown block type {value!r}: expected one of {BLOCK_TYPES}")
        for value in self.decoder_norm_types:
            if value not in NORM_TYPES:
                raise ValueError(f"unknown decoder norm type {value!r}: expected one of {NORM_TYPES}")
        for value in (*self.decoder_act_fns, self.decoder_conv_act_fn):
            if value not in ACTIVATIONS:
                raise ValueError(f"unknown activation {value!r}: expected one of {sorted(ACTIVATIONS)}")
        if self.downsample_block_type not in DOWNSAMPLE_TYPES:
            raise ValueError(
                f"downsample_block_type must be one of {DOWNSAMPLE_TYPES}, got {self.downsample_block_type!r}"
            )
        if self.upsample_block_type not in UPSAMPLE_TYPES:
            raise ValueError(f"upsample_block_type must be one of {UPSAMPLE_TYPES}, got {self.upsample_block_type!r}")
        if min(self.in_channels, self.latent_channels, self.attention_head_dim) < 1:
            raise ValueError("in_channels, latent_channels and attention_head_dim must be positive")
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor must be positive, got {self.scaling_factor}")
        for side in ("encoder", "decoder"):
            self._validate_side(side)

    def _validate_side(self, side: str) -> None:
        widths = getattr(self, f"{side}_block_out_channels")
        layers = getattr(self, f"{side}_layers_per_block")
        types = getattr(self, f"{side}_block_types")
        stages = len(widths)
        if min(widths) < 1 or min(layers) < 0:
            raise ValueError(f"{side}: widths must be positive and layer counts >= 0, got {widths} / {layers}")
        if any(n == 0 for n in layers[1:]) or (layers[0] == 0 and stages < 2):
            # diffusers skips the downsample of an empty stage, which would silently change the compression.
            raise ValueError(f"{side}_layers_per_block: only the first stage may have 0 layers, got {layers}")
        for i in range(stages):
            if types[i] == "EfficientViTBlock" and layers[i] and widths[i] % self.attention_head_dim:
                raise ValueError(
                    f"{side} stage {i}: width {widths[i]} must be a multiple of attention_head_dim "
                    f"{self.attention_head_dim} for EfficientViT blocks"
                )
        pixel_unshuffle = self.downsample_block_type == "pixel_unshuffle"
        for i in range(stages - 1):
            small, large = widths[i], widths[i + 1]
            # down shortcut averages groups of 4*small/large channels; up shortcut repeats 4*large/small times
            if side == "encoder" and (4 * small) % large:
                raise ValueError(
                    f"encoder stage {i}->{i + 1}: 4 * {small} must be divisible by {large} (channel-mean shortcut)"
                )
            if side == "encoder" and pixel_unshuffle and large % 4:
                raise ValueError(f"encoder stage {i + 1}: width {large} must be a multiple of 4 for pixel_unshuffle")
            if side == "decoder" and (4 * small) % large:
                raise ValueError(
                    f"decoder stage {i + 1}->{i}: 4 * {small} must be divisible by {large} (channel-repeat shortcut)"
                )
        shortcut = self.encoder_out_shortcut if side == "encoder" else self.decoder_in_shortcut
        if shortcut and widths[-1] % self.latent_channels:
            raise ValueError(
                f"{side} last width {widths[-1]} must be a multiple of latent_channels {self.latent_channels} "
                f"for the {'output' if side == 'encoder' else 'input'} shortcut"
            )

    # ------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_dict(cls, raw: Mapping, what: str = "config") -> DCAEConfig:
        """From a diffusers `config.json` dict: `_`-prefixed keys are ignored, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
        if unknown:
            raise hub.CheckpointError(f"{what}: unknown DC-AE config keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (TypeError, ValueError) as err:
            raise hub.CheckpointError(f"{what}: invalid DC-AE config: {err}") from None

    def to_diffusers_dict(self) -> dict:
        """JSON-ready dict with diffusers' key names (tuples as lists)."""

        def plain(value):
            return [plain(v) for v in value] if isinstance(value, tuple) else value

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def named(cls, name: str) -> DCAEConfig:
        """An official architecture by name (see `NAMED_CONFIGS`)."""
        if name not in NAMED_CONFIGS:
            raise ValueError(f"unknown DC-AE config {name!r}: expected one of {sorted(NAMED_CONFIGS)}")
        return NAMED_CONFIGS[name]()

    @classmethod
    def make(
        cls,
        compression: int = 32,
        latent_channels: int = 32,
        widths: tuple[int, ...] | None = None,
        base_width: int = 128,
        encoder_depth: int | tuple[int, ...] = 2,
        decoder_depth: int | tuple[int, ...] = 3,
        attention_stages: int | None = None,
        head_dim: int = 32,
        multiscales: tuple[int, ...] = (5,),
        downsample: str = "conv",
        upsample: str = "interpolate",
        scaling_factor: float = 1.0,
        in_channels: int = 3,
    ) -> DCAEConfig:
        """A SANA-style DC-AE for any power-of-two compression (f8 .. f64 and beyond).

        log2(compression) + 1 stages; widths default to base_width x (1, 2, 4, 4, 8, 8, 16, 16, ...)
        like the official model; the last `attention_stages` stages (default: half, rounded down) use
        EfficientViT blocks with multi-scale q/k/v, the rest ResBlocks.
        """
        if compression < 1 or compression & (compression - 1):
            raise ValueError(f"compression must be a power of two (8, 16, 32, 64, ...), got {compression}")
        stages = int(math.log2(compression)) + 1
        if widths is None:
            widths = tuple(base_width * (2**i if i < 2 else 4 * 2 ** ((i - 2) // 2)) for i in range(stages))
        if len(widths) != stages:
            raise ValueError(f"f{compression} needs {stages} widths (one per stage), got {len(widths)}: {widths}")
        n_attn = stages // 2 if attention_stages is None else attention_stages
        if not 0 <= n_attn <= stages:
            raise ValueError(f"attention_stages must be in [0, {stages}], got {n_attn}")
        types = ("ResBlock",) * (stages - n_attn) + ("EfficientViTBlock",) * n_attn
        scales = ((),) * (stages - n_attn) + (tuple(multiscales),) * n_attn

        def depths(depth):
            return (depth,) * stages if isinstance(depth, int) else tuple(depth)

        return cls(
            in_channels=in_channels,
            latent_channels=latent_channels,
            attention_head_dim=head_dim,
            encoder_block_types=types,
            decoder_block_types=types,
            encoder_block_out_channels=tuple(widths),
            decoder_block_out_channels=tuple(widths),
            encoder_layers_per_block=depths(encoder_depth),
            decoder_layers_per_block=depths(decoder_depth),
            encoder_qkv_multiscales=scales,
            decoder_qkv_multiscales=scales,
            downsample_block_type=downsample,
            upsample_block_type=upsample,
            scaling_factor=scaling_factor,
        )

    @classmethod
    def tiny(
        cls,
        compression: int = 8,
        latent_channels: int = 4,
        base_width: int = 16,
        depth: int = 1,
        head_dim: int = 8,
        **overrides,
    ) -> DCAEConfig:
        """A small SANA-style DC-AE for tests and ShapeWorld (64x64) training; see `make` for options."""
        return cls.make(
            compression=compression,
            latent_channels=latent_channels,
            base_width=base_width,
            encoder_depth=depth,
            decoder_depth=depth,
            head_dim=head_dim,
            **overrides,
        )


def _dc_ae_f32c32() -> DCAEConfig:
    """dc-ae-f32c32-sana-1.0 (the config of mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers)."""
    types = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    return DCAEConfig(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=types,
        decoder_block_types=types,
        encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block=(2, 2, 2, 3, 3, 3),
        decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        downsample_block_type="Conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )


NAMED_CONFIGS: dict[str, Callable[[], DCAEConfig]] = {
    "dc-ae-f32c32": _dc_ae_f32c32,
    "dc-ae-f32c32-sana-1.0": _dc_ae_f32c32,
}


# ----------------------------------------------------------------------------------------------
# tiling


@dataclass(frozen=True)
class Tiling:
    """Tile size and overlap in image pixels (multiples of the compression ratio); see `DCAE.decode`."""

    tile_size: int
    tile_overlap: int
    global_attention: bool = False


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of `tile` cells covering `length` cells; the last tile ends at `length`."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def blend_weights(starts: list[int], tile: int, length: int, scale: int = 1) -> list[torch.Tensor]:
    """Per-tile 1-D weights at output resolution (`scale` output pixels per cell); they sum to 1.

    Where two tiles overlap by L output pixels, each tile ignores the L/4 pixels next to its own edge
    (the pixels zero padding disturbs most) and the two are blended by a linear ramp across the
    central L/2: weights (i + 0.5) / ramp and 1 - (i + 0.5) / ramp. Elsewhere a tile has weight 1.
    """
    size = tile * scale
    pos = torch.arange(size, dtype=torch.float64) + 0.5
    weights = []
    for n, start in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        neighbours = []
        if n > 0:
            neighbours.append((starts[n - 1] + tile - start, pos))
        if n < len(starts) - 1:
            neighbours.append((start + tile - starts[n + 1], size - pos))
        for overlap_cells, distance in neighbours:
            overlap = overlap_cells * scale
            if overlap <= 0:
                continue
            margin = overlap // 4
            ramp = overlap - 2 * margin
            w = torch.minimum(w, ((distance - margin) / ramp).clamp(0, 1))
        # A floor keeps every covered pixel's total positive even where three tiles overlap.
        weights.append(w.clamp_min(1e-6))
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, w in zip(starts, weights):
        total[start * scale : start * scale + size] += w
    return [(w / total[start * scale : start * scale + size]).float() for start, w in zip(starts, weights)]


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    in_scale: int,
    out_scale: int,
    tile: int,
    overlap: int,
    what: str = "tiles",
) -> torch.Tensor:
    """Apply `fn` to overlapping tiles of `x` and blend the outputs.

    The tile grid lives in coarse (latent) cells: a cell is `in_scale` input pixels and `out_scale`
    output pixels (decode: 1 -> f; encode: f -> 1). `tile` and `overlap` count cells.
    """
    batch, _, height, width = x.shape
    rows, cols = height // in_scale, width // in_scale
    tile_h, tile_w = min(tile, rows), min(tile, cols)
    stride = tile - overlap
    ys, xs = tile_starts(rows, tile_h, stride), tile_starts(cols, tile_w, stride)
    wy = blend_weights(ys, tile_h, rows, out_scale)
    wx = blend_weights(xs, tile_w, cols, out_scale)
    out = None
    with tqdm(total=len(ys) * len(xs), desc=what, disable=None if len(ys) * len(xs) > 1 else True) as bar:
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                part = fn(x[..., y0 * in_scale : (y0 + tile_h) * in_scale, x0 * in_scale : (x0 + tile_w) * in_scale])
                if out is None:  # accumulate half-precision tiles in fp32
                    acc = torch.float32 if part.dtype in (torch.float16, torch.bfloat16) else part.dtype
                    out = part.new_zeros(batch, part.shape[1], rows * out_scale, cols * out_scale, dtype=acc)
                weight = (wy[i][:, None] * wx[j][None, :]).to(part.device, out.dtype)
                ys_out = slice(y0 * out_scale, (y0 + tile_h) * out_scale)
                xs_out = slice(x0 * out_scale, (x0 + tile_w) * out_scale)
                out[..., ys_out, xs_out] += part * weight
                bar.update()
    return out.to(part.dtype)


# ----------------------------------------------------------------------------------------------
# the model


class DCAE(nn.Module):
    """Deep-compression autoencoder: `encode` images [B, 3, H, W] in [-1, 1] to raw latents
    [B, latent_channels, H/f, W/f], `decode` them back (f = `spatial_compression_ratio`).

    Latents are NOT scaled: multiply by `config.scaling_factor` before a diffusion model, divide after.
    """

    def __init__(self, config: DCAEConfig | str) -> None:
        super().__init__()
        if isinstance(config, str):
            config = DCAEConfig.named(config)
        if not isinstance(config, DCAEConfig):
            raise TypeError(f"DCAE needs a DCAEConfig or a config name, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(
            in_channels=config.in_channels,
            latent_channels=config.latent_channels,
            head_dim=config.attention_head_dim,
            block_types=config.encoder_block_types,
            widths=config.encoder_block_out_channels,
            layers=config.encoder_layers_per_block,
            multiscales=config.encoder_qkv_multiscales,
            pixel_unshuffle=config.downsample_block_type == "pixel_unshuffle",
            out_shortcut=config.encoder_out_shortcut,
        )
        self.decoder = Decoder(
            out_channels=config.in_channels,
            latent_channels=config.latent_channels,
            head_dim=config.attention_head_dim,
            block_types=config.decoder_block_types,
            widths=config.decoder_block_out_channels,
            layers=config.decoder_layers_per_block,
            multiscales=config.decoder_qkv_multiscales,
            norm_types=config.decoder_norm_types,
            act_fns=config.decoder_act_fns,
            interpolate=config.upsample_block_type == "interpolate",
            in_shortcut=config.decoder_in_shortcut,
            conv_act_fn=config.decoder_conv_act_fn,
        )
        self.tiling: Tiling | None = None

    @classmethod
    def from_config(cls, config: DCAEConfig | Mapping | str, seed: int | None = None) -> DCAE:
        """A randomly initialised model (seeded when `seed` is given) from a config, dict or config name."""
        if isinstance(config, Mapping):
            config = DCAEConfig.from_dict(config)
        if seed is None:
            return cls(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config)

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.spatial_compression_ratio

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------------------------------
    # encode / decode

    def enable_tiling(
        self, tile_size: int | None = None, tile_overlap: int | None = None, global_attention: bool = False
    ) -> None:
        """Tile every later encode/decode larger than one tile (sizes in image pixels; see `decode`)."""
        self.tiling = self._tiling(tile_size, tile_overlap, global_attention)

    def disable_tiling(self) -> None:
        self.tiling = None

    def _tiling(self, tile_size: int | None, tile_overlap: int | None, global_attention: bool | None) -> Tiling:
        f = self.spatial_compression_ratio
        base = self.tiling or Tiling(DEFAULT_TILE_LATENTS * f, DEFAULT_OVERLAP_LATENTS * f)
        size = base.tile_size if tile_size is None else int(tile_size)
        overlap = base.tile_overlap if tile_overlap is None else int(tile_overlap)
        if tile_size is not None and tile_overlap is None:
            overlap = min(overlap, (size // f // 4) * f)  # keep the default overlap a quarter tile at most
        if size < f or size % f:
            raise ValueError(f"tile_size must be a positive multiple of the compression {f} (pixels), got {size}")
        if overlap < 0 or overlap % f or overlap >= size:
            raise ValueError(
                f"tile_overlap must be a multiple of {f} in [0, tile_size={size}) (pixels), got {overlap}"
            )
        exact = base.global_attention if global_attention is None else bool(global_attention)
        return Tiling(size, overlap, exact)

    def _choose_tiling(
        self, tile: bool | None, tile_size: int | None, tile_overlap: int | None, global_attention: bool | None
    ) -> Tiling | None:
        if tile is False:
            return None
        if tile or tile_size is not None or tile_overlap is not None or global_attention is not None:
            return self._tiling(tile_size, tile_overlap, global_attention)
        return self.tiling

    def _split_scale(self, split: int) -> int:
        """Pixels per feature pixel at the boundary before stage `split` (encoder) / after it (decoder)."""
        return 2 ** min(split, len(self.config.encoder_block_out_channels) - 1)

    def encode(
        self,
        images: torch.Tensor,
        tile: bool | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        global_attention: bool | None = None,
    ) -> torch.Tensor:
        """images [B, in_channels, H, W] in [-1, 1], H and W multiples of f -> raw latents [B, C, H/f, W/f].

        Tiling options as in `decode` (sizes in input pixels).
        """
        f = self.spatial_compression_ratio
        _check_image_like(images, self.config.in_channels, "images", "in_channels", multiple=f)
        self._check_device(images, "images")
        tiling = self._choose_tiling(tile, tile_size, tile_overlap, global_attention)
        images = images.to(self.dtype)
        if tiling is None:
            return self.encoder(images)
        if not tiling.global_attention:
            tile, overlap = tiling.tile_size // f, tiling.tile_overlap // f
            return run_tiled(self.encoder, images, f, 1, tile, overlap, "encode tiles")
        split = self.encoder.first_attention_stage()
        s = self._split_scale(split)
        features = run_tiled(
            lambda x: self.encoder.forward_convs(x, split), images, s, 1,
            tiling.tile_size // s, tiling.tile_overlap // s, "encode tiles",
        )
        return self.encoder.forward_rest(features, split)

    def decode(
        self,
        latents: torch.Tensor,
        tile: bool | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        global_attention: bool | None = None,
    ) -> torch.Tensor:
        """Raw latents [B, latent_channels, h, w] -> images [B, in_channels, h*f, w*f] (about [-1, 1]).

        Tiling: `tile=True`, or any of `tile_size` / `tile_overlap` (output pixels, multiples of f) /
        `global_attention`, tiles this call; `tile=None` follows `enable_tiling`; `tile=False` never tiles.
        - `global_attention=False` (default): the whole network runs per tile; memory is bounded by one
          tile whatever the image size, and the attention of each tile sees only that tile.
        - `global_attention=True`: the low-resolution stages up to the last one with attention run on
          the whole input (exact global attention; their memory grows with the image, at 1/16 to
          1/64 of its pixels for dc-ae-f32c32) and only the high-resolution conv stages are tiled,
          which matches untiled output closely once the overlap covers their receptive field.
        """
        f = self.spatial_compression_ratio
        _check_image_like(latents, self.config.latent_channels, "latents", "latent_channels", multiple=1)
        self._check_device(latents, "latents")
        tiling = self._choose_tiling(tile, tile_size, tile_overlap, global_attention)
        latents = latents.to(self.dtype)
        if tiling is None:
            return self.decoder(latents)
        if not tiling.global_attention:
            tile, overlap = tiling.tile_size // f, tiling.tile_overlap // f
            return run_tiled(self.decoder, latents, 1, f, tile, overlap, "decode tiles")
        split = self.decoder.first_attention_stage()
        s = self._split_scale(split)
        features = self.decoder.forward_head(latents, split)
        return run_tiled(
            lambda x: self.decoder.forward_convs(x, split), features, 1, s,
            tiling.tile_size // s, tiling.tile_overlap // s, "decode tiles",
        )

    def _check_device(self, x: torch.Tensor, what: str) -> None:
        if x.device != self.device:
            raise ValueError(f"{what} are on {x.device} but the DC-AE is on {self.device}: move one to the other")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction decode(encode(images)) (for training)."""
        return self.decode(self.encode(images))

    # ------------------------------------------------------------------------------------------
    # checkpoints

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> DCAE:
        """Load a diffusers `AutoencoderDC` folder (or a pipeline folder with a `vae/` sub-folder).

        `path` may also be a zoo name or a cached Hugging Face repo id (see `genfoundry.hub.resolve`).
        The model is built on the meta device and adopts the checkpoint tensors (no random init);
        `dtype=None` keeps the stored dtype.
        """
        folder = _find_folder(hub.resolve(path))
        config = read_config(folder)
        state = _read_weights(folder)
        return cls.from_state_dict(state, config, dtype=dtype, device=device, what=str(folder))

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        config: DCAEConfig | str,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        what: str = "state dict",
    ) -> DCAE:
        """Build on the meta device and adopt `state` (diffusers key names); clear error on any mismatch."""
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        hub.check_state_dict(state, expected, f"DC-AE checkpoint {what}", allow_missing=_is_batch_counter)
        tensors = dict(state)
        for key in expected:
            if key not in tensors:  # BatchNorm's num_batches_tracked: a counter some exports drop
                tensors[key] = torch.zeros((), dtype=torch.long)
        tensors = {
            k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
            for k, v in tensors.items()
        }
        model.load_state_dict(tensors, assign=True)
        return model.eval()

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the diffusers layout (config.json + diffusion_pytorch_model.safetensors; floating-point
        weights cast to `dtype` on disk when given)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        hub.write_json_atomic(
            path / CONFIG_NAME,
            {
                "_class_name": DIFFUSERS_CLASS,
                "_diffusers_version": _diffusers_version(),
                **self.config.to_diffusers_dict(),
            },
        )
        hub.save_file(hub.cast_floating(self.state_dict(), dtype), path / WEIGHTS_NAME, metadata={"format": "pt"})
        return path


def _check_image_like(x: torch.Tensor, channels: int, what: str, field_name: str, multiple: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [B, {channels}, H, W], got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{what} must be 4-D [B, {channels}, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{what} have {x.shape[1]} channels but this DC-AE expects {channels} ({field_name}); "
            f"shape {tuple(x.shape)} must be [B, {channels}, H, W]"
        )
    height, width = x.shape[-2:]
    if height < multiple or width < multiple or height % multiple or width % multiple:
        raise ValueError(
            f"{what} size {height}x{width} is not a multiple of the DC-AE compression {multiple}: "
            f"height and width must be positive multiples of {multiple}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {x.dtype}")


def _is_batch_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _diffusers_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("diffusers")
    except PackageNotFoundError:
        return MIN_DIFFUSERS_VERSION


def _find_folder(path: Path) -> Path:
    if path.is_file():
        if path.name != CONFIG_NAME:
            raise hub.CheckpointError(
                f"{path} is a file; DCAE.from_pretrained expects a diffusers AutoencoderDC folder "
                f"({CONFIG_NAME} + {WEIGHTS_NAME})"
            )
        path = path.parent
    if not (path / CONFIG_NAME).exists() and (path / "vae" / CONFIG_NAME).exists():
        path = path / "vae"
    if not (path / CONFIG_NAME).exists():
        raise hub.CheckpointError(
            f"{path} has no {CONFIG_NAME}: expected a diffusers AutoencoderDC folder or a pipeline folder with vae/"
        )
    return path


def read_config(folder: Path) -> DCAEConfig:
    """The DCAEConfig of a diffusers AutoencoderDC folder; CheckpointError for another model's folder."""
    cfg_path = folder / CONFIG_NAME
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise hub.CheckpointError(f"cannot read {cfg_path}: {err}") from None
    if not isinstance(raw, dict):
        raise hub.CheckpointError(f"{cfg_path} must hold a JSON object, got {type(raw).__name__}")
    found = raw.get("_class_name")
    if found is not None and found != DIFFUSERS_CLASS:
        raise hub.CheckpointError(
            f"{folder} holds a {found} checkpoint, not a DC-AE: expected _class_name {DIFFUSERS_CLASS!r}"
        )
    if found is None and "encoder_block_out_channels" not in raw:
        raise hub.CheckpointError(
            f"{cfg_path} does not describe a DC-AE (no _class_name {DIFFUSERS_CLASS!r}, no encoder_block_out_channels)"
        )
    return DCAEConfig.from_dict(raw, what=str(cfg_path))


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    single, index = folder / WEIGHTS_NAME, folder / WEIGHTS_INDEX_NAME
    if single.exists():
        return hub.load_file(single)[0]
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise hub.CheckpointError(f"{index} is not a valid safetensors index: {err}") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(hub.load_file(folder / shard)[0])
        return state
    pickled = folder / "diffusion_pytorch_model.bin"
    hint = f" ({pickled.name} is a pickle; convert it to safetensors)" if pickled.exists() else ""
    raise hub.CheckpointError(f"{folder} has neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}{hint}")
