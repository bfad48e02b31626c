"""ShapeWorld as data: an on-the-fly torch Dataset (deterministic per seed) and fixed splits on disk."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genfoundry.hub import atomic_path, write_text_atomic
from genfoundry.shapes.qa import questions
from genfoundry.shapes.render import render_scene, sample_scene
from genfoundry.shapes.world import CATEGORIES, Scene, check_size


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB image -> float tensor [3, H, W] in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def tensor_to_image(tensor: torch.Tensor):
    """Float tensor [3, H, W] in [-1, 1] -> PIL RGB image."""
    from PIL import Image

    arr = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def scene_at(seed: int, index: int, size: int = 64, categories=None) -> Scene:
    """Scene number `index` of the stream with `seed` (the same on every machine and run)."""
    rng = random.Random(f"shapeworld:{seed}:{index}")
    return sample_scene(rng, size, rng.choice(tuple(categories or CATEGORIES)))


class ShapesDataset(Dataset):
    """`length` samples generated on the fly: {"image", "caption", "category", "qa"}."""

    def __init__(self, length: int, seed: int = 0, size: int = 64, categories=None):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        check_size(size)
        unknown = sorted(set(categories or ()) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; expected some of: {', '.join(CATEGORIES)}")
        self.length, self.seed, self.size = length, seed, size
        self.categories = tuple(categories or CATEGORIES)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for ShapesDataset of length {self.length}")
        return scene_at(self.seed, index, self.size, self.categories)

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        return {
            "image": image_to_tensor(render_scene(scene)),
            "caption": scene.caption,
            "category": scene.category,
            "qa": questions(scene),
        }


def collate(batch: list[dict]) -> dict:
    """Stack images; keep captions, categories and QA as lists."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "caption": [b["caption"] for b in batch],
        "category": [b["category"] for b in batch],
        "qa": [b["qa"] for b in batch],
    }


def write_split(folder: str | Path, count: int, seed: int = 0, size: int = 64, categories=None,
                progress: bool = True) -> Path:
    """Write `count` samples: images/NNNNN.png, captions.jsonl and qa.jsonl (one line per question)."""
    from tqdm import tqdm

    data = ShapesDataset(count, seed, size, categories)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    captions, qa_lines = [], []
    for i in tqdm(range(count), desc="shapes", disable=not progress):
        scene = data.scene(i)
        name = f"images/{i:05d}.png"
        with atomic_path(folder / name) as tmp:
            render_scene(scene).save(tmp, format="PNG")
        objects = [{"color": o.color, "shape": o.shape, "x": o.x, "y": o.y, "size": o.size} for o in scene.objects]
        captions.append(json.dumps({"file": name, "caption": scene.caption, "category": scene.category,
                                    "objects": objects}))
        qa_lines += [json.dumps({"file": name, "question": q, "answer": a}) for q, a in questions(scene)]
    write_text_atomic(folder / "captions.jsonl", "\n".join(captions) + "\n")
    write_text_atomic(folder / "qa.jsonl", "\n".join(qa_lines) + "\n")
    return folder
