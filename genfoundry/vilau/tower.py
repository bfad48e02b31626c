"""The unified vision tower: image encoder -> residual quantizer -> (conv decoder, text-alignment head).

One set of discrete tokens serves both directions: the codes are what the LLM reads and writes, the
decoder turns them back into pixels, and the alignment head pulls the quantized features towards a
frozen text encoder's caption embeddings (SigLIP sigmoid loss), which is what makes the tokens
useful for understanding and not only for reconstruction.

`TowerConfig.architecture` picks the modules: "genfoundry" (this file: conv or SigLIP encoder, conv
decoder, alignment head over a frozen text encoder) or "rqvaesiglip" (the authors' released tower,
`genfoundry.vilau.rqvae`: SigLIP's layers up to L-2 straight into the quantizer, a VQGAN-style pixel
decoder, SigLIP's own text side). `build_tower` builds either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


ALIGN_IMAGE_HEADS = ("mlp", "attention")
TOWER_ARCHITECTURES = ("genfoundry", "rqvaesiglip")


@dataclass
class TowerConfig:
    image_size: int = 64
    encoder: str = "conv"  # "conv" (ShapeWorld) or "siglip" (transformers SigLIP vision, official shape)
    channels: tuple[int, ...] = (32, 64, 128)  # conv encoder stages; each halves the resolution
    siglip: dict[str, Any] | None = None  # SiglipVisionConfig kwargs when encoder == "siglip"
    code_dim: int = 32
    codebook_size: int = 512
    depth: int = 4
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.03  # EMA usage count under which a code is restarted from data
    reconstruction_weight: float = 1.0
    contrastive_weight: float = 1.0  # 0 gives the paper's ablation (no text alignment)
    align_dim: int = 128
    # image side of the alignment head: "mlp" (per-cell 1x1 conv, then an MLP over the flattened grid) or
    # "attention" (a small transformer over the grid cells, read out at a class token)
    align_image_head: str = "mlp"
    text: dict[str, Any] = field(default_factory=lambda: {
        "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 24,
    })  # SiglipTextConfig kwargs of the frozen text encoder (vocab_size filled from the tokenizer)
    # "rqvaesiglip": the authors' tower (genfoundry.vilau.rqvae). `siglip` and `text` are then the SigLIP
    # vision and text configs (the text side keeps SigLIP's own vocabulary), `pixel_decoder` the decoder's
    # keyword arguments (their `ddconfig`), `decoder_latent_shape` the [h, w] the code grid is resized to
    # before decoding (384 px: 27x27 codes -> 24x24), `shared_codebook` one codebook for every depth.
    architecture: str = "genfoundry"
    pixel_decoder: dict[str, Any] | None = None
    decoder_latent_shape: list[int] | None = None
    shared_codebook: bool = False

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.architecture not in TOWER_ARCHITECTURES:
            raise ValueError(f"tower architecture must be one of {TOWER_ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "rqvaesiglip":
            self._check_rqvaesiglip()
            return
        if self.encoder not in ("conv", "siglip"):
            raise ValueError(f"tower encoder must be 'conv' or 'siglip', got {self.encoder!r}")
        if self.encoder == "siglip" and not self.siglip:
            raise ValueError("tower encoder 'siglip' needs a `siglip` dict of SiglipVisionConfig kwargs")
        if self.align_image_head not in ALIGN_IMAGE_HEADS:
            raise ValueError(f"align_image_head must be one of {', '.join(ALIGN_IMAGE_HEADS)}, "
                             f"got {self.align_image_head!r}")
        if self.depth < 1 or self.codebook_size < 2:
            raise ValueError(f"need depth >= 1 and codebook_size >= 2, got {self.depth}, {self.codebook_size}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the downsampling "
                             f"factor {self.downsample}")

    def _check_rqvaesiglip(self) -> None:
        if not self.siglip or not self.pixel_decoder:
            raise ValueError("tower architecture 'rqvaesiglip' needs `siglip` (SiglipVisionConfig kwargs) and "
                             "`pixel_decoder` (the decoder's ddconfig)")
        self.encoder = "siglip"
        hidden = int(self.siglip["hidden_size"])
        if self.code_dim != hidden:
            raise ValueError(f"rqvaesiglip quantizes SigLIP features directly: code_dim {self.code_dim} must equal "
                             f"the SigLIP hidden_size {hidden}")
        if int(self.siglip.get("image_size", self.image_size)) != self.image_size:
            raise ValueError(f"siglip image_size {self.siglip['image_size']} != tower image_size {self.image_size}")
        if self.depth < 1 or self.codebook_size < 2:
            raise ValueError(f"need depth >= 1 and codebook_size >= 2, got {self.depth}, {self.codebook_size}")

    @property
    def downsample(self) -> int:
        if self.encoder == "siglip":
            return int(self.siglip.get("patch_size", 16))
        return 2 ** len(self.channels)

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample  # SigLIP's patch conv drops a remainder (384 / 14 -> 27)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out


# ----------------------------------------------------------------------------------------------
# Encoders and decoder


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(32, channels // 4), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(min(32, channels // 4), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvEncoder(nn.Module):
    """[B,3,S,S] -> [B, code_dim, S/2^n, S/2^n]."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        ch = config.channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        prev = ch[0]
        for c in ch:
            layers += [ResBlock(prev), nn.Conv2d(prev, c, 4, stride=2, padding=1)]
            prev = c
        layers += [ResBlock(prev), nn.GroupNorm(min(32, prev // 4), prev), nn.SiLU(), nn.Conv2d(prev, config.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class SiglipEncoder(nn.Module):
    """transformers SigLIP vision transformer; features of the second-to-last layer, as in VILA-U."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        kwargs = dict(config.siglip)
        kwargs.setdefault("image_size", config.image_size)
        if kwargs["image_size"] != config.image_size:
            raise ValueError(f"siglip image_size {kwargs['image_size']} != tower image_size {config.image_size}")
        self.vit = SiglipVisionModel(SiglipVisionConfig(**kwargs))
        self.grid = config.grid
        self.out = nn.Linear(self.vit.config.hidden_size, config.code_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.vit(pixel_values=images, output_hidden_states=True).hidden_states[-2]
        feats = self.out(hidden)  # [B, grid*grid, code_dim]
        b = feats.shape[0]
        return feats.transpose(1, 2).reshape(b, -1, self.grid, self.grid)


class ConvDecoder(nn.Module):
    """[B, code_dim, g, g] -> [B, 3, g*2^n, g*2^n]; nearest upsampling + conv per stage."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        n_up = int(math.log2(config.downsample))
        ch = list(config.channels)[::-1]
        ch = (ch + [ch[-1]] * n_up)[:n_up] if n_up > len(ch) else ch[:n_up]
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim, ch[0], 3, padding=1), ResBlock(ch[0])]
        prev = ch[0]
        for c in ch:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, c, 3, padding=1), ResBlock(c)]
            prev = c
        layers += [nn.GroupNorm(min(32, prev // 4), prev), nn.SiLU(), nn.Conv2d(prev, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


# ----------------------------------------------------------------------------------------------
# Residual quantization


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [M, C] straight-through sum of the D code embeddings
    codes: torch.Tensor  # [M, D]
    commitment_loss: torch.Tensor
    dead_restarts: int


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class ResidualQuantizer(nn.Module):
    """Residual quantization over D depths with one codebook per depth.

    Codebooks are buffers updated by an exponential moving average of the residuals assigned to
    each code (not by gradients); a code whose EMA usage falls under `dead_code_threshold` is
    restarted at a random residual of the current batch. Under DDP the statistics are all-reduced
    and the restart vectors broadcast from rank 0, so every rank keeps identical codebooks.
    """

    def __init__(self, depth: int, codebook_size: int, dim: int, decay: float = 0.99,
                 dead_code_threshold: float = 0.03, commitment_weight: float = 0.25,
                 padding_row: bool = False) -> None:
        super().__init__()
        self.depth, self.codebook_size, self.dim = depth, codebook_size, dim
        self.decay, self.dead_code_threshold, self.commitment_weight = decay, dead_code_threshold, commitment_weight
        # in place: one allocation (a 384 px release's 16 codebooks are 1.2 GB in float32)
        self.register_buffer("codebooks", torch.randn(depth, codebook_size, dim).mul_(0.1))
        self.register_buffer("cluster_size", torch.ones(depth, codebook_size))
        self.register_buffer("embed_sum", self.codebooks.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        if padding_row:
            # The authors' codebooks are nn.Embedding(n_embed + 1, C, padding_idx=n_embed): a last row that
            # no code selects. It is kept here so their checkpoints convert back unchanged.
            self.register_buffer("padding", torch.zeros(depth, dim))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., D'] (D' <= D, the first depths) -> summed embedding [..., C]."""
        return self.partial_sums(codes)[..., -1, :]

    def partial_sums(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., D'] -> cumulative sums of the code embeddings [..., D', C] (depth 1..d each)."""
        if codes.shape[-1] > self.depth:
            raise ValueError(f"codes have depth {codes.shape[-1]}, the quantizer has {self.depth}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), found "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        per_depth = [F.embedding(codes[..., d], self.codebooks[d]) for d in range(codes.shape[-1])]
        return torch.stack(per_depth, dim=-2).cumsum(dim=-2)

    @torch.no_grad()
    def _quantize_codes(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        residual = z
        codes, residuals = [], []
        for d in range(self.depth):
            book = self.codebooks[d].to(residual.dtype)  # fp32 distances for 16-bit codebooks too
            dist2 = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.t() + book.pow(2).sum(1)[None]
            idx = dist2.argmin(dim=1)
            codes.append(idx)
            residuals.append(residual)
            residual = residual - book[idx]
        return torch.stack(codes, dim=1), residuals

    @torch.no_grad()
    def _init_from_data(self, z: torch.Tensor) -> None:
        """Seed each codebook with residuals of the first batch (greedy depth by depth)."""
        residual = z
        for d in range(self.depth):
            pick = torch.randint(0, residual.shape[0], (self.codebook_size,), device=z.device)
            book = residual[pick] + 1e-3 * torch.randn_like(residual[pick])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.broadcast(book, 0)
            self.codebooks[d].copy_(book)
            self.embed_sum[d].copy_(book)
            self.cluster_size[d].fill_(1.0)
            dist2 = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.t() + book.pow(2).sum(1)[None]
            residual = residual - book[dist2.argmin(1)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, codes: torch.Tensor, residuals: list[torch.Tensor]) -> int:
        restarts = 0
        for d in range(self.depth):
            r = residuals[d].float()
            onehot = F.one_hot(codes[:, d], self.codebook_size).type_as(r)
            counts = _all_reduce_sum(onehot.sum(0))
            sums = _all_reduce_sum(onehot.t() @ r)
            self.cluster_size[d].mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum[d].mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size[d].sum()
            smoothed = (self.cluster_size[d] + 1e-5) / (n + self.codebook_size * 1e-5) * n
            self.codebooks[d].copy_(self.embed_sum[d] / smoothed[:, None])
            dead = self.cluster_size[d] < self.dead_code_threshold
            n_dead = int(dead.sum())
            if n_dead:
                pick = torch.randint(0, r.shape[0], (n_dead,), device=r.device)
                fresh = r[pick].contiguous()
                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    dist.broadcast(fresh, 0)
                self.codebooks[d][dead] = fresh
                self.embed_sum[d][dead] = fresh
                self.cluster_size[d][dead] = 1.0
                restarts += n_dead
        return restarts

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z [M, C] -> quantized (straight-through), codes [M, D], commitment loss (always in fp32)."""
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float())

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        if self.training and not bool(self.initialized):
            self._init_from_data(z.detach().float())
        codes, residuals = self._quantize_codes(z.detach().float())
        restarts = self._ema_update(codes, residuals) if self.training else 0
        sums = self.partial_sums(codes).to(z.dtype)  # [M, D, C]
        # RQ-VAE commitment: every partial reconstruction should be close to the encoder output.
        commit = (z[:, None, :] - sums.detach()).pow(2).mean() * self.commitment_weight
        quantized = z + (sums[:, -1] - z).detach()
        return QuantizerOutput(quantized, codes, commit, restarts)


# ----------------------------------------------------------------------------------------------
# Text alignment


def sigmoid_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor,
                             bias: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP loss: every (image, text) pair is a binary classification; positives on the diagonal
    (or where `positives` [B, B] says two captions are the same text)."""
    logits = image_emb @ text_emb.t() * scale.exp() + bias
    if positives is None:
        positives = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    labels = positives.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


class FrozenTextEncoder(nn.Module):
    """A SigLIP text transformer, frozen (the alignment target), as VILA-U keeps its pretrained one.
    Ours starts random, and its pooled features barely say which object a relation puts where
    (experiments/vilau_relation_diagnosis.py), so stage 1b can train it with the head instead
    (`--align-train-text`, LiT-style: the image side stays locked, the text side tunes)."""

    def __init__(self, kwargs: dict[str, Any], vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> None:
        super().__init__()
        from transformers import SiglipTextConfig, SiglipTextModel

        cfg = dict(kwargs)
        cfg.update(vocab_size=vocab_size, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id)
        self.max_length = int(cfg.get("max_position_embeddings", 64))
        self.pad_id = pad_id
        self.model = SiglipTextModel(SiglipTextConfig(**cfg))
        self.model.requires_grad_(False)
        self.out_dim = 2 * self.model.config.hidden_size

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        return super().train(False)  # frozen: no dropout either

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] (padded with pad_id, L <= max_length) -> features [B, 2*hidden]."""
        return self.encode(ids)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """`forward` with gradients (for training the encoder in stage 1b)."""
        if ids.shape[1] > self.max_length:
            ids = ids[:, : self.max_length]
        mask = (ids != self.pad_id).to(torch.float32)
        out = self.model(input_ids=ids)
        mean = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return torch.cat([out.pooler_output, mean], dim=-1)


class CellAttentionPool(nn.Module):
    """Feature grid [B, C, g, g] -> [B, out_dim] by a small pre-norm transformer over the g*g cells (a
    learned embedding per cell, a class token read out), like SigLIP's attention-pooling head. Cells
    that attend to each other can compare where two objects are, which the flattened-grid MLP hardly
    does ("left of" vs "right of"); trained alone on ShapeWorld it did not learn relations either
    (README, VILA-U)."""

    def __init__(self, code_dim: int, grid: int, out_dim: int, dim: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(code_dim, dim)
        self.cell = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def forward(self, grid_features: torch.Tensor) -> torch.Tensor:
        x = self.inp(grid_features.flatten(2).transpose(1, 2)) + self.cell
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        return self.out(self.blocks(x)[:, 0])


def image_head(config: TowerConfig) -> nn.Module:
    g = config.grid
    if config.align_image_head == "attention":
        return CellAttentionPool(config.code_dim, g, config.align_dim)
    return nn.Sequential(
        nn.Conv2d(config.code_dim, 16, 1), nn.SiLU(), nn.Flatten(), nn.Linear(16 * g * g, 256), nn.SiLU(),
        nn.Linear(256, config.align_dim),
    )


class AlignmentHead(nn.Module):
    """Quantized feature grid -> unit image embedding; frozen text features -> unit text embedding."""

    def __init__(self, config: TowerConfig, text_dim: int) -> None:
        super().__init__()
        self.image_proj = image_head(config)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, 256), nn.SiLU(), nn.Linear(256, config.align_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def embed_image(self, grid_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(grid_features), dim=-1)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_features), dim=-1)

    def forward(self, grid_features: torch.Tensor, text_features: torch.Tensor,
                positives: torch.Tensor | None = None) -> torch.Tensor:
        """The sigmoid contrastive loss of a batch of (feature grid, frozen text features) pairs."""
        return sigmoid_contrastive_loss(self.embed_image(grid_features), self.embed_text(text_features),
                                        self.logit_scale, self.logit_bias, positives)


# ----------------------------------------------------------------------------------------------
# The tower


def build_tower(config: TowerConfig, vocab_size: int, pad_id: int, bos_id: int = 1, eos_id: int = 2) -> nn.Module:
    """The vision tower `config.architecture` names (the token ids are for our frozen text encoder)."""
    if config.architecture == "rqvaesiglip":
        from genfoundry.vilau.rqvae import RQVAESiglipTower

        return RQVAESiglipTower(config)
    return VisionTower(config, vocab_size, pad_id, bos_id, eos_id)


@dataclass
class TowerOutput:
    reconstruction: torch.Tensor
    codes: torch.Tensor  # [B, g, g, D]
    losses: dict[str, torch.Tensor]
    dead_restarts: int


class CodeTower(nn.Module):
    """What every tower shares: image checks and the code grid <-> quantizer (`self.config`, `self.quantizer`
    and `encode` come from the subclass)."""

    config: TowerConfig
    quantizer: ResidualQuantizer

    def _check_images(self, images: torch.Tensor) -> None:
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (s, s):
            raise ValueError(f"vision tower expects images [B, 3, {s}, {s}] in [-1, 1], got {tuple(images.shape)}")

    def _check_codes(self, codes: torch.Tensor) -> None:
        g, d = self.config.grid, self.config.depth
        if codes.ndim != 4 or codes.shape[1:] != (g, g, d):
            raise ValueError(f"codes must have shape [B, {g}, {g}, {d}], got {tuple(codes.shape)}")

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] -> codes [B, g, g, D]."""
        g = self.config.grid
        _, q = self.encode(images)
        return q.codes.reshape(images.shape[0], g, g, self.config.depth)

    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, g, g, D] -> quantized feature grid [B, C, g, g] (the sum of the D code embeddings)."""
        return self.quantizer.embed(codes).permute(0, 3, 1, 2)


class VisionTower(CodeTower):
    def __init__(self, config: TowerConfig, vocab_size: int, pad_id: int, bos_id: int = 1, eos_id: int = 2) -> None:
        super().__init__()
        self.config = config
        self.encoder = SiglipEncoder(config) if config.encoder == "siglip" else ConvEncoder(config)
        self.quantizer = ResidualQuantizer(config.depth, config.codebook_size, config.code_dim,
                                           config.ema_decay, config.dead_code_threshold, config.commitment_weight)
        self.decoder = ConvDecoder(config)
        self.text_encoder = FrozenTextEncoder(config.text, vocab_size, pad_id, bos_id, eos_id)
        self.align = AlignmentHead(config, self.text_encoder.out_dim)

    def _features_to_grid(self, flat: torch.Tensor, b: int) -> torch.Tensor:
        g = self.config.grid
        return flat.reshape(b, g, g, -1).permute(0, 3, 1, 2)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """images [B,3,S,S] -> (quantized grid [B,C,g,g], quantizer output with codes [B*g*g, D])."""
        self._check_images(images)
        z = self.encoder(images)
        b, c = z.shape[:2]
        q = self.quantizer(z.permute(0, 2, 3, 1).reshape(-1, c))
        return self._features_to_grid(q.quantized, b), q

    @torch.no_grad()
    def detokenize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, g, g, D] -> images [B, 3, S, S] in [-1, 1]."""
        self._check_codes(codes)
        return self.decoder(self.codes_to_features(codes)).clamp(-1, 1)

    def set_align_image_head(self, kind: str) -> None:
        """Give the alignment head a fresh image side of another kind (ALIGN_IMAGE_HEADS); the text side,
        encoder, codebooks and decoder are kept. Stage 1b (`align_image_head`) then trains it."""
        if kind not in ALIGN_IMAGE_HEADS:
            raise ValueError(f"align_image_head must be one of {', '.join(ALIGN_IMAGE_HEADS)}, got {kind!r}")
        self.config.align_image_head = kind
        device = next(self.align.parameters()).device
        self.align.image_proj = image_head(self.config).to(device)

    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        grid, _ = self.encode(images)
        return self.align.embed_image(grid)

    def text_embedding(self, text_ids: torch.Tensor) -> torch.Tensor:
        return self.align.embed_text(self.text_encoder(text_ids))

    def forward(self, images: torch.Tensor, text_ids: torch.Tensor | None = None) -> TowerOutput:
        """Training step: reconstruction + commitment (+ contrastive when captions are given)."""
        grid, q = self.encode(images)
        recon = self.decoder(grid)
        cfg = self.config
        losses = {
            "reconstruction": F.mse_loss(recon, images) * cfg.reconstruction_weight,
            "commitment": q.commitment_loss,
        }
        if text_ids is not None and cfg.contrastive_weight > 0:
            same = (text_ids[:, None, :] == text_ids[None, :, :]).all(-1)
            losses["contrastive"] = cfg.contrastive_weight * self.align(grid, self.text_encoder(text_ids), same)
        losses["total"] = sum(losses.values())
        codes = q.codes.reshape(images.shape[0], cfg.grid, cfg.grid, cfg.depth)
        return TowerOutput(recon, codes, losses, q.dead_restarts)
