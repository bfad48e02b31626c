"""Judge a SANA pipeline on ShapeWorld: GenEval-style score per category, and DC-AE reconstruction PSNR.

Held-out data: prompts are sampled from the caption grammar with their own seed stream (balanced over
the GenEval categories), and PSNR images come from a ShapeWorld scene stream that training never
draws from (`HELDOUT_STREAM` + seed; training uses stream `data.seed`, 0 by default). The caption
grammar is small (about 1,600 distinct captions), so held-out prompts are new seeds and new scenes,
not necessarily new caption strings.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

HELDOUT_STREAM = 1_000_003  # scene stream offset of held-out renders


@dataclass
class GenEvalReport:
    per_category: dict[str, tuple[int, int]]  # category -> (correct, total)
    prompts: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    # category -> {constraint type: images where it failed} (present, color, count, no_extra_objects, relation)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def overall(self) -> float:
        total = sum(t for _, t in self.per_category.values())
        return sum(c for c, _ in self.per_category.values()) / total if total else float("nan")

    def category_scores(self) -> dict[str, float]:
        return {cat: (c / t if t else float("nan")) for cat, (c, t) in self.per_category.items()}

    def to_dict(self) -> dict:
        return {
            "overall": self.overall,
            "per_category": {cat: {"correct": c, "total": t, "score": c / t if t else None}
                             for cat, (c, t) in self.per_category.items()},
            "prompts": len(self.prompts),
            "failed_constraints": self.failures,
        }


def heldout_prompts(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (caption, category) pairs, categories in round-robin order (balanced)."""
    from genfoundry.shapes import CATEGORIES, sample_caption

    if count < 1:
        raise ValueError(f"the number of prompts must be >= 1, got {count}")
    rng = random.Random(f"sana-eval:{seed}")
    out = []
    for i in range(count):
        spec = sample_caption(rng, CATEGORIES[i % len(CATEGORIES)])
        out.append((spec.text, spec.category))
    return out


def score_images(images: Sequence, prompts: Sequence[tuple[str, str]]) -> GenEvalReport:
    """Score generated images against their (caption, category) with `genfoundry.shapes.evaluate`."""
    from genfoundry.shapes import CATEGORIES, evaluate

    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    per_category = {cat: [0, 0] for cat in CATEGORIES}
    failures: dict[str, dict[str, int]] = {}
    correct = []
    for image, (caption, category) in zip(images, prompts):
        verdict = evaluate(image, caption)
        ok = bool(verdict["correct"])
        per_category.setdefault(category, [0, 0])
        per_category[category][0] += ok
        per_category[category][1] += 1
        correct.append(ok)
        for kind in sorted({c["type"] for c in verdict["constraints"] if not c["ok"]}):
            counts = failures.setdefault(category, {})
            counts[kind] = counts.get(kind, 0) + 1
    return GenEvalReport({k: (v[0], v[1]) for k, v in per_category.items() if v[1]},
                         [p for p, _ in prompts], correct, failures)


def evaluate_geneval(
    pipe,
    prompts: int = 300,
    seed: int = 0,
    steps: int = 20,
    guidance_scale: float | None = None,  # None: the pipeline's own (genfoundry_sana.json)
    sampler: str = "flow-dpm-solver",
    batch_size: int = 50,
    size: int | None = None,
    progress: bool = False,
    layout_guidance: float | None = None,  # None: the pipeline's own; 0 turns layout guidance off
) -> GenEvalReport:
    """Generate one image per held-out prompt with `pipe` (a SanaPipeline) and score them."""
    from tqdm import tqdm

    pairs = heldout_prompts(prompts, seed)
    size = size or _pipeline_size(pipe)
    images = []
    starts = range(0, len(pairs), batch_size)
    for batch_index, start in enumerate(tqdm(starts, desc="eval", disable=not progress)):
        chunk = [caption for caption, _ in pairs[start : start + batch_size]]
        images += pipe(chunk, height=size, width=size, steps=steps, guidance_scale=guidance_scale,
                       sampler=sampler, seed=seed * 100_003 + batch_index, layout_guidance=layout_guidance)
    return score_images(images, pairs)


def _pipeline_size(pipe) -> int:
    vae, transformer = pipe.vae, pipe.transformer
    return int(transformer.config.sample_size * transformer.config.patch_size * vae.spatial_compression_ratio)


@torch.no_grad()
def dcae_psnr(vae, count: int = 200, seed: int = 0, size: int = 64, batch_size: int = 100) -> float:
    """Mean per-image PSNR (dB, images in [0, 1]) of decode(encode(x)) on held-out ShapeWorld renders."""
    from genfoundry.shapes import ShapesDataset

    if count < 1:
        raise ValueError(f"the number of PSNR images must be >= 1, got {count}")
    data = ShapesDataset(count, seed=HELDOUT_STREAM + seed, size=size)
    device, dtype = vae.device, vae.dtype
    values = []
    for start in range(0, count, batch_size):
        x = torch.stack([data[i]["image"] for i in range(start, min(start + batch_size, count))])
        x = x.to(device=device, dtype=dtype)
        recon = vae.decode(vae.encode(x)).float().clamp(-1, 1)
        mse = ((recon - x.float()) / 2).pow(2).flatten(1).mean(1)  # [0, 1] pixel range
        values += [10 * math.log10(1.0 / max(m, 1e-12)) for m in mse.tolist()]
    return sum(values) / len(values)


def format_table(report: GenEvalReport, psnr: float | None = None) -> str:
    """A markdown table: one row per category, then the overall score (and the PSNR if given)."""
    lines = ["| category | correct | total | score |", "| --- | ---: | ---: | ---: |"]
    for cat, (c, t) in report.per_category.items():
        lines.append(f"| {cat} | {c} | {t} | {c / t:.3f} |")
    total = sum(t for _, t in report.per_category.values())
    lines.append(f"| **overall** | {sum(c for c, _ in report.per_category.values())} | {total} | "
                 f"**{report.overall:.3f}** |")
    if report.failures:
        lines.append("\nFailed constraints (images per category; one image can fail several): " + "; ".join(
            f"{cat}: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
            for cat, kinds in report.failures.items()))
    if psnr is not None:
        lines.append(f"\nDC-AE reconstruction PSNR on held-out renders: **{psnr:.2f} dB**")
    return "\n".join(lines)
