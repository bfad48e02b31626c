"""The model registry: what the commands that work on any model (`genfoundry quantize`, the tour, the web
app) need to know of a model family, filled by each system so that `genfoundry.svdquant` names none.

Each system describes itself in its `quantization` module (listed in `FAMILY_MODULES`):
- `FAMILY`, a `ModelFamily`: how to recognise one of its folders, how to load it, which of its modules
  quantization replaces layers in (and `save_quantized` / `load_quantized` read and write), and a
  calibration function that runs the model on ShapeWorld data;
- `FOREIGN_LAYERS`: for model classes the project does not own (diffusers' `SanaTransformer2DModel`),
  the layers quantization skips or makes weight-only. A class the project owns declares them itself,
  as the class attributes `quantization_skip` and `quantization_weight_only` (glob patterns of module
  names) that `genfoundry.svdquant.quantize` reads.
"""

from __future__ import annotations

import importlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genfoundry import hub
from genfoundry.errors import InputError

FAMILY_MODULES = ("genfoundry.sana.quantization", "genfoundry.vilau.quantization")

SKIP_ATTRIBUTE = "quantization_skip"
WEIGHT_ONLY_ATTRIBUTE = "quantization_weight_only"


@dataclass(frozen=True)
class LayerDeclaration:
    """Glob patterns of module names: kept in 16 bits (`skip`), 4-bit weights with 16-bit
    activations (`weight_only`)."""

    skip: tuple[str, ...] = ()
    weight_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """How much ShapeWorld data calibration runs on; each family reads the fields that apply to it."""

    prompts: int = 32  # captions to draw (SANA, VILA-U) and scenes to ask about (VILA-U)
    steps: int = 10  # SANA: sampling steps per caption
    batch_size: int = 8
    size: int | None = None  # SANA: image size (None: the model's own)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("prompts", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"calibration {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class ModelFamily:
    """One kind of model the generic commands can load, quantize and run quantized."""

    name: str  # "sana", "vila-u"
    description: str  # what a folder of this family is, for error messages
    recognizes: Callable[[Path], bool]  # a resolved folder -> is it one of ours?
    load: Callable[[str | os.PathLike, torch.device, torch.dtype | None], object]  # -> pipeline / model
    target: Callable[[object], nn.Module]  # the loaded object -> the module whose layers are quantized
    calibrator: Callable[[object, Calibration], Callable[[nn.Module], None]]  # -> calibrate(module)


def families() -> list[ModelFamily]:
    return [importlib.import_module(name).FAMILY for name in FAMILY_MODULES]


def family_of(name_or_path: str | os.PathLike) -> ModelFamily:
    """The family whose folder `name_or_path` (zoo name, folder or cached repo id) is."""
    folder = hub.resolve(name_or_path)
    for family in families():
        if family.recognizes(folder):
            return family
    known = "; ".join(f"{f.name}: {f.description}" for f in families())
    raise hub.CheckpointError(f"{folder} is not a model folder genfoundry knows ({known})")


def declared_layers(model: nn.Module) -> LayerDeclaration | None:
    """The layers `model` declares for quantization: its own class attributes, else what a system
    registered for its class (matched by top-level package and class name), else None."""
    skip = getattr(model, SKIP_ATTRIBUTE, None)
    weight_only = getattr(model, WEIGHT_ONLY_ATTRIBUTE, None)
    if skip is not None or weight_only is not None:
        return LayerDeclaration(tuple(skip or ()), tuple(weight_only or ()))
    cls = type(model)
    key = (cls.__module__.split(".")[0], cls.__name__)
    for name in FAMILY_MODULES:
        declared = getattr(importlib.import_module(name), "FOREIGN_LAYERS", {}).get(key)
        if declared is not None:
            return declared
    return None


def calibration_captions(count: int, seed: int = 0) -> list[str]:
    """`count` ShapeWorld captions (the offline stand-in for the papers' COCO calibration captions)."""
    from genfoundry.shapes import sample_scene

    rng = random.Random(seed)
    return [sample_scene(rng).caption for _ in range(count)]


def folder_fingerprint(folder: Path) -> str:
    """sha256 of a model folder's file names and contents, model cards aside (what decides whether a
    quantized file made from it still applies)."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_quantized_cached(name_or_path: str | os.PathLike, file: str | os.PathLike, config, calibration: Calibration,
                          device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> tuple[object, bool]:
    """(the model loaded with its quantized target, whether `file` was reused).

    `file` is reused when its card (`file` with .json) says it was made from the same model weights with
    the same `config` (a `svdquant.QuantConfig`) and calibration; otherwise the model is quantized now,
    and the file and its card are written."""
    from dataclasses import asdict

    from genfoundry.svdquant import load_quantized, quantize, save_quantized

    file = Path(file)
    card = file.with_suffix(".json")
    family = family_of(name_or_path)
    resolved = config.resolved()
    wanted = {"model": str(name_or_path), "weights": folder_fingerprint(hub.resolve(name_or_path)),
              "config": {k: v for k, v in asdict(resolved).items() if k != "progress"},
              "calibration": asdict(calibration)}
    model = family.load(name_or_path, torch.device(device), dtype)
    if file.is_file() and card.is_file():
        try:
            if json.loads(card.read_text()) == json.loads(json.dumps(wanted)):
                load_quantized(family.target(model), file)
                return model, True
        except (json.JSONDecodeError, hub.CheckpointError):
            pass  # an unreadable cache is made again
    quantize(family.target(model), family.calibrator(model, calibration), resolved)
    save_quantized(family.target(model), file)
    hub.write_json_atomic(card, wanted)
    return model, False
