"""SANA in the model registry (genfoundry.models): a pipeline folder is quantized in its transformer,
calibrated by running the whole pipeline (text encoder, sampler, classifier-free guidance) on
ShapeWorld captions, so the hooks see the transformer's inputs at every step and for both branches."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genfoundry.models import Calibration, LayerDeclaration, ModelFamily, calibration_captions
from genfoundry.sana.pipeline import MODEL_INDEX_NAME, SanaPipeline
from genfoundry.sana.transformer import SanaTransformer


def _recognizes(folder: Path) -> bool:
    index = folder / MODEL_INDEX_NAME
    if not index.is_file():
        return False
    try:
        return "Sana" in str(json.loads(index.read_text()).get("_class_name", ""))
    except json.JSONDecodeError:
        return False


def _load(name_or_path: str | os.PathLike, device: torch.device, dtype: torch.dtype | None) -> SanaPipeline:
    return SanaPipeline.from_pretrained(name_or_path, dtype=dtype, device=device)


def _target(pipe: SanaPipeline) -> nn.Module:
    return pipe.transformer


def _calibrator(pipe: SanaPipeline, calibration: Calibration) -> Callable[[nn.Module], None]:
    prompts = calibration_captions(calibration.prompts, calibration.seed)
    size, batch = calibration.size, calibration.batch_size

    def calibrate(_transformer: nn.Module) -> None:
        for start in range(0, len(prompts), batch):
            pipe(prompts[start:start + batch], height=size, width=size, steps=calibration.steps,
                 seed=calibration.seed + start, progress=False, warn_unknown_words=False)

    return calibrate


FAMILY = ModelFamily(
    name="sana",
    description="a SANA pipeline folder (model_index.json naming a SanaPipeline)",
    recognizes=_recognizes, load=_load, target=_target, calibrator=_calibrator,
)

# diffusers' SanaTransformer2DModel has our transformer's module names: the same layers are kept
FOREIGN_LAYERS = {
    ("diffusers", "SanaTransformer2DModel"): LayerDeclaration(
        tuple(SanaTransformer.quantization_skip), tuple(SanaTransformer.quantization_weight_only)),
}
