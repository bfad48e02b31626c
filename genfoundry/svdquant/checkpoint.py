"""One-file quantized checkpoints: ``save_quantized(model, path)`` / ``load_quantized(model, path)``.

The safetensors file holds the whole model state (packed buffers of the quantized layers, 16-bit
tensors of everything else) and, in its metadata, ``quantization_config``: the method, formats, group
size, rank, the model class, and one spec per quantized layer. Loading builds empty quantized layers
from those specs inside a freshly built (unquantized) model and fills them: no original weights, no
calibration, no pickle. Attached LoRAs are not saved (the file holds the base quantized model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from genfoundry import hub
from genfoundry.svdquant.linear import QUANTIZED_TYPES, PointwiseConv, SVDQLinear, build_from_spec, is_pointwise_conv

FORMAT = "genfoundry.svdquant"
VERSION = 1


def _state_without_loras(model: nn.Module) -> dict[str, torch.Tensor]:
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, SVDQLinear) and module.loras:
            prefix = f"{name}." if name else ""
            for key, value in module.base_state().items():
                state[prefix + key] = value
    return state


def quantization_config(model: nn.Module) -> dict:
    """The metadata dict describing a quantized model."""
    layers = {name: m.spec() for name, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)}
    wrappers = [name for name, m in model.named_modules() if isinstance(m, PointwiseConv)]
    layers = {n: s for n, s in layers.items() if not any(n.startswith(w + ".") for w in wrappers)}
    if not layers:
        raise ValueError("save_quantized: the model has no quantized layer; run svdquant.quantize() first")
    cfg = dict(getattr(model, "svdquant_config", {}) or {})
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "method": cfg.get("method"),
        "weight": cfg.get("weight"),
        "act": cfg.get("act"),
        "group_size": cfg.get("group_size"),
        "rank": cfg.get("rank"),
        "lowrank_bits": cfg.get("lowrank_bits", 16),
        "config": cfg,
        "layers": layers,
    }


def save_quantized(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the quantized `model` to one safetensors file (atomic)."""
    meta = quantization_config(model)
    return hub.save_file(_state_without_loras(model), path, metadata={"quantization_config": meta})


def read_quantization_config(path: str | os.PathLike) -> dict:
    meta = hub.read_metadata(path)
    if "quantization_config" not in meta:
        raise hub.CheckpointError(f"{path} is not a quantized checkpoint: its metadata has no quantization_config")
    cfg = json.loads(meta["quantization_config"])
    if cfg.get("format") != FORMAT:
        raise hub.CheckpointError(f"{path}: unknown quantized format {cfg.get('format')!r}, expected {FORMAT!r}")
    return cfg


def _features(m: nn.Module) -> tuple[int, int]:
    if is_pointwise_conv(m):
        return m.in_channels, m.out_channels
    return m.in_features, m.out_features


def load_quantized(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a `save_quantized` file into a freshly built unquantized `model` (in place; returned)."""
    path = Path(path)
    cfg = read_quantization_config(path)
    modules = dict(model.named_modules())
    problems: list[str] = []
    for name, spec in cfg["layers"].items():
        m = modules.get(name)
        if m is None:
            problems.append(f"{name}: no such layer")
        elif not isinstance(m, (nn.Linear, *QUANTIZED_TYPES)) and not is_pointwise_conv(m):
            problems.append(f"{name}: is a {type(m).__name__}, not a linear layer")
        elif _features(m) != (spec["in_features"], spec["out_features"]):
            problems.append(f"{name}: model has {_features(m)[0]}->{_features(m)[1]}, file has "
                            f"{spec['in_features']}->{spec['out_features']}")
        elif is_pointwise_conv(m) != bool(spec.get("pointwise_conv")):
            problems.append(f"{name}: layer kind differs (file: pointwise_conv={bool(spec.get('pointwise_conv'))})")
    if problems:
        shown = "; ".join(problems[:8]) + (f" ... and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise hub.CheckpointError(
            f"{path} was quantized from a different model ({cfg.get('model_class')}, this is "
            f"{type(model).__name__}): {shown}"
        )
    anchor = next(iter(model.parameters()), None)
    anchor = next(iter(model.buffers()), None) if anchor is None else anchor
    tensors, _ = hub.load_file(path, device=anchor.device if anchor is not None else "cpu")
    for name, spec in cfg["layers"].items():
        old = modules[name]
        ref = next(iter(old.parameters()), None)
        ref = next(iter(old.buffers()), None) if ref is None else ref
        new = build_from_spec(spec, device=ref.device if ref is not None else None)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    expected = model.state_dict()
    hub.check_state_dict(tensors, expected, what=f"quantized checkpoint {path}")
    # assign: every tensor keeps the file's dtype (a bf16 file in a freshly built fp32 model stays bf16)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.svdquant_config = cfg.get("config", {})
    return model
