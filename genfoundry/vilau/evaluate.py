"""Held-out ShapeWorld evaluation of a VILA-U model: VQA, generation (GenEval-style), reconstruction, retrieval."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path

import torch

from genfoundry import hub
from genfoundry.shapes import CATEGORIES, ShapesDataset, caption_edits, evaluate, sample_scene
from genfoundry.vilau.data import question_type
from genfoundry.vilau.generate import DEFAULT_RANKER, answer_batch, generate_images
from genfoundry.vilau.model import VilaU

HELD_OUT_SEED = 999_983  # training streams use seeds < 1_000 * (seed + 1); this one is never trained on


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def evaluate_vqa(model: VilaU, n_images: int = 100, per_image: int = 3, batch_size: int = 64,
                 seed: int = HELD_OUT_SEED) -> dict:
    """Greedy answers to `per_image` questions on each of `n_images` scenes: accuracy overall and per
    question type, and every mistake (the scene's caption, the question, the expected and given answer)."""
    data = ShapesDataset(n_images, seed=seed, size=model.config.tower.image_size)
    rng = random.Random(seed)
    items = []
    for i in range(n_images):
        sample = data[i]
        for q, a in rng.sample(sample["qa"], min(per_image, len(sample["qa"]))):
            items.append((sample["image"], sample["caption"], q, a))
    right: dict[str, list[int]] = defaultdict(list)
    mistakes = []
    for chunk in _chunks(items, batch_size):
        answers = answer_batch(model, [c[0] for c in chunk], [c[2] for c in chunk], max_new_tokens=4)
        for (_, caption, q, a), got in zip(chunk, answers):
            right[question_type(q)].append(int(got == a))
            if got != a:
                mistakes.append({"caption": caption, "question": q, "expected": a, "answer": got})
    every = [v for vs in right.values() for v in vs]
    return {"accuracy": sum(every) / len(every), "questions": len(every),
            "per_type": {k: sum(v) / len(v) for k, v in sorted(right.items())},
            "per_type_questions": {k: len(v) for k, v in sorted(right.items())},
            "mistakes": mistakes}


@torch.no_grad()
def evaluate_generation(model: VilaU, per_category: int = 10, cfg: float = 3.0, batch_size: int = 50,
                        seed: int = HELD_OUT_SEED, candidates: int = 1, rank_by: str = DEFAULT_RANKER,
                        **sampling) -> dict:
    """GenEval-style score of images drawn for prompts sampled per category; `sampling`: temperature,
    top_k, top_p for generate_images (default: the official VILA-U settings); `candidates`: images drawn
    per prompt, the best by `rank_by` kept (1 = the plain sample; see generate_codes)."""
    rng = random.Random(f"gen:{seed}")
    size = model.config.tower.image_size
    prompts = [(c, sample_scene(rng, size, c).caption) for c in CATEGORIES for _ in range(per_category)]
    right: dict[str, list[int]] = defaultdict(list)
    for k, chunk in enumerate(_chunks(prompts, batch_size)):
        images = generate_images(model, [p for _, p in chunk], cfg=cfg, seed=seed + k, candidates=candidates,
                                 rank_by=rank_by, **sampling)
        for (category, caption), image in zip(chunk, images):
            right[category].append(int(evaluate(image, caption)["correct"]))
    every = [v for vs in right.values() for v in vs]
    # results without the keys: one sample; without rank_by: ranked by the alignment head (the only ranker then)
    extra = {"candidates": candidates, "rank_by": rank_by} if candidates > 1 else {}
    return {"score": sum(every) / len(every), "prompts": len(every), "cfg": cfg, **extra, **sampling,
            "per_category": {k: sum(v) / len(v) for k, v in right.items()}}


@torch.no_grad()
def evaluate_reconstruction(model: VilaU, n_images: int = 256, batch_size: int = 64, seed: int = HELD_OUT_SEED) -> dict:
    """Mean per-image PSNR (dB, 8-bit images) of encode -> codes -> decode."""
    data = ShapesDataset(n_images, seed=seed, size=model.config.tower.image_size)
    model.eval()
    psnrs = []
    for chunk in _chunks(list(range(n_images)), batch_size):
        images = torch.stack([data[i]["image"] for i in chunk]).to(model.device)
        recon = model.tower.detokenize(model.tower.tokenize(images))
        # quantize to 8 bits as a saved image would be
        a = ((images + 1) * 127.5).round()
        b = ((recon.float() + 1) * 127.5).round()
        mse = (a - b).pow(2).flatten(1).mean(1)
        psnrs += [10 * math.log10(255.0 ** 2 / max(float(m), 1e-10)) for m in mse]
    return {"psnr_db": sum(psnrs) / len(psnrs), "images": n_images}


@torch.no_grad()
def evaluate_retrieval(model: VilaU, n_images: int = 200, candidates: int = 10, seed: int = HELD_OUT_SEED) -> dict:
    """Zero-shot: for each image, which of `candidates` captions (1 true + distinct distractors) matches best
    ("top1"); and, harder, which of the true caption and all its one-edit variants
    (`genfoundry.shapes.caption_edits`: another colour, shape, count, object or the opposite relation)
    matches best ("edits_top1", with the mean number of edits per caption)."""
    data = ShapesDataset(n_images, seed=seed, size=model.config.tower.image_size)
    samples = [data[i] for i in range(n_images)]
    pool = sorted({s["caption"] for s in samples})
    rng = random.Random(f"retrieval:{seed}")
    tower = model.tower.eval()

    embedded: dict[str, torch.Tensor] = {}  # every image asks for ~20 captions out of a few hundred

    def text_emb(captions: list[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(captions) if c not in embedded]
        if new:
            embedded.update(zip(new, tower.text_embedding(model.caption_ids(new))))
        return torch.stack([embedded[c] for c in captions])

    correct = correct_edits = edits_seen = 0
    per_kind: dict[str, list[int]] = defaultdict(list)
    for chunk in _chunks(samples, 64):
        images = torch.stack([s["image"] for s in chunk]).to(model.device)
        img = tower.image_embedding(images)
        for i, s in enumerate(chunk):
            distractors = rng.sample([c for c in pool if c != s["caption"]], min(candidates - 1, len(pool) - 1))
            scores = text_emb([s["caption"], *distractors]) @ img[i]
            correct += int(scores.argmax() == 0)
            groups = caption_edits(s["caption"])
            edits = [e for group in groups.values() for e in group]
            scores = text_emb([s["caption"], *edits]) @ img[i]
            correct_edits += int(scores.argmax() == 0)
            edits_seen += len(edits)
            start = 1
            for kind, group in groups.items():  # the true caption against one kind of edit at a time
                per_kind[kind].append(int(bool(scores[0] > scores[start:start + len(group)].max())))
                start += len(group)
    return {"top1": correct / n_images, "images": n_images, "candidates": candidates,
            "edits_top1": correct_edits / n_images, "edits_per_caption": edits_seen / n_images,
            "edits_top1_per_kind": {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}}


PARTS = ("vqa", "reconstruction", "retrieval", "generation")


def evaluate_all(model: VilaU, quick: bool = False, cfgs: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0),
                 generation_prompts: int = 300, parts: tuple[str, ...] = PARTS, candidates: int = 1,
                 rank_by: str = DEFAULT_RANKER) -> dict:
    """Every held-out measurement (or those named in `parts`). Generation draws `generation_prompts`
    prompts per CFG scale, the same number from each category (300: a standard error of about 0.03)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"unknown evaluation part(s) {unknown}; expected some of: {', '.join(PARTS)}")
    if generation_prompts < len(CATEGORIES) or generation_prompts % len(CATEGORIES):
        raise ValueError(f"generation_prompts must be a positive multiple of {len(CATEGORIES)} (one share per "
                         f"category), got {generation_prompts}")
    n = 20 if quick else 200
    per_category = 2 if quick else generation_prompts // len(CATEGORIES)
    jobs = {
        "vqa": lambda: evaluate_vqa(model, n_images=n // 2 if quick else 150),
        "reconstruction": lambda: evaluate_reconstruction(model, n_images=n),
        "retrieval": lambda: evaluate_retrieval(model, n_images=n),
        "generation": lambda: {str(c): evaluate_generation(model, per_category=per_category, cfg=c,
                                                          candidates=candidates, rank_by=rank_by) for c in cfgs},
    }
    return {part: job() for part, job in jobs.items() if part in parts}


def results_markdown(results: dict, title: str = "VILA-U on held-out ShapeWorld") -> str:
    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    if "vqa" in results:
        vqa = results["vqa"]
        lines.append(f"| VQA accuracy ({vqa['questions']} questions) | {vqa['accuracy']:.3f} |")
        counts = vqa.get("per_type_questions", {})  # absent from results written before it was recorded
        lines += [f"| VQA {k}{f' ({counts[k]})' if k in counts else ''} | {v:.3f} |" for k, v in vqa["per_type"].items()]
    if "reconstruction" in results:
        lines.append(f"| reconstruction PSNR (dB) | {results['reconstruction']['psnr_db']:.2f} |")
    if "retrieval" in results:
        r = results["retrieval"]
        lines.append(f"| caption retrieval top-1 (1 of {r['candidates']}) | {r['top1']:.3f} |")
        if "edits_top1" in r:  # absent from results written before it was measured
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["edits_top1_per_kind"].items())
            lines.append(f"| caption retrieval top-1 against its one-edit variants (1 of "
                         f"{1 + r['edits_per_caption']:.1f} on average) | {r['edits_top1']:.3f} (per edit: {kinds}) |")
    for cfg, g in results.get("generation", {}).items():
        per = ", ".join(f"{k} {v:.2f}" for k, v in g["per_category"].items())
        best = (f", best of {g['candidates']} by {g.get('rank_by', 'alignment')}" if g.get("candidates", 1) > 1
                else "")
        lines.append(f"| generation score cfg {cfg} ({g['prompts']} prompts{best}) | {g['score']:.3f} ({per}) |")
    if "quantized" in results:
        lines += ["", quantized_markdown(results)]
    return "\n".join(lines) + "\n"


def quantized_markdown(results: dict) -> str:
    """The 16-bit model beside its quantized copy (`results["quantized"]`, measured on the same data)."""
    q = results["quantized"]
    label = f"{q.get('method')} W4A4 {q.get('weight')}, rank {q.get('rank')}"
    lines = [f"Quantized ({label}; file {q['file']}) beside 16-bit, same held-out data:", "",
             f"| metric | 16-bit | {label} | difference |", "| --- | ---: | ---: | ---: |"]

    def row(name: str, a: float, b: float) -> None:
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")

    if "vqa" in results and "vqa" in q:
        row(f"VQA accuracy ({results['vqa']['questions']} questions)", results["vqa"]["accuracy"], q["vqa"]["accuracy"])
        for kind, value in results["vqa"]["per_type"].items():
            row(f"VQA {kind}", value, q["vqa"]["per_type"].get(kind, float("nan")))
    for cfg, g in results.get("generation", {}).items():
        if cfg in q.get("generation", {}):
            row(f"generation score cfg {cfg} ({g['prompts']} prompts)", g["score"], q["generation"][cfg]["score"])
    if "reconstruction" in results and "reconstruction" in q:
        row("reconstruction PSNR (dB; the tower stays 16-bit)", results["reconstruction"]["psnr_db"],
            q["reconstruction"]["psnr_db"])
    return "\n".join(lines)


def write_results(results: dict, json_path: str | Path, md_path: str | Path | None = None, title: str | None = None) -> None:
    hub.write_json_atomic(json_path, results)
    if md_path is not None:
        hub.write_text_atomic(md_path, results_markdown(results, title or "VILA-U on held-out ShapeWorld"))
