"""VILA-U in the model registry (genfoundry.models): the whole model is the quantization target (its
class declares what is skipped: the vision tower, the projector and the heads), calibrated by running
it as it is used: greedy answers to questions about ShapeWorld scenes and images drawn for captions
with classifier-free guidance, on a training stream (never the held-out one)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genfoundry.models import Calibration, ModelFamily
from genfoundry.vilau.model import MODEL_TYPE, VilaU

CALIBRATION_CFG = 3.0  # the generation default of `genfoundry imagine`


def _recognizes(folder: Path) -> bool:
    """Our layout (model_type genfoundry-vila-u) or the authors' released one (vila_u_llama)."""
    from genfoundry.vilau.convert import is_official_config

    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        raw = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(raw, dict) and (raw.get("model_type") == MODEL_TYPE or is_official_config(raw))


def _load(name_or_path: str | os.PathLike, device: torch.device, dtype: torch.dtype | None) -> VilaU:
    model = VilaU.from_pretrained(name_or_path, device=device)
    return model if dtype is None else model.to(dtype)


def _target(model: VilaU) -> nn.Module:
    return model


def _calibrator(model: VilaU, calibration: Calibration) -> Callable[[nn.Module], None]:
    from genfoundry.shapes import ShapesDataset
    from genfoundry.vilau.generate import answer_batch, generate_images

    data = ShapesDataset(calibration.prompts, seed=calibration.seed, size=model.config.tower.image_size)
    rng = random.Random(f"vilau-calibration:{calibration.seed}")
    samples = [data[i] for i in range(calibration.prompts)]
    questions = [rng.choice(s["qa"])[0] for s in samples]
    batch = calibration.batch_size

    def calibrate(_model: nn.Module) -> None:
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            answer_batch(model, [s["image"] for s in chunk], questions[start:start + batch], max_new_tokens=4)
            generate_images(model, [s["caption"] for s in chunk], cfg=CALIBRATION_CFG, seed=calibration.seed + start)

    return calibrate


FAMILY = ModelFamily(
    name="vila-u",
    description="a VILA-U folder (ours, model_type genfoundry-vila-u, or the authors' release, vila_u_llama)",
    recognizes=_recognizes, load=_load, target=_target, calibrator=_calibrator,
)
