"""Two-stage VILA-U training on ShapeWorld (DDP-capable through torchrun, resumable).

Stage 1 trains the vision tower: reconstruction + commitment + SigLIP sigmoid contrastive loss
against the frozen text encoder (reconstruction 1 : alignment `contrastive_weight`, 0.1 by default;
`contrastive=False` gives the paper's ablation).
Stage 1b (optional, `align_steps`) trains the alignment head alone on the frozen tower's features;
the codes stay the same, so it can refine a finished folder's retrieval without touching its LLM.
Stage 2 freezes the tower and trains the LLM, the projector and the depth transformer on a mix of
[image, text] (loss on captions / answers) and [text, image] (loss on every code; captions dropped
to " " 10% of the time so CFG has an unconditional branch), plus a few moving-shape clips.

Output folder:
    tower_ckpt/, align_ckpt/, llm_ckpt/checkpoint-*.pt    resumable training state (genfoundry.training)
    tower.safetensors                                      the finished stage-1 tower (stage 1 is skipped if present)
    model/                                                 the finished VILA-U folder (VilaU.from_pretrained)
    log.jsonl, summary.json                                losses per logged step; first/last averages
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from genfoundry import hub
from genfoundry.shapes import ShapesDataset, caption_edits, collate, image_to_tensor
from genfoundry.training import (
    EMA, DistInfo, checkpoint_path, cleanup_distributed, latest_checkpoint, load_checkpoint, rank_max,
    save_checkpoint, seed_everything, setup_distributed,
)
from genfoundry.vilau.data import MixConfig, batch_plan, clip_at, generation_segments, understanding_segments
from genfoundry.vilau.model import Segment, VilaU, VilaUConfig
from genfoundry.vilau.tower import ALIGN_IMAGE_HEADS

PRESETS = {"shapes": VilaUConfig, "tiny": VilaUConfig.tiny}


@dataclass
class TrainConfig:
    out: str
    preset: str = "shapes"
    tower_steps: int = 2000
    llm_steps: int = 2000
    batch_size: int = 32
    llm_batch_size: int | None = None  # stage 2 batch (default: batch_size)
    tower_lr: float = 5e-4
    llm_lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    contrastive: bool = True
    contrastive_weight: float = 0.1  # of the sigmoid text-alignment loss against reconstruction (1.0)
    mix: MixConfig = field(default_factory=MixConfig)
    ema_decay: float = 0.0  # 0 disables the EMA; otherwise the exported weights are the EMA
    save_every: int = 500
    log_every: int = 20
    num_workers: int = 0
    max_seconds_tower: float | None = None  # stop a stage early (and finish it normally) after this long
    max_seconds_llm: float | None = None
    tower_from: str | None = None  # reuse a finished tower.safetensors instead of stage 1
    # Start from a finished VILA-U folder (e.g. the embedded vila-u-shapes): all its weights, stage 1
    # skipped, stage 2 from step 0 with a fresh optimizer and schedule (continued training elsewhere).
    init_from: str | None = None
    # With init_from: give a folder saved without grid-cell embeddings (image_position "none") the
    # embedding at its initial value and train it with the rest (fresh models have it from the preset).
    add_grid_position: bool = False
    amp: bool = True  # bf16 autocast on CUDA
    # Stage 1b (off at 0): the text-alignment head alone, on the frozen tower's features of
    # `align_images` images (computed once, re-sampled every step). The codes do not change, so it
    # also applies to a finished folder (init_from) without touching what the LLM learned.
    align_steps: int = 0
    align_lr: float = 1e-3
    align_batch_size: int = 256
    align_images: int = 20000
    # Per image, this many hard-negative captions (one edit away: a colour, shape, count, relation...;
    # genfoundry.shapes.caption_edits) join the batch's texts as negatives; 0 = in-batch negatives only.
    align_hard_negatives: int = 0
    # Before training: give the alignment head a fresh image side of this kind ("mlp" or "attention",
    # genfoundry.vilau.tower.ALIGN_IMAGE_HEADS) where the model's differs; None keeps the model's.
    align_image_head: str | None = None
    # Stage 1b trains the tower's text encoder with the head (LiT-style, the image side locked); the
    # codes, and so the LLM's inputs, still do not change.
    align_train_text: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.mix, dict):
            self.mix = MixConfig(**self.mix)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {sorted(PRESETS)}")
        for name in ("tower_steps", "llm_steps", "align_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("align_batch_size", "align_images"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2 (a contrastive batch needs negatives), got {getattr(self, name)}")
        if self.align_image_head is not None and self.align_image_head not in ALIGN_IMAGE_HEADS:
            raise ValueError(f"align_image_head must be one of {', '.join(ALIGN_IMAGE_HEADS)} (or None), "
                             f"got {self.align_image_head!r}")
        if self.align_hard_negatives < 0:
            raise ValueError(f"align_hard_negatives must be >= 0, got {self.align_hard_negatives}")
        if not 0.0 < self.contrastive_weight < float("inf"):
            raise ValueError(f"contrastive_weight must be > 0 (use contrastive=False to drop it), "
                             f"got {self.contrastive_weight}")
        if self.tower_lr <= 0 or self.llm_lr <= 0 or self.align_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.add_grid_position and not self.init_from:
            raise ValueError("add_grid_position applies to a model given by init_from (fresh models take the "
                             "preset's image_position)")
        if self.init_from and self.tower_from:
            raise ValueError("init_from already holds a tower; pass init_from or tower_from, not both")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")


def lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% as `progress` goes 0 -> 1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def _loader(cfg: TrainConfig, info: DistInfo, stream: int, start: int, steps: int, size: int,
            batch_size: int) -> DataLoader:
    """Batches start..steps-1 of this rank's deterministic ShapeWorld stream (resuming skips the rest)."""
    data = ShapesDataset(max(1, steps * batch_size), seed=cfg.seed * 1000 + stream * 100 + info.rank, size=size)
    return DataLoader(data, batch_size=batch_size, sampler=range(start * batch_size, steps * batch_size),
                      collate_fn=collate, num_workers=cfg.num_workers, drop_last=True,
                      persistent_workers=False)


class _Logger:
    def __init__(self, out: Path, is_main: bool) -> None:
        self.path, self.is_main = out / "log.jsonl", is_main
        self.history: dict[str, list[dict]] = {}

    def log(self, stage: str, step: int, values: dict[str, float]) -> None:
        record = {"stage": stage, "step": step, **{k: round(v, 5) for k, v in values.items()}}
        self.history.setdefault(stage, []).append(record)
        if self.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if not sys.stdout.isatty():
                print(json.dumps(record), flush=True)


def _average(window: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(1, count) for k, v in window.items()}


def _run_stage(*, name: str, cfg: TrainConfig, info: DistInfo, module: torch.nn.Module, params: list,
               steps: int, lr: float, ckpt_dir: Path, loader_fn, step_fn, logger: _Logger,
               max_seconds: float | None) -> int:
    """The shared loop: resume, optimize, log, checkpoint. Returns the last step reached."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    ema = EMA(module, cfg.ema_decay) if cfg.ema_decay > 0 else None
    start = 0
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        start, _ = load_checkpoint(latest, model=module, optimizer=optimizer, ema=ema)
        if info.is_main:
            print(f"[{name}] resumed from {latest} at step {start}", flush=True)
    if start >= steps:
        if ema is not None:
            ema.copy_to(module)
        return start
    trained = module
    if info.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    began = time.time()
    elapsed = 0.0  # seconds of this call, as of the last step, agreed by all ranks (only with a budget)
    step = start
    window: dict[str, float] = {}
    count = 0
    bar = tqdm(total=steps, initial=start, desc=name, disable=not (info.is_main and sys.stdout.isatty()))
    for batch in loader_fn(start, steps):
        # With a time budget the schedule follows whichever runs out first, steps or seconds.
        progress = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
        if max_seconds is not None and step > cfg.warmup_steps:
            progress = max(progress, elapsed / max_seconds)
        factor = lr_factor(step, progress, cfg.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        metrics = step_fn(trained, batch, step)
        loss = metrics.pop("loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.update(module)
        step += 1
        for k, v in {"loss": float(loss.detach()), **metrics}.items():
            window[k] = window.get(k, 0.0) + v
        count += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == steps:
            avg = _average(window, count)
            logger.log(name, step, {**avg, "lr": lr * factor, "seconds": time.time() - began})
            bar.set_postfix({k: f"{v:.3f}" for k, v in avg.items()})
            window, count = {}, 0
        if max_seconds is not None:
            elapsed = rank_max(time.time() - began, info.device)
        out_of_time = max_seconds is not None and elapsed > max_seconds
        if step % cfg.save_every == 0 or step == steps or out_of_time:
            save_checkpoint(checkpoint_path(ckpt_dir, step), model=module, optimizer=optimizer, ema=ema, step=step,
                            extra={"stage": name, "config": asdict(cfg)})
        if out_of_time:
            if info.is_main:
                print(f"[{name}] time budget of {max_seconds}s reached at step {step}", flush=True)
            break
    bar.close()
    if ema is not None:
        ema.copy_to(module)
    return step


def _autocast(cfg: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def train_tower(model: VilaU, cfg: TrainConfig, info: DistInfo, out: Path, logger: _Logger) -> int:
    tower = model.tower
    # The reconstruction MSE (images in [-1, 1]) is ~100x smaller than the sigmoid loss; at 1:1 the
    # alignment gradient dominates the shared encoder and reconstruction lags (22 vs 29 dB at step
    # 400 on ShapeWorld). The alignment head itself is trained by Adam, which ignores the scale.
    weight = cfg.contrastive_weight if cfg.contrastive else 0.0
    tower.config.contrastive_weight = weight
    model.config.tower.contrastive_weight = weight
    tower.align.requires_grad_(cfg.contrastive)  # unused parameters would stall DDP
    tower.train()
    params = [p for p in tower.parameters() if p.requires_grad]
    size = model.config.tower.image_size

    def step_fn(trained, batch, step):
        images = batch["image"].to(info.device, non_blocking=True)
        text = model.caption_ids(batch["caption"])
        with _autocast(cfg, info.device):
            result = trained(images, text if cfg.contrastive else None)
        mse = float(torch.nn.functional.mse_loss(result.reconstruction.detach().float().clamp(-1, 1), images))
        metrics = {k: float(v.detach()) for k, v in result.losses.items() if k != "total"}
        metrics.update(psnr=10 * math.log10(4.0 / max(mse, 1e-10)), restarts=float(result.dead_restarts))
        return {"loss": result.losses["total"].float(), **metrics}

    return _run_stage(name="tower", cfg=cfg, info=info, module=tower, params=params, steps=cfg.tower_steps,
                      lr=cfg.tower_lr, ckpt_dir=out / "tower_ckpt",
                      loader_fn=lambda start, steps: _loader(cfg, info, 1, start, steps, size, cfg.batch_size),
                      step_fn=step_fn, logger=logger, max_seconds=cfg.max_seconds_tower)


@torch.no_grad()
def alignment_features(model: VilaU, cfg: TrainConfig, info: DistInfo) -> dict:
    """The alignment head's inputs for `cfg.align_images` images of this rank's stream 3: "grid" the
    quantized grids [N, C, g, g], "caption" each image's caption index [N] into "text", the frozen text
    features [T, F] of every distinct caption (and, with hard negatives, of their edits), and "edits":
    per caption index, its edits' indices grouped by kind of edit. The encoder, quantizer and text
    encoder are frozen, so these never change."""
    tower, n = model.tower.eval(), cfg.align_images
    data = ShapesDataset(n, seed=cfg.seed * 1000 + 300 + info.rank, size=model.config.tower.image_size)
    grids, captions = [], []
    chunk = 256
    for start in tqdm(range(0, n, chunk), desc="alignment features", disable=not info.is_main):
        samples = [data[i] for i in range(start, min(n, start + chunk))]
        grid, _ = tower.encode(torch.stack([s["image"] for s in samples]).to(info.device))
        grids.append(grid.float())
        captions += [s["caption"] for s in samples]
    distinct = sorted(set(captions))
    edits = {c: list(caption_edits(c).values()) for c in distinct} if cfg.align_hard_negatives else {}
    table = distinct + sorted({e for groups in edits.values() for g in groups for e in g} - set(distinct))
    index = {c: i for i, c in enumerate(table)}
    ids = model.caption_ids(table)
    text = torch.cat([tower.text_encoder(ids[i:i + chunk]).float() for i in range(0, len(table), chunk)])
    return {"grid": torch.cat(grids), "caption": torch.tensor([index[c] for c in captions], device=info.device),
            "text": text, "ids": ids, "edits": {index[c]: [[index[e] for e in g] for g in groups] for c, groups in edits.items()}}


def hard_negatives(edits: dict[int, list[list[int]]], captions: list[int], k: int, rng: random.Random) -> list[int]:
    """k edit captions per caption index: a kind of edit drawn uniformly, then one edit of that kind."""
    out = []
    for c in captions:
        groups = edits[c]
        out += [rng.choice(rng.choice(groups)) for _ in range(k)]
    return out


def train_alignment(model: VilaU, cfg: TrainConfig, info: DistInfo, out: Path, logger: _Logger) -> int:
    """Stage 1b: the alignment head alone (sigmoid contrastive loss) on the frozen tower's features."""
    tower = model.tower
    tower.requires_grad_(False)
    tower.eval()  # the quantizer must not update its codebooks
    head = tower.align
    head.requires_grad_(True)
    head.train()
    module = _HeadWithTextEncoder(head, tower.text_encoder) if cfg.align_train_text else head
    module.requires_grad_(True)
    features: dict = {}  # computed on first use: a finished stage resumes without them

    def loader_fn(start, steps):
        if not features:
            features.update(alignment_features(model, cfg, info))
        for step in range(start, steps):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + info.rank * 10_007 + step)
            yield torch.randint(0, features["grid"].shape[0], (cfg.align_batch_size,), generator=g)

    def step_fn(trained, picked, step):
        picked = picked.to(info.device)
        caption = features["caption"][picked]
        texts = caption
        if cfg.align_hard_negatives:
            rng = random.Random(f"vilau-align-negatives:{cfg.seed}:{info.rank}:{step}")
            extra = hard_negatives(features["edits"], caption.tolist(), cfg.align_hard_negatives, rng)
            texts = torch.cat([caption, torch.tensor(extra, device=info.device)])
        positives = caption[:, None] == texts[None, :]
        if cfg.align_train_text:  # encode each distinct caption of the batch once, with gradients
            distinct, inverse = texts.unique(return_inverse=True)
            return {"loss": trained(features["grid"][picked], features["ids"][distinct], inverse, positives)}
        return {"loss": trained(features["grid"][picked], features["text"][texts], positives)}

    step = _run_stage(name="align", cfg=cfg, info=info, module=module, params=list(module.parameters()),
                      steps=cfg.align_steps, lr=cfg.align_lr, ckpt_dir=out / "align_ckpt", loader_fn=loader_fn,
                      step_fn=step_fn, logger=logger, max_seconds=None)
    tower.text_encoder.requires_grad_(False)
    head.eval()
    return step


class _HeadWithTextEncoder(torch.nn.Module):
    """Stage 1b with the text encoder trained too: one module, so one checkpoint and one DDP wrapper."""

    def __init__(self, head: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.head, self.text_encoder = head, text_encoder

    def forward(self, grid: torch.Tensor, ids: torch.Tensor, inverse: torch.Tensor, positives: torch.Tensor):
        return self.head(grid, self.text_encoder.encode(ids)[inverse], positives)


def stage2_batch(model: VilaU, batch: dict, step: int, cfg: TrainConfig, rank: int, device: torch.device):
    """Tokenize the images with the frozen tower and build the mixed sequences of one batch."""
    rng = random.Random(f"vilau-mix:{cfg.seed}:{rank}:{step}")
    size = model.config.tower.image_size
    codes = model.tower.tokenize(batch["image"].to(device)).cpu()
    plan = batch_plan(len(codes), cfg.mix)
    # A clip is video_frames images long; mixing one into an image batch would pad every sequence to
    # its length, so a whole batch is either clips or still images (same expected fraction of clips).
    clip_batch = random.Random(f"vilau-clips:{cfg.seed}:{step}").random() < cfg.mix.video_fraction
    sequences = []
    for i, generate in enumerate(plan):
        caption, qa = batch["caption"][i], batch["qa"][i]
        visual = Segment("image", codes[i])
        if clip_batch:
            clip = clip_at(cfg.seed * 1000 + rank, step * len(plan) + i, model.config.video_frames, size)
            frames = torch.stack([image_to_tensor(f) for f in clip.frames]).to(device)
            visual = Segment("video", list(model.tower.tokenize(frames).cpu()))
            caption, qa = clip.caption, clip.qa
        if generate:
            segments = generation_segments(model, visual, caption, rng.random() < cfg.mix.caption_drop)
        else:
            segments = understanding_segments(model, visual, caption, qa, rng.random() < cfg.mix.qa_fraction, rng,
                                              cfg.mix.relation_fraction)
        sequences.append(model.build_sequence(segments))
    return model.collate(sequences).to(device)


def train_llm(model: VilaU, cfg: TrainConfig, info: DistInfo, out: Path, logger: _Logger) -> int:
    model.tower.requires_grad_(False)
    model.train()
    model.tower.eval()  # frozen: the quantizer must not update its codebooks
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    size = model.config.tower.image_size

    def step_fn(trained, batch, step):
        seq = stage2_batch(model, batch, step, cfg, info.rank, info.device)
        with _autocast(cfg, info.device):
            losses = trained(seq)
        return {"loss": losses["loss"].float(), "text_loss": float(losses["text_loss"].detach()),
                "image_loss": float(losses["image_loss"].detach())}

    return _run_stage(name="llm", cfg=cfg, info=info, module=model, params=params, steps=cfg.llm_steps,
                      lr=cfg.llm_lr, ckpt_dir=out / "llm_ckpt",
                      loader_fn=lambda start, steps: _loader(cfg, info, 2, start, steps, size, cfg.llm_batch_size or cfg.batch_size),
                      step_fn=step_fn, logger=logger, max_seconds=cfg.max_seconds_llm)


def _load_tower(model: VilaU, path: Path) -> None:
    tensors, meta = hub.load_file(path)
    hub.check_state_dict(tensors, model.tower.state_dict(), what=str(path))
    model.tower.load_state_dict(tensors)
    if "contrastive_weight" in meta:
        model.config.tower.contrastive_weight = float(meta["contrastive_weight"])


def _summary(history: list[dict], key: str, n: int = 3) -> dict[str, float] | None:
    values = [r[key] for r in history if key in r]
    if not values:
        return None
    k = min(n, len(values))
    return {"first": sum(values[:k]) / k, "last": sum(values[-k:]) / k}


def train(cfg: TrainConfig) -> Path:
    """Run both stages (skipping what is already finished in `cfg.out`); returns the model folder."""
    backend = None if cfg.device == "auto" else ("nccl" if cfg.device == "cuda" else "gloo")
    info = setup_distributed(backend)
    try:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed, info.rank)
        if info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        if info.is_main:
            hub.write_json_atomic(out / "train_config.json", asdict(cfg))
        if cfg.init_from:
            model = VilaU.from_pretrained(cfg.init_from).float().to(info.device)
            if cfg.add_grid_position:
                model.add_grid_position()
        else:
            model = VilaU(PRESETS[cfg.preset]()).to(info.device)
        if cfg.align_image_head and cfg.align_image_head != model.config.tower.align_image_head:
            model.tower.set_align_image_head(cfg.align_image_head)
        logger = _Logger(out, info.is_main)
        tower_file = Path(cfg.tower_from) if cfg.tower_from else out / "tower.safetensors"
        if cfg.init_from:
            if info.is_main:
                if not tower_file.exists():
                    hub.save_file(model.tower.state_dict(), tower_file,
                                  {"contrastive_weight": model.config.tower.contrastive_weight})
                print(f"[tower] using the tower of {cfg.init_from}", flush=True)
        elif tower_file.exists():
            _load_tower(model, tower_file)
            if info.is_main:
                print(f"[tower] using the finished tower {tower_file}", flush=True)
        elif cfg.tower_from:
            raise hub.CheckpointError(f"--tower-from {tower_file} does not exist")
        else:
            train_tower(model, cfg, info, out, logger)
            if info.is_main:
                hub.save_file(model.tower.state_dict(), tower_file,
                              {"contrastive_weight": model.config.tower.contrastive_weight})
            if info.world_size > 1:
                dist.barrier()
        if cfg.align_steps:
            train_alignment(model, cfg, info, out, logger)
        seed_everything(cfg.seed + 1, info.rank)
        train_llm(model, cfg, info, out, logger)
        folder = out / "model"
        if info.is_main:
            model.eval().save_pretrained(folder)
            summary = {stage: {k: _summary(hist, k) for k in ("loss", "reconstruction", "contrastive", "psnr",
                                                               "text_loss", "image_loss") if _summary(hist, k)}
                       for stage, hist in logger.history.items()}
            hub.write_json_atomic(out / "summary.json", summary)
        if info.world_size > 1:
            dist.barrier()
        return folder
    finally:
        cleanup_distributed()
