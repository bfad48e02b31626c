"""Train SANA on ShapeWorld: tokenizer, text encoder (LM), DC-AE and the linear DiT -> a pipeline folder.

Stages, in order (each one a resumable loop with periodic atomic checkpoints):
1. tokenizer: the word-level ShapeWorld tokenizer (built, nothing to learn);
2. text_encoder: a small decoder-only transformers LM, pre-trained on captions + QA text, then frozen
   (the role Gemma-2 plays in SANA; its last hidden state is the DiT's text input);
3. dcae: the deep-compression autoencoder, trained for reconstruction (MSE + L1);
4. transformer: the linear DiT, flow matching (x_t = (1-t) x0 + t eps, target v = eps - x0,
   logit-normal t), CFG dropout to the empty-caption embedding, EMA weights.
Finally the parts are assembled into a SanaPipeline folder (diffusers layout) with a model card.

Reproducibility: every batch (indices, noise, timesteps, dropout) comes from a generator seeded by
(seed, stage, step, rank), and checkpoints hold model, optimizer, EMA, step and RNG state, so a run
killed and resumed with `resume=True` continues the same trajectory. DDP: launch with torchrun; each
rank draws its own share of the batch and DDP averages the gradients.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genfoundry import hub
from genfoundry.training import (
    EMA,
    DistInfo,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    rank_max,
    save_checkpoint,
    seed_everything,
)

STAGES = ("text_encoder", "dcae", "transformer")
VALIDATION_SEED_OFFSET = 7919  # validation prompts (flow-shift choice) never share the eval prompts' seed


# ----------------------------------------------------------------------------------------------
# Configs


@dataclass
class DataConfig:
    scenes: int = 2048  # training scenes, rendered once and kept in memory (as uint8)
    size: int = 64  # canvas (any multiple of 32)
    seed: int = 0  # scene stream of the training set (held-out sets use other streams)
    workers: int = 0  # render processes; 0 renders in this process


@dataclass
class TextEncoderTrainConfig:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    max_length: int = 16  # captions and QA lines are at most 14 words
    # Layers of the trained LM kept as the text encoder (its output, through the final norm, is the DiT's
    # text input). A small LM trained on this grammar predicts the next word in its last layers, and the
    # next word is the same whatever the colour or shape just read, so the deepest features barely tell
    # "a red circle" from "a yellow triangle" (measured: 8x less separated at layer 3 than at layer 1).
    feature_layers: int = 1
    # Use the text encoder and tokenizer of a trained pipeline folder instead of pre-training an LM (the
    # fields above that describe one are then ignored): continuing a DiT needs the features it learned on.
    init_from: str | None = None
    steps: int = 150
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 10


@dataclass
class DCAETrainConfig:
    compression: int = 8  # spatial: a 64x64 canvas becomes an 8x8 latent
    latent_channels: int = 8
    widths: tuple[int, ...] = (32, 64, 64, 128)  # one per stage: log2(compression) + 1 stages
    encoder_depth: int = 1
    decoder_depth: int = 1
    attention_stages: int = 1  # the last stages use EfficientViT (linear attention) blocks
    head_dim: int = 16
    steps: int = 200
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 20
    l1_weight: float = 0.1  # MSE drives PSNR; a little L1 keeps edges sharp
    scale_images: int = 512  # images used to measure the latent std (scaling_factor = 1 / std)
    # Decoder robustness: each training latent gets Gaussian noise of std U(0, latent_noise) x the batch's
    # latent std before decoding, so the decoder learns to draw clean shapes from the slightly-off latents
    # a small DiT produces (the std is detached: the encoder cannot outgrow the noise by scaling up).
    latent_noise: float = 0.0
    # Start from a trained DC-AE (a pipeline folder or its vae/ folder) instead of random weights; its
    # own architecture is used and the fields above that describe one are ignored. steps may be 0.
    init_from: str | None = None


@dataclass
class DiTTrainConfig:
    width: int = 128  # num_attention_heads * 32
    depth: int = 4
    cross_heads: int = 4
    position_embedding: bool = True  # sincos PE helps absolute/relative position on tiny canvases
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 30
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    # Wall-clock budget of this run's DiT training (None: run all `steps`); the schedule then decays over
    # the budget and training stops when it is spent (see run_stage). For fixed-time GPU runs (recipes/).
    max_seconds: float | None = None
    # Start from the DiT of a trained pipeline folder (its architecture; fresh optimizer, EMA and schedule).
    # Needs text.init_from: the DiT only makes sense on the text features it was trained with.
    init_from: str | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # Sampling weight of the training scenes by GenEval category, e.g. {"position": 2.5}; categories not
    # named keep weight 1 (None: every scene equally likely). Shifts DiT steps toward a hard category.
    category_weights: dict[str, float] | None = None


@dataclass
class SanaTrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    text: TextEncoderTrainConfig = field(default_factory=TextEncoderTrainConfig)
    dcae: DCAETrainConfig = field(default_factory=DCAETrainConfig)
    dit: DiTTrainConfig = field(default_factory=DiTTrainConfig)
    seed: int = 0
    checkpoint_every: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    flow_shift_candidates: tuple[float, ...] = (3.0,)  # several: pick the best on validation prompts
    validation_prompts: int = 100  # prompts (their own seed stream) for choosing the flow shift
    eval_prompts: int = 100  # GenEval-style prompts scored after training (0 skips)
    eval_psnr_images: int = 64
    eval_steps: int = 20
    layout_guidance: float = 0.0  # written to the pipeline's genfoundry_sana.json (sana/layout.py; 0: off)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _replace_nested(cfg: SanaTrainConfig, overrides: dict[str, Any]) -> SanaTrainConfig:
    """Apply {"dit.steps": 10, "seed": 1, ...}; unknown names are a clear error."""
    cfg = _copy_config(cfg)
    for dotted, value in overrides.items():
        target = cfg
        *parents, name = dotted.split(".")
        for part in parents:
            if not hasattr(target, part):
                raise ValueError(f"unknown config section {part!r} in {dotted!r}")
            target = getattr(target, part)
        if not any(f.name == name for f in dataclasses.fields(target)):
            known = ", ".join(f.name for f in dataclasses.fields(target))
            raise ValueError(f"unknown config field {dotted!r}; known here: {known}")
        setattr(target, name, value)
    return cfg


def _copy_config(cfg: SanaTrainConfig) -> SanaTrainConfig:
    return SanaTrainConfig(
        data=dataclasses.replace(cfg.data), text=dataclasses.replace(cfg.text),
        dcae=dataclasses.replace(cfg.dcae), dit=dataclasses.replace(cfg.dit),
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
           if f.name not in ("data", "text", "dcae", "dit")},
    )


def preset(name: str, **overrides: Any) -> SanaTrainConfig:
    """Named recipes: "tiny" (tests, seconds), "cpu" (default, minutes on a laptop), "gpu" (one GPU, ~10 min estimated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}")
    return _replace_nested(PRESETS[name](), overrides)


def _tiny() -> SanaTrainConfig:
    return SanaTrainConfig(
        data=DataConfig(scenes=64),
        text=TextEncoderTrainConfig(hidden_size=32, intermediate_size=64, num_layers=1, steps=6, batch_size=16),
        dcae=DCAETrainConfig(widths=(8, 16, 16, 32), latent_channels=4, head_dim=8, steps=6, batch_size=8,
                             scale_images=16, latent_noise=0.2),
        dit=DiTTrainConfig(width=64, depth=2, cross_heads=2, steps=6, batch_size=8, warmup=2),
        checkpoint_every=3, eval_prompts=5, eval_psnr_images=4, eval_steps=2, validation_prompts=5,
    )


def _cpu() -> SanaTrainConfig:
    # The embedded sana-shapes: about 2 hours on 2 CPU cores, ~5 MB in fp16.
    return SanaTrainConfig(
        data=DataConfig(scenes=30_000, workers=2),
        text=TextEncoderTrainConfig(steps=400),
        dcae=DCAETrainConfig(widths=(16, 32, 64, 128), latent_channels=8, batch_size=16, steps=1800, lr=2e-3,
                             warmup=50, latent_noise=0.2, scale_images=1024),
        dit=DiTTrainConfig(width=128, depth=6, steps=6000, batch_size=64, lr=1e-3, warmup=100, ema_decay=0.999),
        checkpoint_every=500, eval_prompts=300, eval_psnr_images=500, flow_shift_candidates=(1.0, 2.0, 3.0),
        validation_prompts=100, layout_guidance=12.0,  # the embedded model's, chosen by sana_layout_study.py
    )


def _gpu() -> SanaTrainConfig:
    # The recipe of the embedded sana-shapes in one run on one H100/H200 (about 10 minutes, estimated from
    # the step rates of the two fixed-time H100 runs the zoo model came from; not yet run in one piece):
    # the cpu preset's text encoder and DC-AE, a width-256 DiT (10.9M parameters) for 7,600 steps of
    # batch 256 on 120,000 scenes. 24 MB in fp16.
    return SanaTrainConfig(
        data=DataConfig(scenes=120_000, workers=12),
        text=TextEncoderTrainConfig(steps=400),
        dcae=DCAETrainConfig(widths=(16, 32, 64, 128), latent_channels=8, batch_size=16, steps=1800, lr=2e-3,
                             warmup=50, latent_noise=0.2, scale_images=1024),
        dit=DiTTrainConfig(width=256, depth=10, cross_heads=8, steps=7600, batch_size=256, lr=6e-4, warmup=200,
                           ema_decay=0.999),
        checkpoint_every=1000, eval_prompts=300, eval_psnr_images=500, flow_shift_candidates=(1.0, 2.0, 3.0),
        validation_prompts=100, layout_guidance=12.0,  # the embedded model's, chosen by sana_layout_study.py
    )


PRESETS: dict[str, Callable[[], SanaTrainConfig]] = {"tiny": _tiny, "cpu": _cpu, "gpu": _gpu}


# ----------------------------------------------------------------------------------------------
# Data: ShapeWorld scenes rendered once into memory


@dataclass
class SceneBank:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    captions: list[str]
    categories: list[str]
    qa: list[list[tuple[str, str]]]


def _render_range(args: tuple[int, int, int, int]) -> tuple[np.ndarray, list[str], list[str], list]:
    from genfoundry.shapes import ShapesDataset, questions, render_scene

    seed, start, stop, size = args
    data = ShapesDataset(stop, seed=seed, size=size)
    images, captions, categories, qa = [], [], [], []
    for i in range(start, stop):
        scene = data.scene(i)
        images.append(np.asarray(render_scene(scene), dtype=np.uint8).transpose(2, 0, 1))
        captions.append(scene.caption)
        categories.append(scene.category)
        qa.append(questions(scene))
    return np.stack(images), captions, categories, qa


def render_bank(count: int, seed: int, size: int = 64, workers: int = 0) -> SceneBank:
    """Scenes 0..count-1 of the ShapeWorld stream `seed` (identical on every rank and machine)."""
    if count < 1:
        raise ValueError(f"scene count must be >= 1, got {count}")
    chunk = max(256, count // max(1, 4 * workers))
    jobs = [(seed, s, min(s + chunk, count), size) for s in range(0, count, chunk)]
    if workers > 0 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_render_range, jobs)
    else:
        parts = [_render_range(j) for j in jobs]
    return SceneBank(
        images=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        captions=[c for p in parts for c in p[1]],
        categories=[c for p in parts for c in p[2]],
        qa=[q for p in parts for q in p[3]],
    )


def lm_texts(bank: SceneBank) -> list[str]:
    """Language-model corpus: every caption and every 'question answer' line of the scenes."""
    texts = list(bank.captions)
    for pairs in bank.qa:
        texts += [f"{q} {a}" for q, a in pairs]
    return texts


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,S,S] -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# The resumable training loop


def step_generator(seed: int, stage: str, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator for one step's randomness, independent of how the run got to `step`."""
    stage_id = STAGES.index(stage) if stage in STAGES else 99
    value = ((int(seed) * 1_000_003 + stage_id) * 1_000_033 + int(step)) * 101 + int(rank)
    gen = torch.Generator(device=device)
    gen.manual_seed(value % (2**63 - 1))
    return gen


def learning_rate(step: int, total: int, base: float, warmup: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% of `base` (stateless, so resuming needs no scheduler).

    With a time budget, `time_progress` (elapsed / budget) drives the decay once it is ahead of the steps.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class StageResult:
    name: str
    steps: int
    resumed_from: int
    losses: list[float]  # mean loss per logging window (this process's view)
    seconds: float

    def summary(self) -> dict:
        head = self.losses[: max(1, len(self.losses) // 10)]
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return {
            "steps": self.steps, "resumed_from": self.resumed_from, "seconds": round(self.seconds, 2),
            "loss_first": float(np.mean(head)) if self.losses else None,
            "loss_last": float(np.mean(tail)) if self.losses else None,
        }


class TrainingStopped(RuntimeError):
    """Raised by the loop when `stop_after` steps were run (used to simulate a killed run)."""


def run_stage(
    name: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[int, torch.Generator], torch.Tensor],
    steps: int,
    base_lr: float,
    warmup: int,
    dist: DistInfo,
    work_dir: Path,
    seed: int,
    checkpoint_every: int,
    resume: bool,
    ema: EMA | None = None,
    grad_clip: float = 1.0,
    amp: bool = True,
    stop_after: int | None = None,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> StageResult:
    """Optimise `loss_fn(step, generator)` for `steps` steps with checkpoints every `checkpoint_every`.

    The final checkpoint (step == steps) marks the stage done; with `resume`, a done stage is loaded
    and skipped, an unfinished one continues from its latest checkpoint.

    `max_seconds` is a wall-clock budget for this call: the cosine decay follows whichever runs out
    first, steps or seconds, and the stage ends (with a checkpoint) when the time is up. How many steps
    that is depends on the machine, so a time-limited run is not reproducible step for step; a later
    `resume` continues it towards `steps`.
    """
    from tqdm import tqdm

    folder = work_dir / "checkpoints" / name
    start = 0
    latest = latest_checkpoint(folder)
    if latest is not None:
        if not resume:
            raise FileExistsError(
                f"{folder} already holds checkpoints (latest {latest.name}); pass resume=True (--resume) to "
                "continue that run, or use another work directory"
            )
        start, _ = load_checkpoint(latest, model=model, optimizer=optimizer, ema=ema)
        log(f"[{name}] resumed from {latest} (step {start}/{steps})")
        if start > steps:
            raise ValueError(f"[{name}] checkpoint step {start} is beyond the configured {steps} steps")
    device = dist.device
    use_amp = amp and device.type == "cuda"
    losses: list[float] = []
    window: list[torch.Tensor] = []
    log_every = max(1, min(50, steps // 20))
    began = time.time()
    elapsed = 0.0  # seconds of this call, as of the last step, agreed by all ranks (only with a budget)
    bar = tqdm(range(start, steps), desc=name, initial=start, total=steps,
               disable=not (dist.is_main and sys.stderr.isatty()))
    model.train()
    for step in bar:
        if stop_after is not None and step - start >= stop_after:
            raise TrainingStopped(f"[{name}] stopped after {stop_after} steps at step {step}")
        time_progress = elapsed / max_seconds if max_seconds and step - start >= warmup else 0.0
        lr = learning_rate(step, steps, base_lr, warmup, time_progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        gen = step_generator(seed, name, step, dist.rank, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(step, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        window.append(loss.detach())
        done = step + 1
        if done % log_every == 0 or done == steps:  # reading the loss syncs the GPU: only once per window
            losses.append(torch.stack(window).float().mean().item())
            window.clear()
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"[{name}] loss became {losses[-1]} by step {done}; lower the learning rate")
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if bar.disable and dist.is_main and (done % (log_every * 5) == 0 or done == steps):
                log(f"[{name}] step {done}/{steps} loss {losses[-1]:.5f} lr {lr:.2e}")
        if max_seconds is not None:
            elapsed = rank_max(time.time() - began, device)
        out_of_time = max_seconds is not None and elapsed >= max_seconds
        if done % checkpoint_every == 0 or done == steps or out_of_time:
            save_checkpoint(checkpoint_path(folder, done), model=model, optimizer=optimizer, ema=ema,
                            step=done, extra={"stage": name})
        if out_of_time:
            if window:
                losses.append(torch.stack(window).float().mean().item())
            log(f"[{name}] time budget of {max_seconds:g} s reached at step {done}/{steps}")
            steps = done
            break
    model.eval()
    return StageResult(name, steps, start, losses, time.time() - began)


# ----------------------------------------------------------------------------------------------
# Stage 2: the text encoder, pre-trained as a language model


def build_language_model(cfg: TextEncoderTrainConfig, tokenizer) -> nn.Module:
    """A small Llama-architecture causal LM sized for the ShapeWorld vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.hidden_size % cfg.num_heads:
        raise ValueError(f"text hidden_size {cfg.hidden_size} must be a multiple of num_heads {cfg.num_heads}")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=max(64, cfg.max_length), tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attention_dropout=0.0,
    )
    return LlamaForCausalLM(config)


def tokenize_corpus(texts: Sequence[str], tokenizer, max_length: int) -> torch.Tensor:
    """Unique lines -> LongTensor [M, max_length]: <bos> words <eos>, right-padded with <pad>."""
    unique = sorted(set(texts))
    rows = torch.full((len(unique), max_length), tokenizer.pad_token_id, dtype=torch.long)
    for i, text in enumerate(unique):
        ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]
        if len(ids) > max_length:
            raise ValueError(f"{text!r} has {len(ids)} tokens; raise text.max_length above {max_length}")
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


def train_text_encoder(cfg: SanaTrainConfig, bank: SceneBank, tokenizer, dist: DistInfo, work_dir: Path,
                       resume: bool, stop_after: int | None = None, log: Callable[[str], None] = print):
    """Pre-train the LM on captions + QA, then return it frozen (eval mode, no grads)."""
    tc = cfg.text
    seed_everything(cfg.seed + 1, dist.rank)
    model = build_language_model(tc, tokenizer).to(dist.device)
    rows = tokenize_corpus(lm_texts(bank), tokenizer, tc.max_length).to(dist.device)
    pad = tokenizer.pad_token_id
    per_rank = _per_rank_batch(tc.batch_size, dist)
    trained = _maybe_ddp(model, dist)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        ids = rows[torch.randint(len(rows), (per_rank,), generator=gen, device=gen.device)]
        mask = (ids != pad).long()
        labels = ids.masked_fill(mask == 0, -100)
        return trained(input_ids=ids, attention_mask=mask, labels=labels).loss

    optimizer = _adamw(model, tc.lr, cfg.weight_decay, dist)
    result = run_stage("text_encoder", model=trained, optimizer=optimizer, loss_fn=loss_fn, steps=tc.steps,
                       base_lr=tc.lr, warmup=tc.warmup, dist=dist, work_dir=work_dir, seed=cfg.seed,
                       checkpoint_every=cfg.checkpoint_every, resume=resume, grad_clip=cfg.grad_clip,
                       amp=cfg.amp, stop_after=stop_after, log=log)
    model.eval().requires_grad_(False)
    return model, result


def _adamw(model: nn.Module, lr: float, weight_decay: float, dist: DistInfo) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                             fused=dist.device.type == "cuda")


def _per_rank_batch(batch_size: int, dist: DistInfo) -> int:
    if batch_size % dist.world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by the world size {dist.world_size}")
    return batch_size // dist.world_size


def _maybe_ddp(model: nn.Module, dist: DistInfo) -> nn.Module:
    if dist.world_size == 1:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


# ----------------------------------------------------------------------------------------------
# Stage 4: the linear DiT, flow matching


def transformer_config(dc: DiTTrainConfig, latent_channels: int, latent_size: int, caption_channels: int):
    from genfoundry.sana.transformer import SanaTransformerConfig

    if dc.width % 32 or dc.width % dc.cross_heads:
        raise ValueError(f"dit.width {dc.width} must be a multiple of 32 (head dim) and of cross_heads {dc.cross_heads}")
    return SanaTransformerConfig(
        in_channels=latent_channels, out_channels=latent_channels, num_attention_heads=dc.width // 32,
        attention_head_dim=32, num_layers=dc.depth, num_cross_attention_heads=dc.cross_heads,
        cross_attention_head_dim=dc.width // dc.cross_heads, cross_attention_dim=dc.width,
        caption_channels=caption_channels, sample_size=latent_size, patch_size=1,
        interpolation_scale=1.0 if dc.position_embedding else None,
    )


@dataclass
class TextBank:
    """Encoded unique captions; row `empty` is the empty caption (the unconditional branch)."""

    embeddings: torch.Tensor  # [U + 1, L, D]
    mask: torch.Tensor  # [U + 1, L]
    index: dict[str, int]
    empty: int


def flow_matching_loss(model: nn.Module, x0: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                       gen: torch.Generator, logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """MSE between the predicted and true velocity eps - x0 at a logit-normal time t (model sees 1000 t)."""
    batch = x0.shape[0]
    t = torch.sigmoid(torch.randn(batch, generator=gen, device=x0.device) * logit_std + logit_mean)
    eps = torch.randn(x0.shape, generator=gen, device=x0.device)
    t4 = t.view(batch, 1, 1, 1)
    x_t = (1 - t4) * x0 + t4 * eps
    velocity = model(x_t, t * 1000, text, mask)
    return F.mse_loss(velocity.float(), eps - x0)


def scene_weights(categories: Sequence[str], weights: dict[str, float] | None) -> torch.Tensor | None:
    """Per-scene sampling weights from category weights (None when all scenes are equally likely)."""
    from genfoundry.shapes import CATEGORIES

    if not weights:
        return None
    if not isinstance(weights, dict):
        raise ValueError(f"dit.category_weights must map category names to weights, got {weights!r}")  # noqa: TRY004 (config errors: ValueError)
    unknown = sorted(set(weights) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"dit.category_weights names unknown categories {unknown}; expected some of "
                         f"{', '.join(CATEGORIES)}")
    bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or not v >= 0}
    if bad:
        raise ValueError(f"dit.category_weights must be numbers >= 0, got {bad}")
    if not any(float(weights.get(c, 1.0)) > 0 for c in CATEGORIES):
        raise ValueError(f"dit.category_weights {weights} give every category weight 0")
    per_scene = torch.tensor([float(weights.get(c, 1.0)) for c in categories], dtype=torch.float64)
    if len(categories) and not per_scene.sum() > 0:
        raise ValueError(f"dit.category_weights {weights} give every training scene weight 0")
    return per_scene


def draw_scenes(count: int, batch: int, gen: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of one batch of scenes: uniform over `count`, or in proportion to `weights` (with replacement)."""
    if weights is None:
        return torch.randint(count, (batch,), generator=gen, device=gen.device)
    return torch.multinomial(weights, batch, replacement=True, generator=gen)


def train_transformer(cfg: SanaTrainConfig, latents: torch.Tensor, caption_rows: torch.Tensor, texts: TextBank,
                      dist: DistInfo, work_dir: Path, resume: bool, stop_after: int | None = None,
                      log: Callable[[str], None] = print, weights: torch.Tensor | None = None):
    """Train the DiT on cached (scaled) latents; returns (model with EMA weights, result).

    `weights` (one per latent, e.g. from `scene_weights`) makes a batch draw scenes in proportion to them.
    """
    from genfoundry.sana.transformer import SanaTransformer

    dc = cfg.dit
    seed_everything(cfg.seed + 3, dist.rank)
    if dc.init_from:
        model = SanaTransformer.from_pretrained(dc.init_from, dtype=torch.float32, device=dist.device)
        mc = model.config
        if (mc.in_channels, mc.sample_size, mc.caption_channels) != (latents.shape[1], latents.shape[-1],
                                                                      texts.embeddings.shape[-1]):
            raise ValueError(
                f"the DiT of {dc.init_from} takes {mc.in_channels}-channel {mc.sample_size}x{mc.sample_size} latents "
                f"and {mc.caption_channels}-wide text, but this run has {latents.shape[1]}-channel "
                f"{latents.shape[-1]}x{latents.shape[-1]} latents and {texts.embeddings.shape[-1]}-wide text")
        # the loaded architecture is the one trained and described in the model card
        dc.width, dc.depth = mc.num_attention_heads * mc.attention_head_dim, mc.num_layers
        dc.cross_heads = mc.num_cross_attention_heads
        log(f"[transformer] starting from {dc.init_from} (width {dc.width}, depth {dc.depth})")
    else:
        model_cfg = transformer_config(dc, latents.shape[1], latents.shape[-1], texts.embeddings.shape[-1])
        model = SanaTransformer(model_cfg).to(dist.device)
    ema = EMA(model, dc.ema_decay)
    trained = _maybe_ddp(model, dist)
    per_rank = _per_rank_batch(dc.batch_size, dist)

    if weights is not None:
        weights = weights.to(device=dist.device, dtype=torch.float32)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = draw_scenes(len(latents), per_rank, gen, weights)
        rows = caption_rows[idx]
        drop = torch.rand(per_rank, generator=gen, device=gen.device) < dc.cfg_dropout
        rows = torch.where(drop, torch.full_like(rows, texts.empty), rows)
        return flow_matching_loss(trained, latents[idx], texts.embeddings[rows], texts.mask[rows], gen,
                                  dc.logit_mean, dc.logit_std)

    optimizer = _adamw(model, dc.lr, cfg.weight_decay, dist)
    result = run_stage("transformer", model=trained, optimizer=optimizer, loss_fn=loss_fn, steps=dc.steps,
                       base_lr=dc.lr, warmup=dc.warmup, dist=dist, work_dir=work_dir, seed=cfg.seed,
                       checkpoint_every=cfg.checkpoint_every, resume=resume, ema=ema, grad_clip=cfg.grad_clip,
                       amp=cfg.amp, stop_after=stop_after, max_seconds=dc.max_seconds, log=log)
    ema.copy_to(model)
    model.eval().requires_grad_(False)
    return model, result


# ----------------------------------------------------------------------------------------------
# Stage 3: DC-AE, trained for reconstruction


def dcae_config(ac: DCAETrainConfig):
    from genfoundry.sana.dcae import DCAEConfig

    return DCAEConfig.make(
        compression=ac.compression, latent_channels=ac.latent_channels, widths=tuple(ac.widths),
        encoder_depth=ac.encoder_depth, decoder_depth=ac.decoder_depth, attention_stages=ac.attention_stages,
        head_dim=ac.head_dim,
    )


def train_dcae(cfg: SanaTrainConfig, bank: SceneBank, dist: DistInfo, work_dir: Path, resume: bool,
               stop_after: int | None = None, log: Callable[[str], None] = print):
    """Train the autoencoder on the scene bank; returns (model with scaling_factor set, result)."""
    from genfoundry.sana.dcae import DCAE

    ac = cfg.dcae
    seed_everything(cfg.seed + 2, dist.rank)
    if ac.init_from:
        source = Path(ac.init_from)
        model = DCAE.from_pretrained(source / "vae" if (source / "vae").is_dir() else source, dtype=torch.float32)
        log(f"[dcae] starting from {source} ({model.spatial_compression_ratio}x, "
            f"{model.config.latent_channels} latent channels)")
        if cfg.data.size % model.spatial_compression_ratio:
            raise ValueError(f"canvas {cfg.data.size} is not a multiple of the DC-AE compression "
                             f"{model.spatial_compression_ratio} of {source}")
        model = model.to(dist.device)
        # the loaded architecture is the one trained and described in the model card
        ac.compression, ac.latent_channels = model.spatial_compression_ratio, model.config.latent_channels
    else:
        if cfg.data.size % ac.compression:
            raise ValueError(f"canvas {cfg.data.size} is not a multiple of the DC-AE compression {ac.compression}")
        model = DCAE(dcae_config(ac)).to(dist.device)
    images = bank.images.to(dist.device)
    trained = _maybe_ddp(NoisyReconstruction(model, ac.latent_noise), dist)
    per_rank = _per_rank_batch(ac.batch_size, dist)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        x = to_unit_range(images[torch.randint(len(images), (per_rank,), generator=gen, device=gen.device)])
        recon = trained(x, gen).float()
        return F.mse_loss(recon, x) + ac.l1_weight * F.l1_loss(recon, x)

    optimizer = _adamw(model, ac.lr, cfg.weight_decay, dist)
    result = run_stage("dcae", model=trained, optimizer=optimizer, loss_fn=loss_fn, steps=ac.steps,
                       base_lr=ac.lr, warmup=ac.warmup, dist=dist, work_dir=work_dir, seed=cfg.seed,
                       checkpoint_every=cfg.checkpoint_every, resume=resume, grad_clip=cfg.grad_clip,
                       amp=cfg.amp, stop_after=stop_after, log=log)
    model.eval().requires_grad_(False)
    sample = images[: ac.scale_images]  # the std of raw latents sets scaling_factor (unit-variance latents)
    raw = encode_images(model, sample)
    model.config.scaling_factor = float(1.0 / raw.float().std().clamp_min(1e-6))
    return model, result


class NoisyReconstruction(nn.Module):
    """decode(encode(x) + U(0, latent_noise) * std(latents) * N(0, 1)): the DC-AE's training forward."""

    def __init__(self, dcae: nn.Module, latent_noise: float = 0.0):
        super().__init__()
        self.dcae = dcae
        self.latent_noise = float(latent_noise)

    def forward(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        latents = self.dcae.encode(images)
        if self.latent_noise > 0:  # a Python test: no device sync per step
            batch = latents.shape[0]
            noise_std = torch.rand(batch, 1, 1, 1, generator=gen, device=latents.device) * self.latent_noise
            noise = torch.randn(latents.shape, generator=gen, device=latents.device, dtype=latents.dtype)
            latents = latents + noise_std.to(latents.dtype) * latents.detach().std() * noise
        return self.dcae.decode(latents)


@torch.no_grad()
def encode_images(dcae: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """uint8 images [N,3,S,S] -> raw (unscaled) latents [N,C,S/f,S/f] in fp32, on the images' device."""
    out = [dcae.encode(to_unit_range(images[i : i + batch_size])).float() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# Text features for the DiT


def make_text_encoder(language_model: nn.Module, tokenizer, max_length: int, feature_layers: int | None = None):
    """The frozen LM's base model (its first `feature_layers` layers) as SANA's text encoder; no CHI
    (its words are not in the ShapeWorld vocabulary)."""
    from genfoundry.sana.text_encoder import TextEncoder

    base = copy.deepcopy(getattr(language_model, "model", language_model))  # LlamaForCausalLM -> LlamaModel
    total = len(base.layers)
    if feature_layers is not None and feature_layers < total:
        if feature_layers < 1:
            raise ValueError(f"text.feature_layers must be >= 1, got {feature_layers}")
        base.layers = base.layers[:feature_layers]
        base.config.num_hidden_layers = feature_layers
        if isinstance(getattr(base.config, "layer_types", None), list):
            base.config.layer_types = base.config.layer_types[:feature_layers]
    return TextEncoder(base.eval(), tokenizer, max_length=max_length, complex_human_instruction=None)


def load_text_encoder(folder: str | os.PathLike, max_length: int, device: torch.device):
    """The frozen text encoder (and tokenizer) of a trained pipeline folder, in float32."""
    from genfoundry.sana.text_encoder import TextEncoder

    root = hub.resolve(folder)
    if not (root / "text_encoder").is_dir() or not (root / "tokenizer").is_dir():
        raise hub.CheckpointError(f"text.init_from {folder}: expected a pipeline folder with text_encoder/ and "
                                  "tokenizer/ sub-folders")
    encoder = TextEncoder.from_pretrained(root / "text_encoder", tokenizer_path=root / "tokenizer",
                                          dtype=torch.float32, device=device, max_length=max_length,
                                          complex_human_instruction=None)
    return encoder.eval().requires_grad_(False)


def encode_caption_bank(text_encoder, captions: Sequence[str], batch_size: int = 256) -> TextBank:
    """Encode every distinct caption once, exactly as the pipeline will at inference, plus ""."""
    unique = sorted(set(captions))
    embeddings, masks = [], []
    for start in range(0, len(unique), batch_size):
        emb, mask = text_encoder.encode(unique[start : start + batch_size], chi=True)
        embeddings.append(emb.float().clone())
        masks.append(mask.clone())
    emb, mask = text_encoder.encode([""], chi=False)  # the pipeline's negative / unconditional prompt
    embeddings.append(emb.float().clone())
    masks.append(mask.clone())
    return TextBank(torch.cat(embeddings), torch.cat(masks), {c: i for i, c in enumerate(unique)}, len(unique))


# ----------------------------------------------------------------------------------------------
# The whole run


@dataclass
class TrainReport:
    out: Path
    stages: dict[str, dict]
    metrics: dict[str, Any]
    seconds: float
    size_bytes: int
    world_size: int = 1


def train_sana(
    cfg: SanaTrainConfig,
    out: str | Path,
    work_dir: str | Path | None = None,
    resume: bool = False,
    dist: DistInfo | None = None,
    command: str = "",
    stop_after: dict[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> TrainReport | None:
    """Run every stage and write the SanaPipeline folder `out` (fp16, diffusers layout, model card).

    `work_dir` (default: `<out>.work`) holds checkpoints and the log; `resume` continues a run there.
    Under DDP every rank trains; rank 0 writes `out` and returns the report (others return None).
    `stop_after` {stage: n} stops a stage after n steps (raises TrainingStopped; tests use it).
    """
    from genfoundry.shapes.tokenizer import build_tokenizer

    began = time.time()
    plain_log = log

    def log(message: str) -> None:
        plain_log(f"[{time.time() - began:6.1f}s] {message}")

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    dist = dist or _single_process()
    stop_after = stop_after or {}
    if cfg.dit.init_from and not cfg.text.init_from:
        raise ValueError("dit.init_from needs text.init_from (the text encoder that DiT was trained with)")
    if resume and all(latest_checkpoint(work / "checkpoints" / stage) is None for stage in STAGES):
        raise hub.CheckpointError(
            f"cannot resume: no checkpoint found under {work / 'checkpoints'} (expected "
            f"checkpoints/<stage>/checkpoint-<step>.pt from an earlier run with this work directory)"
        )
    if dist.is_main:
        work.mkdir(parents=True, exist_ok=True)
        hub.write_json_atomic(work / "config.json", cfg.to_dict())

    scene_weights([], cfg.dit.category_weights)  # a bad weight table fails before any work
    log(f"rendering {cfg.data.scenes} ShapeWorld scenes ({cfg.data.size}x{cfg.data.size}, stream {cfg.data.seed})")
    t0 = time.time()
    bank = render_bank(cfg.data.scenes, cfg.data.seed, cfg.data.size, cfg.data.workers)
    data_seconds = time.time() - t0
    tokenizer = build_tokenizer()

    if cfg.text.init_from:
        text_encoder = load_text_encoder(cfg.text.init_from, cfg.text.max_length, dist.device)
        text_result = StageResult("text_encoder", 0, 0, [], 0.0)
        log(f"[text_encoder] using the text encoder of {cfg.text.init_from}")
    else:
        language_model, text_result = train_text_encoder(cfg, bank, tokenizer, dist, work, resume,
                                                         stop_after.get("text_encoder"), log)
        text_encoder = make_text_encoder(language_model, tokenizer, cfg.text.max_length, cfg.text.feature_layers)
    dcae, dcae_result = train_dcae(cfg, bank, dist, work, resume, stop_after.get("dcae"), log)

    t0 = time.time()
    latents = encode_images(dcae, bank.images.to(dist.device)) * dcae.config.scaling_factor
    texts = encode_caption_bank(text_encoder, bank.captions)
    caption_rows = torch.tensor([texts.index[c] for c in bank.captions], device=dist.device)
    cache_seconds = time.time() - t0
    transformer, dit_result = train_transformer(cfg, latents, caption_rows, texts, dist, work, resume,
                                                stop_after.get("transformer"), log,
                                                scene_weights(bank.categories, cfg.dit.category_weights))
    stages = {r.name: r.summary() for r in (text_result, dcae_result, dit_result)}
    stages["data"] = {"seconds": round(data_seconds, 2), "scenes": cfg.data.scenes}
    stages["cache"] = {"seconds": round(cache_seconds, 2), "distinct_captions": len(texts.index)}
    if not dist.is_main:
        return None

    pipe = assemble_pipeline(transformer, dcae, text_encoder, cfg.flow_shift_candidates[0], cfg.layout_guidance)
    shift_scores: dict[float, float] = {}
    if len(cfg.flow_shift_candidates) > 1:
        _, shift_scores = select_flow_shift(pipe, cfg.flow_shift_candidates, cfg.validation_prompts,
                                            cfg.seed + VALIDATION_SEED_OFFSET, cfg.eval_steps, log)
    save_half(pipe, out)
    train_seconds = time.time() - began
    metrics = evaluate_trained(out, cfg, dist.device, log) if cfg.eval_prompts > 0 else {}
    metrics["flow_shift"] = pipe.config.flow_shift
    metrics["flow_shift_validation"] = {str(k): v for k, v in shift_scores.items()}
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    report = TrainReport(out, stages, metrics, train_seconds, size, dist.world_size)
    write_model_card(out, cfg, report, command)
    hub.write_json_atomic(work / "report.json", {"stages": stages, "metrics": metrics,
                                                 "train_seconds": train_seconds, "size_bytes": size})
    log(f"wrote {out} ({size / 1e6:.1f} MB) in {train_seconds:.0f} s of training")
    return report


def _single_process() -> DistInfo:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return DistInfo(rank=0, world_size=1, local_rank=0, device=device, is_main=True)


# ----------------------------------------------------------------------------------------------
# Assembling, judging and describing the result


def assemble_pipeline(transformer: nn.Module, dcae: nn.Module, text_encoder, flow_shift: float = 3.0,
                      layout_guidance: float = 0.0):
    """The trained parts as one SanaPipeline (no CHI: its words are not in the ShapeWorld vocabulary)."""
    from genfoundry.sana.pipeline import SanaPipeline, SanaPipelineConfig

    config = SanaPipelineConfig(flow_shift=flow_shift, max_length=text_encoder.max_length,
                                complex_human_instruction=None, lowercase=True, layout_guidance=layout_guidance)
    return SanaPipeline(transformer=transformer, vae=dcae, text_encoder=text_encoder, config=config)


def select_flow_shift(pipe, candidates: Sequence[float], prompts: int, seed: int, steps: int,
                      log: Callable[[str], None] = print) -> tuple[float, dict[float, float]]:
    """The sampling shift with the best GenEval-style score on validation prompts (not the eval ones)."""
    from genfoundry.sana import evaluate as sana_eval

    scores = {}
    for shift in candidates:
        pipe.config.flow_shift = float(shift)
        report = sana_eval.evaluate_geneval(pipe, prompts=prompts, seed=seed, steps=steps, batch_size=100)
        scores[float(shift)] = report.overall
        log(f"flow shift {shift}: validation score {report.overall:.3f} on {prompts} prompts")
    best = max(scores, key=lambda k: (scores[k], -abs(k - 3.0)))
    pipe.config.flow_shift = best
    return best, scores


def save_half(pipe, out: Path) -> None:
    """Write the pipeline with every part in fp16 (the linear attention still computes in fp32)."""
    pipe.transformer.half()
    pipe.vae.half()
    pipe.text_encoder.model.half()
    pipe.save_pretrained(out)


def evaluate_trained(out: Path, cfg: SanaTrainConfig, device: torch.device,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Reload the written folder (as a user would) and score it: GenEval-style table and DC-AE PSNR."""
    from genfoundry.sana import evaluate as sana_eval
    from genfoundry.sana.pipeline import SanaPipeline

    t0 = time.time()
    pipe = SanaPipeline.from_pretrained(out, device=device)  # bf16 on CUDA, fp32 on the CPU
    report = sana_eval.evaluate_geneval(pipe, prompts=cfg.eval_prompts, seed=cfg.seed, steps=cfg.eval_steps,
                                        size=cfg.data.size, batch_size=100)
    psnr = sana_eval.dcae_psnr(pipe.vae, cfg.eval_psnr_images, cfg.seed, cfg.data.size)
    table = sana_eval.format_table(report, psnr)
    log(table)
    return {**report.to_dict(), "psnr_db": psnr, "eval_steps": cfg.eval_steps, "sampler": "flow-dpm-solver",
            "guidance_scale": pipe.config.guidance_scale, "eval_seconds": round(time.time() - t0, 1), "table": table}


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_model_card(out: Path, cfg: SanaTrainConfig, report: TrainReport, command: str) -> Path:
    """README.md of the pipeline folder: data, config, command, wall time, final metrics (all measured)."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "README.md")
    sizes = "\n".join(f"| `{p.relative_to(out)}` | {p.stat().st_size / 1e6:.2f} MB |" for p in files)
    stages = "\n".join(
        f"| {name} | {s.get('steps', '')} | {s.get('seconds', '')} | "
        f"{_fmt(s.get('loss_first'))} | {_fmt(s.get('loss_last'))} |"
        for name, s in report.stages.items()
    )
    m = report.metrics
    metrics = m.get("table", "(evaluation skipped: eval_prompts = 0)")
    eval_line = (f"{m.get('prompts')} held-out prompts, {m.get('sampler')}, {m.get('eval_steps')} steps, "
                 f"guidance {m.get('guidance_scale')}, seed {cfg.seed}, flow shift {m.get('flow_shift')}"
                 if "table" in m else "")
    if m.get("flow_shift_validation"):
        eval_line += (f"{'. ' if eval_line else ''}The flow shift was chosen on {cfg.validation_prompts} validation prompts (another seed): "
                      + ", ".join(f"shift {k}: {v:.3f}" for k, v in m["flow_shift_validation"].items()))
    dcae_origin = (f" (this run started from the DC-AE of `{cfg.dcae.init_from}` and trained it "
                   f"{cfg.dcae.steps} more steps)" if cfg.dcae.init_from else "")
    if cfg.dcae.latent_noise:
        dcae_origin += (f", with Gaussian noise of up to {cfg.dcae.latent_noise} x the latent std added to its "
                        "latents in training so that the decoder draws clean shapes from the imperfect latents "
                        "of a small DiT")
    text_origin = (f" (this run reused the text encoder and tokenizer of `{cfg.text.init_from}` unchanged)"
                   if cfg.text.init_from else "")
    dit_origin = (f" (this run continued the DiT of `{cfg.dit.init_from}` with a fresh optimizer and schedule)"
                  if cfg.dit.init_from else "")
    if cfg.dit.max_seconds:
        dit_origin += f", for a wall-clock budget of {cfg.dit.max_seconds:g} s"
    weights = cfg.dit.category_weights
    shares = (f"in equal shares, which the DiT drew with the category weights {json.dumps(weights)} (others 1)"
              if weights else "in equal shares")
    hard_share = (f"the DiT drew the training scenes with the category weights {json.dumps(weights)} "
                  "(categories not named: 1)" if weights else
                  "they are each a fifth of the training scenes (categories are sampled uniformly)")
    text = f"""# sana-shapes

A small SANA text-to-image model trained from scratch on ShapeWorld ({cfg.data.size}x{cfg.data.size}
procedural scenes of coloured circles, squares and triangles with GenEval-style captions). All four
parts were trained by `genfoundry train sana`: a word-level tokenizer, a decoder-only Llama-architecture
text encoder pre-trained as a language model on captions and QA text then frozen (its first
{cfg.text.feature_layers} of {cfg.text.num_layers} layers are kept: the deeper layers of a small LM trained on
this grammar encode the next word, which does not depend on the colour or shape just read){text_origin}, a DC-AE
(f{cfg.dcae.compression}, {cfg.dcae.latent_channels} latent channels) trained for reconstruction{dcae_origin}, and the
linear DiT trained with flow matching (velocity target, logit-normal timesteps, CFG dropout
{cfg.dit.cfg_dropout}, EMA {cfg.dit.ema_decay}){dit_origin}. Stored in fp16, diffusers layout.

## Data
{cfg.data.scenes} scenes of the ShapeWorld stream {cfg.data.seed} (`genfoundry.shapes.ShapesDataset`),
categories single_object, two_objects, counting, colors, position {shares}; the text encoder
also read every question/answer line of those scenes. Evaluation uses other seeds (held-out prompts
and renders; see `genfoundry/sana/evaluate.py`).

## Command
```
{command or "(called from Python: genfoundry.sana.train.train_sana)"}
```
Wall time of training (data, all stages, writing): **{report.seconds:.0f} s** on {_device_name()}
({report.world_size} process{"es" if report.world_size > 1 else ""}).

| stage | steps | seconds | loss (first 10%) | loss (last 10%) |
| --- | ---: | ---: | ---: | ---: |
{stages}

## Metrics
{eval_line}

{metrics}

## Counting and position
These are the hard categories. What the recipe does for them: {hard_share}; the DiT adds a 2-D sincos
position embedding (`interpolation_scale` 1.0, as SANA-4K does) so left/right/above/below and object
placement do not rest on the zero padding of the depthwise convolutions alone; the text features come
from an early LM layer, where number and relation words are more distinct than deeper in the LM (see
above); training relations are rendered with a margin beyond the evaluator's threshold.
`experiments/sana_relation_probe.py` measures whether the DiT acts on the relation word.

## Use
```
genfoundry generate "a red circle to the left of a blue square" -o out.png
```
```python
from genfoundry.sana import SanaPipeline
images = SanaPipeline.from_pretrained("sana-shapes")(["two green triangles"], seed=0)
```

## Config
```json
{json.dumps(cfg.to_dict(), indent=2)}
```

## Files ({report.size_bytes / 1e6:.2f} MB in total)
| file | size |
| --- | ---: |
{sizes}
"""
    path = out / "README.md"
    hub.write_text_atomic(path, text)
    return path


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


def _device_name() -> str:
    if torch.cuda.is_available():
        return f"1 x {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"
