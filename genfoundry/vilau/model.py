"""VILA-U: one autoregressive model that reads and writes images as residual-quantized tokens.

`VilaU.from_pretrained` reads this project's folder layout (below) and the authors' released layout
(`mit-han-lab/vila-u-7b-256`: genfoundry.vilau.convert, which also writes it). The modules follow the
config: our ShapeWorld architecture, or the authors' (SigLIP + RQ-VAE tower, rqtransformer depth
transformer, vicuna_v1 prompts); see docs/vilau_official.md.

Our layout on disk (official-style folder):

    config.json                 model_type "genfoundry-vila-u": tower / depth / projector / token settings
    llm/                        transformers Llama (config.json + model.safetensors), tokenizer files,
                                depth_transformer.safetensors (the depth transformer lives with the LLM)
    vision_tower/               config.json + model.safetensors (encoder, codebooks, decoder, text alignment)
    mm_projector/               config.json + model.safetensors (MLP: summed code embedding -> LLM input),
                                grid_position.safetensors (per-cell embedding, when image_position is "grid")
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry import hub
from genfoundry.vilau.depth import DepthConfig, build_depth_transformer
from genfoundry.vilau.tower import TowerConfig, build_tower

MODEL_TYPE = "genfoundry-vila-u"
IM_START, IM_END, VI_START, VI_END = "<im_start>", "<im_end>", "<vi_start>", "<vi_end>"
SPECIAL_TOKENS = (IM_START, IM_END, VI_START, VI_END)
VIDEO_WORDS = ("moving", "up", "down")  # clip captions/questions need these beyond the ShapeWorld words
UNCONDITIONAL_PROMPT = " "
IMAGE_POSITIONS = ("grid", "none")
# "genfoundry": [<bos>, image, question] and [<bos>, caption, <im_start>] (the ShapeWorld models);
# "vila-u": the authors' vicuna_v1 conversation, images as bare token runs where "<image>" stood.
PROMPT_FORMATS = ("genfoundry", "vila-u")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def build_vilau_tokenizer():
    """The ShapeWorld word-level tokenizer plus the four image/video markers and the clip words."""
    from genfoundry.shapes.tokenizer import build_tokenizer

    tok = build_tokenizer(extra_special_tokens=SPECIAL_TOKENS)
    tok.add_tokens(list(VIDEO_WORDS))
    return tok


def default_llm_config() -> dict[str, Any]:
    return {
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 512, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
    }


@dataclass
class VilaUConfig:
    tower: TowerConfig = field(default_factory=TowerConfig)
    llm: dict[str, Any] = field(default_factory=default_llm_config)  # LlamaConfig kwargs
    depth: DepthConfig = field(default_factory=DepthConfig)
    video_frames: int = 4
    # "grid": a learned per-cell embedding (initialised 2D sine-cosine) added to every image token, so the
    # LLM sees where a token sits; "none": raster order with 1D RoPE only (the paper's model, and the
    # folders written before the option existed).
    image_position: str = "grid"
    prompt_format: str = "genfoundry"
    # The authors' config files as read from a released folder (keys "config", "llm", "vision_tower",
    # "mm_projector", "generation_config", "preprocessor_config"), so that writing the folder back gives
    # them unchanged; None for models built here.
    official_configs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.image_position not in IMAGE_POSITIONS:
            raise ValueError(f"image_position must be one of {IMAGE_POSITIONS}, got {self.image_position!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        if isinstance(self.tower, dict):
            self.tower = TowerConfig(**self.tower)
        if isinstance(self.depth, dict):
            self.depth = DepthConfig(**self.depth)
        # The depth transformer must agree with the tower and the LLM it sits between.
        self.depth.llm_hidden_size = int(self.llm["hidden_size"])
        self.depth.code_dim = self.tower.code_dim
        self.depth.codebook_size = self.tower.codebook_size
        self.depth.depth = self.tower.depth

    @property
    def image_tokens(self) -> int:
        return self.tower.grid ** 2

    def to_dict(self) -> dict[str, Any]:
        out = {"model_type": MODEL_TYPE, "architectures": ["VilaU"], "tower": self.tower.to_dict(),
               "llm": dict(self.llm), "depth": self.depth.to_dict(), "video_frames": self.video_frames,
               "image_position": self.image_position, "prompt_format": self.prompt_format,
               "mm_projector_type": "mlp2x_gelu", "special_tokens": list(SPECIAL_TOKENS)}
        if self.official_configs is not None:
            out["official_configs"] = self.official_configs
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VilaUConfig:
        return cls(tower=TowerConfig(**d["tower"]), llm=dict(d["llm"]), depth=DepthConfig(**d["depth"]),
                   video_frames=int(d.get("video_frames", 4)), image_position=d.get("image_position", "none"),
                   prompt_format=d.get("prompt_format", "genfoundry"), official_configs=d.get("official_configs"))

    @classmethod
    def tiny(cls) -> VilaUConfig:
        """A few-thousand-parameter model for tests (32x32 images, 4x4 tokens, depth 3)."""
        tower = TowerConfig(image_size=32, channels=(8, 16, 16), code_dim=8, codebook_size=16, depth=3,
                            align_dim=16, text={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                                "num_attention_heads": 2, "max_position_embeddings": 24})
        llm = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False}
        depth = DepthConfig(hidden_size=32, num_layers=1, num_heads=2)
        return cls(tower=tower, llm=llm, depth=depth, video_frames=2)

    @classmethod
    def official(cls, siglip_name: str, depth: int, decoder_latent_shape: list[int] | None = None) -> VilaUConfig:
        """The authors' architecture at the shape of a released SigLIP (genfoundry.vilau.rqvae.SIGLIP_CONFIGS)
        with LLaMA-2-7B (vocabulary 32000 + the four image/video tokens). From their code and the public
        SigLIP configs: the tower quantizes SigLIP's hidden size with 16384 codes per depth; the LLM and
        the projector. Assumed (in no file we could read; chosen to match the 2.71 GB of the released
        vision_tower/model.safetensors): the pixel decoder (their RQ-VAE's default ddconfig) and the
        depth transformer (their module's defaults: width 2560, 40 heads, 6 layers). A released folder
        is always built from its own config files, never from these."""
        from genfoundry.vilau.rqvae import siglip_shapes

        vision, text = siglip_shapes(siglip_name)
        size, hidden = vision["image_size"], vision["hidden_size"]
        decoder = {"double_z": False, "z_channels": 256, "resolution": size, "in_channels": 3, "out_ch": 3,
                   "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "dropout": 0.0,
                   "attn_resolutions": [(decoder_latent_shape or [size // 16])[0]]}
        tower = TowerConfig(image_size=size, architecture="rqvaesiglip", siglip=vision, text=text, code_dim=hidden,
                            codebook_size=16384, depth=depth, pixel_decoder=decoder,
                            decoder_latent_shape=decoder_latent_shape)
        llm = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
               "tie_word_embeddings": False, "vocab_size": 32004, "bos_token_id": 1, "eos_token_id": 2,
               "pad_token_id": 0}
        depth_cfg = DepthConfig(hidden_size=2560, num_layers=6, num_heads=40, architecture="rqtransformer")
        return cls(tower=tower, llm=llm, depth=depth_cfg, video_frames=8, image_position="none",
                   prompt_format="vila-u")

    @classmethod
    def official_256(cls) -> VilaUConfig:
        """vila-u-7b-256: SigLIP-large/16 at 256 px, 16x16 tokens, residual depth 4, LLaMA-2-7B."""
        return cls.official("google/siglip-large-patch16-256", depth=4)

    @classmethod
    def official_384(cls) -> VilaUConfig:
        """The 384 px model of the paper: SigLIP-so400m/14, 27x27 tokens, depth 16 (decoded from 24x24)."""
        return cls.official("google/siglip-so400m-patch14-384", depth=16, decoder_latent_shape=[24, 24])

    @classmethod
    def tiny_official(cls) -> VilaUConfig:
        """The authors' architecture at test size: a 2-layer SigLIP at 32 px (patch 8: 4x4 tokens), depth 2,
        32 codes, a 4-level pixel decoder (4x4 -> 32x32), a 2-layer depth transformer and a 2-layer Llama."""
        siglip = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "image_size": 32, "patch_size": 8}
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                "vocab_size": 64, "max_position_embeddings": 16}
        decoder = {"z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1, 1],
                   "num_res_blocks": 1, "dropout": 0.0, "attn_resolutions": [4]}
        tower = TowerConfig(image_size=32, architecture="rqvaesiglip", siglip=siglip, text=text, code_dim=32,
                            codebook_size=32, depth=2, pixel_decoder=decoder)
        llm = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": False}
        depth = DepthConfig(hidden_size=32, num_layers=2, num_heads=2, architecture="rqtransformer")
        return cls(tower=tower, llm=llm, depth=depth, video_frames=2, image_position="none", prompt_format="vila-u")


# ----------------------------------------------------------------------------------------------
# Sequences: text and image segments -> one LLM sequence with text labels and image targets


@dataclass
class Segment:
    kind: str  # "text" | "image" | "video"
    content: Any  # token ids (list[int]) | codes [h, w, D] | list of codes
    train: bool = False  # text: loss on these tokens; image/video: loss on these codes
    markers: bool = True  # image/video: wrap in <im_start>/<im_end> (<vi_start>/<vi_end>); False: bare tokens


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] (pad id at image positions)
    image_codes: torch.Tensor  # [B, L, D] (zeros at text positions)
    image_mask: torch.Tensor  # [B, L] bool: position holds an image token
    text_labels: torch.Tensor  # [B, L] token id to predict at this position, or -100
    image_targets: torch.Tensor  # [B, L] bool: predict this position's codes (from the previous hidden state)
    attention_mask: torch.Tensor  # [B, L]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.image_codes, self.image_mask, self.text_labels,
                                               self.image_targets, self.attention_mask)))


class GridPosition(nn.Module):
    """A learned embedding per image-grid cell, added to the image tokens' LLM inputs.

    The conv tower's codes do not say where a token is, and 1D RoPE gives the LLM only distances along
    the raster, so "left of" would need column = index mod grid. Initialised as a 2D sine-cosine table
    (rows in the first half of the channels, columns in the second) at about half the RMS of the
    projected code embeddings, so the position is readable from the first step."""

    INIT_RMS = 0.25

    def __init__(self, grid: int, hidden: int) -> None:
        super().__init__()
        self.grid = grid
        self.table = nn.Parameter(self.sincos(grid, hidden) * (self.INIT_RMS / 0.5 ** 0.5))

    @staticmethod
    def sincos(grid: int, hidden: int) -> torch.Tensor:
        half = hidden // 2
        freqs = 1.0 / (grid ** (torch.arange(half // 2, dtype=torch.float32) / max(1, half // 2)))

        angle = torch.arange(grid, dtype=torch.float32)[:, None] * freqs[None] * (math.pi / 2)
        line = torch.cat([angle.sin(), angle.cos()], 1)  # [grid, 2 * (half // 2)]: one row or column index each
        table = torch.zeros(grid, grid, hidden)
        table[:, :, :line.shape[1]] = line[:, None]  # rows
        table[:, :, half:half + line.shape[1]] = line[None]  # columns
        return table.reshape(grid * grid, hidden)

    def forward(self, index: torch.Tensor | int) -> torch.Tensor:
        """Embedding of raster cell(s) `index` (0 .. grid**2 - 1)."""
        return self.table[index]


class VilaU(nn.Module):
    # What SVDQuant leaves alone (glob patterns of module names, read by genfoundry.svdquant.quantize): it
    # quantizes the LLM's and the depth transformer's linears; the vision tower, the projector and the
    # output heads stay in 16 bits, and so does the depth transformer's input from the code embeddings
    # (an embedder, like SANA's).
    quantization_skip = ("tower.*", "mm_projector.*", "llm.lm_head", "depth_transformer.code_in")
    quantization_weight_only = ()

    def __init__(self, config: VilaUConfig, tokenizer=None) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else build_vilau_tokenizer()
        vocab = len(self.tokenizer)
        # The authors' LLaMA tokenizer may have no pad token: padding positions are masked, any id serves.
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.unk_token_id or 0)
        self.tower = build_tower(config.tower, vocab, self.pad_id, self.tokenizer.bos_token_id,
                                 self.tokenizer.eos_token_id)
        llm_kwargs = dict(config.llm)  # a released LLM config names its own vocabulary size and token ids
        defaults = {"vocab_size": vocab, "pad_token_id": self.pad_id, "bos_token_id": self.tokenizer.bos_token_id,
               "eos_token_id": self.tokenizer.eos_token_id}
        for key, value in defaults.items():
            llm_kwargs.setdefault(key, value)
        llm_config = LlamaConfig(**llm_kwargs)
        llm_config._attn_implementation = "sdpa"
        self.llm = LlamaForCausalLM(llm_config)
        hidden = llm_config.hidden_size
        self.mm_projector = nn.Sequential(nn.Linear(config.tower.code_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.depth_transformer = build_depth_transformer(config.depth)
        self.grid_position = GridPosition(config.tower.grid, hidden) if config.image_position == "grid" else None
        ids = self.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
        if self.tokenizer.unk_token_id in ids:
            raise ValueError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS}")
        self.im_start_id, self.im_end_id, self.vi_start_id, self.vi_end_id = ids

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def caption_ids(self, captions: list[str]) -> torch.Tensor:
        """Captions -> ids [B, L] for the vision tower's frozen text encoder (no <bos>; padded and cut to
        its max_length), on the model's device."""
        return self.tokenizer(captions, add_special_tokens=False, padding="max_length", truncation=True,
                              max_length=self.tower.text_encoder.max_length,
                              return_tensors="pt")["input_ids"].to(self.device)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of `text` without <bos>; with a word-level (ShapeWorld) vocabulary, raises if a word
        is unknown to it (subword tokenizers such as LLaMA's spell any text)."""
        from tokenizers import models

        from genfoundry.shapes.tokenizer import out_of_vocabulary

        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and isinstance(backend.model, models.WordLevel):
            unknown = out_of_vocabulary(text, self.tokenizer)
            if unknown:
                raise ValueError(f"unknown word(s) {unknown} in {text!r}; this model knows only the ShapeWorld "
                                 f"vocabulary (e.g. colours, shapes, 'what color is the circle?')")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------ prompts
    @property
    def ranks_candidates(self) -> bool:
        """Whether best-of-N drawing can rank this model's images (the rankers ask ShapeWorld questions
        in our prompt format)."""
        return self.config.prompt_format == "genfoundry"

    def question_segments(self, visual: Segment, question: str) -> list[Segment]:
        """The segments of a question about an image or video (`visual`), in the model's prompt format.
        "vila-u" follows the authors' inference: "<system> USER: <image>\n<question> ASSISTANT:", one
        bare run of image tokens per frame, each followed by a newline."""
        if self.config.prompt_format == "genfoundry":
            return [visual, Segment("text", self.text_ids(question))]
        frames = visual.content if visual.kind == "video" else [visual.content]
        segments = [Segment("text", self.text_ids(f"{VICUNA_SYSTEM} USER: "))]
        for i, frame in enumerate(frames):
            segments.append(Segment("image", frame, markers=False))
            if i < len(frames) - 1:
                segments.append(Segment("text", self.text_ids("\n")))
        segments.append(Segment("text", self.text_ids(f"\n{question} ASSISTANT:")))
        return segments

    def generation_prompt_ids(self, prompt: str | None, video: bool = False) -> list[int]:
        """Token ids that precede the first image token of a drawing; `prompt` None gives the
        unconditional prompt of classifier-free guidance. "vila-u": the conversation with the caption
        (empty for the unconditional row, as the authors' " " strips to nothing) ending in
        " <im_start>" (" <vi_start>" for a video)."""
        bos = self.tokenizer.bos_token_id
        if self.config.prompt_format == "genfoundry":
            text = UNCONDITIONAL_PROMPT if prompt is None else prompt
            return [bos, *self.text_ids(text), *([self.vi_start_id] if video else []), self.im_start_id]
        user = (prompt or "").strip()
        turn = f"USER: {user} ASSISTANT:" if user else "USER:ASSISTANT:"
        return [bos, *self.text_ids(f"{VICUNA_SYSTEM} {turn} {VI_START if video else IM_START}")]

    def frame_separator_ids(self) -> list[int]:
        """Tokens fed between the frames of a drawn video: <im_end><im_start> in our format; none in the
        authors' (their frames follow each other directly after <vi_start>)."""
        return [self.im_end_id, self.im_start_id] if self.config.prompt_format == "genfoundry" else []

    def embed_inputs(self, input_ids: torch.Tensor, image_codes: torch.Tensor | None = None,
                     image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text positions: token embeddings; image positions: MLP(sum of the D code embeddings), plus the
        grid-cell embedding when the model has one."""
        emb = self.llm.get_input_embeddings()(input_ids)
        if image_codes is not None and image_mask is not None and bool(image_mask.any()):
            # every image is one contiguous run of grid**2 positions, so a token's cell is its rank
            # among the row's image positions modulo grid**2 (left padding and video frames included)
            cell = None
            if self.grid_position is not None:
                cell = ((image_mask.long().cumsum(1) - 1) % self.config.image_tokens)[image_mask]
            img = self.image_embeddings(image_codes[image_mask], cell)
            emb = emb.masked_scatter(image_mask[..., None], img.to(emb.dtype))
        return emb

    def image_embeddings(self, codes: torch.Tensor, cell: torch.Tensor | int | None = None) -> torch.Tensor:
        """codes [..., D] -> LLM input embeddings [..., H]; `cell`: the raster cell(s) of the codes within
        their image (needed when the model has grid positions)."""
        emb = self.mm_projector(self.tower.quantizer.embed(codes))
        if self.grid_position is not None:
            if cell is None:
                raise ValueError("this model adds grid-cell embeddings to image tokens: pass each code's cell")
            emb = emb + self.grid_position(cell).to(emb.dtype)
        return emb

    def add_grid_position(self) -> None:
        """Give a model saved without grid positions (image_position "none") the grid-cell embedding, at its
        initial sine-cosine value, so training can continue from it."""
        if self.grid_position is None:
            self.config.image_position = "grid"
            self.grid_position = GridPosition(self.config.tower.grid, self.llm.config.hidden_size).to(self.device)

    # ------------------------------------------------------------------ sequences
    def build_sequence(self, segments: list[Segment], bos: bool = True) -> dict[str, list]:
        """Flatten segments: images become <im_start> tokens <im_end>; videos <vi_start> images <vi_end>.

        Returns lists `ids`, `labels`, `targets` (one entry per position) and `images`: (start, codes [n, D],
        train) blocks of image positions.
        """
        ids: list[int] = []
        labels: list[int] = []
        targets: list[bool] = []
        images: list[tuple[int, torch.Tensor, bool]] = []
        g, d = self.config.tower.grid, self.config.tower.depth
        pad = self.pad_id

        def add_text(tokens: list[int], train: bool) -> None:
            ids.extend(int(t) for t in tokens)
            labels.extend(int(t) if train else -100 for t in tokens)
            targets.extend([False] * len(tokens))

        def add_image(grid: torch.Tensor, train: bool, markers: bool = True) -> None:
            if tuple(grid.shape) != (g, g, d):
                raise ValueError(f"image codes must be [{g}, {g}, {d}], got {tuple(grid.shape)}")
            if markers:
                add_text([self.im_start_id], False)
            images.append((len(ids), grid.reshape(g * g, d).long().cpu(), train))
            ids.extend([pad] * (g * g))
            labels.extend([-100] * (g * g))
            targets.extend([train] * (g * g))
            if markers:
                add_text([self.im_end_id], False)

        if bos:
            add_text([self.tokenizer.bos_token_id], False)
        for seg in segments:
            if seg.kind == "text":
                add_text(list(seg.content), seg.train)
            elif seg.kind == "image":
                add_image(seg.content, seg.train, seg.markers)
            elif seg.kind == "video":
                if seg.markers:
                    add_text([self.vi_start_id], False)
                for frame in seg.content:
                    add_image(frame, seg.train, seg.markers)
                if seg.markers:
                    add_text([self.vi_end_id], False)
            else:
                raise ValueError(f"unknown segment kind {seg.kind!r}")
        return {"ids": ids, "labels": labels, "targets": targets, "images": images}

    @staticmethod
    def left_pad(sequence: dict[str, list], width: int, pad_id: int) -> dict[str, list]:
        """Shift a built sequence right by padding on the left to `width` positions."""
        n = width - len(sequence["ids"])
        return {"ids": [pad_id] * n + sequence["ids"], "labels": [-100] * n + sequence["labels"],
                "targets": [False] * n + sequence["targets"],
                "images": [(start + n, codes, train) for start, codes, train in sequence["images"]]}

    def collate(self, sequences: list[dict[str, list]]) -> Batch:
        """Right-pad sequences into one Batch."""
        depth = self.config.tower.depth
        length = max(len(s["ids"]) for s in sequences)
        if length > self.llm.config.max_position_embeddings:
            raise ValueError(f"sequence of {length} tokens exceeds the LLM's max_position_embeddings "
                             f"{self.llm.config.max_position_embeddings}")
        b = len(sequences)
        pad = self.pad_id
        input_ids = torch.full((b, length), pad, dtype=torch.long)
        image_codes = torch.zeros((b, length, depth), dtype=torch.long)
        image_mask = torch.zeros((b, length), dtype=torch.bool)
        text_labels = torch.full((b, length), -100, dtype=torch.long)
        image_targets = torch.zeros((b, length), dtype=torch.bool)
        attention = torch.zeros((b, length), dtype=torch.long)
        for i, s in enumerate(sequences):
            n = len(s["ids"])
            input_ids[i, :n] = torch.tensor(s["ids"])
            text_labels[i, :n] = torch.tensor(s["labels"])
            image_targets[i, :n] = torch.tensor(s["targets"])
            attention[i, :n] = 1
            for start, codes, _ in s["images"]:
                image_codes[i, start:start + len(codes)] = codes
                image_mask[i, start:start + len(codes)] = True
        return Batch(input_ids, image_codes, image_mask, text_labels, image_targets, attention)

    # ------------------------------------------------------------------ training loss
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Text CE (next token) + image CE over every (target position, depth)."""
        emb = self.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
        hidden = self.llm.model(inputs_embeds=emb, attention_mask=batch.attention_mask).last_hidden_state
        labels = batch.text_labels[:, 1:]
        text_pos = labels != -100
        zero = hidden.sum() * 0.0  # keeps every branch in the graph (DDP) when a batch lacks one kind
        if bool(text_pos.any()):
            logits = self.llm.lm_head(hidden[:, :-1][text_pos])
            text_loss = F.cross_entropy(logits.float(), labels[text_pos])
        else:
            text_loss = zero + self.llm.lm_head.weight.sum() * 0.0
        targets = batch.image_targets[:, 1:]
        if bool(targets.any()):
            h = hidden[:, :-1][targets]
            codes = batch.image_codes[:, 1:][targets]  # [M, D]
            prefix = self.tower.quantizer.partial_sums(codes[:, :-1]) if codes.shape[1] > 1 else None
            logits = self.depth_transformer(h, prefix)
            image_loss = F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten())
        else:
            image_loss = zero + sum(p.sum() for p in self.depth_transformer.parameters()) * 0.0
        return {"loss": text_loss + image_loss, "text_loss": text_loss, "image_loss": image_loss}

    # ------------------------------------------------------------------ images in and out
    def load_image(self, image) -> torch.Tensor:
        """PIL image, path, or tensor [3,H,W] in [-1,1] -> tensor [3,S,S]; other sizes are resized with a note."""
        from genfoundry.vilau.images import load_image

        return load_image(image, self.config.tower.image_size)

    @torch.no_grad()
    def tokenize_image(self, image) -> torch.Tensor:
        """An image -> its codes LongTensor [h, w, depth]."""
        x = self.load_image(image).to(self.device)[None]
        was = self.tower.training
        self.tower.eval()
        try:
            return self.tower.tokenize(x)[0].cpu()
        finally:
            self.tower.train(was)

    @torch.no_grad()
    def detokenize(self, codes: torch.Tensor):
        """Codes [h, w, depth] -> PIL image."""
        from genfoundry.shapes import tensor_to_image

        if not isinstance(codes, torch.Tensor):
            codes = torch.as_tensor(codes)
        if codes.ndim != 3:
            raise ValueError(f"codes must be [h, w, depth], got shape {tuple(codes.shape)}")
        return tensor_to_image(self.tower.detokenize(codes.long().to(self.device)[None])[0])

    # ------------------------------------------------------------------ the public contract
    def answer(self, image, question: str, max_new_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 0.6, seed: int | None = None) -> str:
        """Answer a question about an image (or a list of frames = a video). Greedy by default."""
        from genfoundry.vilau.generate import answer

        return answer(self, image, question, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_p=top_p, seed=seed)

    def generate_image(self, prompt: str, cfg: float = 3.0, seed: int | None = None, top_k: int = 900,
                       top_p: float = 0.96, temperature: float = 1.0, use_cache: bool = True, candidates: int = 1,
                       rank_by: str = "caption+answers"):
        """Draw an image for a caption -> PIL image (CFG on every depth, unconditional prompt " ").
        `candidates` > 1: draw that many and keep the one ranked first by `rank_by` (see
        genfoundry.vilau.generate.RANKERS; "caption+answers": this model's own likelihood of the caption
        given the image plus that of the answers the caption implies)."""
        from genfoundry.vilau.generate import generate_images

        return generate_images(self, prompt, frames=None, cfg=cfg, seed=seed, top_k=top_k, top_p=top_p,
                               temperature=temperature, use_cache=use_cache, candidates=candidates,
                               rank_by=rank_by)[0]

    def generate_video(self, prompt: str, frames: int | None = None, cfg: float = 3.0, seed: int | None = None,
                       top_k: int = 900, top_p: float = 0.96, temperature: float = 1.0) -> list:
        """Draw a clip (frames' tokens concatenated) -> list of PIL images."""
        from genfoundry.vilau.generate import generate_images

        return generate_images(self, prompt, frames=frames or self.config.video_frames, cfg=cfg, seed=seed,
                               top_k=top_k, top_p=top_p, temperature=temperature)[0]

    # ------------------------------------------------------------------ folders
    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the official-style folder; `dtype` (e.g. torch.float16) casts the floating-point weights
        on disk (they load back into float32 modules)."""

        def weights(module: nn.Module) -> dict[str, torch.Tensor]:
            state = module.state_dict()
            if dtype is None:
                return state
            return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}

        path = Path(path)
        (path / "llm").mkdir(parents=True, exist_ok=True)
        hub.write_json_atomic(path / "config.json", self.config.to_dict())
        hub.write_json_atomic(path / "llm" / "config.json", json.loads(self.llm.config.to_json_string()))
        hub.save_file(weights(self.llm), path / "llm" / "model.safetensors", {"format": "pt"})
        hub.save_file(weights(self.depth_transformer), path / "llm" / "depth_transformer.safetensors",
                      {"format": "pt", "config": self.config.depth.to_dict()})
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # a call with truncation or padding leaves it switched on, and it would be saved
            backend.no_truncation()
            backend.no_padding()
        self.tokenizer.save_pretrained(str(path / "llm"))
        hub.write_json_atomic(path / "vision_tower" / "config.json", self.config.tower.to_dict())
        hub.save_file(weights(self.tower), path / "vision_tower" / "model.safetensors", {"format": "pt"})
        hidden = self.llm.config.hidden_size
        hub.write_json_atomic(path / "mm_projector" / "config.json",
                              {"mm_projector_type": "mlp2x_gelu", "in_features": self.config.tower.code_dim,
                               "hidden_size": hidden})
        hub.save_file(weights(self.mm_projector), path / "mm_projector" / "model.safetensors", {"format": "pt"})
        if self.grid_position is not None:
            hub.save_file(weights(self.grid_position), path / "mm_projector" / "grid_position.safetensors",
                          {"format": "pt"})
        return path

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "vila-u-shapes",
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> VilaU:
        """Load a VILA-U folder in either layout: ours (model_type "genfoundry-vila-u") or the authors'
        released one ("vila_u_llama", e.g. mit-han-lab/vila-u-7b-256: see genfoundry.vilau.convert, which
        builds it on the meta device and streams the tensors). `dtype` None keeps float32 for our layout
        and the stored dtype for the authors' (16-bit on a GPU)."""
        from genfoundry.vilau import convert

        root = hub.resolve(name_or_path)
        if not (root / "config.json").is_file():
            raise hub.CheckpointError(f"{root} is not a VILA-U folder: config.json is missing "
                                      "(expected config.json, llm/, vision_tower/, mm_projector/)")
        try:
            raw = json.loads((root / "config.json").read_text())
        except json.JSONDecodeError as err:
            raise hub.CheckpointError(f"{root / 'config.json'} is not valid JSON: {err}") from None
        if convert.is_official_config(raw):
            return convert.load_official(root, device=device, dtype=dtype)
        if raw.get("model_type") != MODEL_TYPE:
            raise hub.CheckpointError(
                f"{root / 'config.json'} has model_type {raw.get('model_type')!r}: not a VILA-U folder (expected "
                f"{MODEL_TYPE!r}, or the authors' {convert.OFFICIAL_MODEL_TYPE!r})")
        config = VilaUConfig.from_dict(raw)
        missing = [p for p in ("llm/model.safetensors", "llm/depth_transformer.safetensors", "llm/tokenizer.json",
                               "vision_tower/model.safetensors", "mm_projector/model.safetensors")
                   + (("mm_projector/grid_position.safetensors",) if config.image_position == "grid" else ())
                   if not (root / p).is_file()]
        if missing:
            raise hub.CheckpointError(f"{root} is incomplete; missing: {', '.join(missing)}")
        tokenizer = load_tokenizer(root / "llm")
        model = cls(config, tokenizer)
        for module, file in ((model.llm, "llm/model.safetensors"),
                             (model.depth_transformer, "llm/depth_transformer.safetensors"),
                             (model.tower, "vision_tower/model.safetensors"),
                             (model.mm_projector, "mm_projector/model.safetensors"),
                             (model.grid_position, "mm_projector/grid_position.safetensors")):
            if module is None:
                continue
            tensors, _ = hub.load_file(root / file)
            hub.check_state_dict(tensors, module.state_dict(), what=str(root / file))
            module.load_state_dict(tensors)
        if dtype is not None:
            model.to(dtype)
        return model.to(device).eval()


def load_tokenizer(folder: Path):
    """The tokenizer saved in `folder`: our word-level one (a tokenizers backend) or a transformers class
    named in tokenizer_config.json (the authors' LLaMA tokenizer, read from tokenizer.model)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = folder / "tokenizer_config.json"
    try:
        kind = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    except json.JSONDecodeError as err:
        raise hub.CheckpointError(f"{config} is not valid JSON: {err}") from None
    if kind in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file() and (folder / "tokenizer.model").is_file():
        import importlib.util

        lacking = [m for m in ("sentencepiece", "google.protobuf") if importlib.util.find_spec(m.split(".")[0]) is None]
        if lacking:
            raise hub.CheckpointError(f"reading {folder / 'tokenizer.model'} needs the packages sentencepiece and "
                                      "protobuf: pip install 'genfoundry[vilau-official]'")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, ImportError) as err:
        raise hub.CheckpointError(f"could not read the {kind} tokenizer in {folder}: "
                                  f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
