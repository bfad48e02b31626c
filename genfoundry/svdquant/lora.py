"""LoRA on a quantized model without re-quantization.

A LoRA ``dW = (alpha / r) B A`` (A [r, K], B [N, r]) runs on the raw input, exactly like the SVD branch
(whose down projection is stored pre-divided by the smoothing factor), so on an `SVDQLinear` it is
appended as extra columns: ``lora_down <- [lora_down | A^T]``, ``lora_up <- [lora_up | s (alpha/r) B]``
(s = strength; the SVD columns are never scaled). Layers that are not `SVDQLinear` (16-bit skipped
layers, W4A16, W8A8) get the same branch through a forward hook.

Accepted key styles (diffusers / PEFT / kohya): ``<module>.lora_A.weight`` + ``lora_B``,
``<module>.lora_down.weight`` + ``lora_up``, ``<module>.lora.down.weight`` + ``lora.up``, optional
``<module>.alpha``; module paths in dots (optionally prefixed ``transformer.``, ``unet.``,
``base_model.model.``...) or kohya's ``lora_unet_<path_with_underscores>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genfoundry import hub
from genfoundry.svdquant.linear import PointwiseConv, SVDQLinear

_SUFFIX_PAIRS = (
    (".lora_A.weight", ".lora_B.weight"),
    (".lora_A.default.weight", ".lora_B.default.weight"),
    (".lora_down.weight", ".lora_up.weight"),
    (".lora.down.weight", ".lora.up.weight"),
)
_DOT_PREFIXES = ("base_model.model.", "transformer.", "unet.", "model.", "diffusion_model.")
_KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_", "lora_te_", "lora_")
_HOOKED = "_genfoundry_loras"
_HOOK_HANDLE = "_genfoundry_lora_hook"


@dataclass
class LoRAFactor:
    down: torch.Tensor  # A^T [K, r]
    up: torch.Tensor  # (alpha / r) B [N, r]


def parse_lora(state_dict: Mapping[str, torch.Tensor]) -> dict[str, LoRAFactor]:
    """LoRA module path (as written in the file) -> factors with alpha/r folded into `up`."""
    out: dict[str, LoRAFactor] = {}
    for key in state_dict:
        for down_sfx, up_sfx in _SUFFIX_PAIRS:
            if not key.endswith(down_sfx):
                continue
            module = key[: -len(down_sfx)]
            up_key = module + up_sfx
            if up_key not in state_dict:
                raise ValueError(f"LoRA key {key!r} has no matching up/B weight {up_key!r}")
            a, b = state_dict[key], state_dict[up_key]
            if a.dim() == 4 and a.shape[2:] == (1, 1) and b.dim() == 4 and b.shape[2:] == (1, 1):
                a, b = a[:, :, 0, 0], b[:, :, 0, 0]  # LoRA of a 1x1 conv
            if a.dim() != 2 or b.dim() != 2:
                raise ValueError(f"LoRA of {module!r}: only linear LoRAs are supported, got A {tuple(a.shape)}, "
                                 f"B {tuple(b.shape)}")
            if a.shape[0] != b.shape[1]:
                raise ValueError(f"LoRA of {module!r}: rank mismatch, A {tuple(a.shape)} vs B {tuple(b.shape)}")
            rank = a.shape[0]
            alpha = state_dict.get(module + ".alpha")
            scale = float(alpha) / rank if alpha is not None else 1.0
            out[module] = LoRAFactor(a.t().float(), b.float() * scale)
            break
    if not out:
        raise ValueError("no LoRA weights found: expected keys ending in .lora_A.weight/.lora_B.weight, "
                         ".lora_down.weight/.lora_up.weight or .lora.down.weight/.lora.up.weight")
    return out


def _resolve_module(path: str, names: set[str], underscored: dict[str, str]) -> str | None:
    candidates = [path]
    for p in _DOT_PREFIXES:
        if path.startswith(p):
            candidates.append(path[len(p):])
    for c in candidates:
        if c in names:
            return c
    for p in _KOHYA_PREFIXES:
        if path.startswith(p) and path[len(p):] in underscored:
            return underscored[path[len(p):]]
    for c in candidates:
        hits = [n for n in names if n.endswith("." + c)]
        if len(hits) == 1:
            return hits[0]
    return None


def _load(lora: Mapping[str, torch.Tensor] | str | os.PathLike) -> Mapping[str, torch.Tensor]:
    if isinstance(lora, (str, os.PathLike)):
        tensors, _ = hub.load_file(Path(lora))
        return tensors
    return lora


def lora_names(model: nn.Module) -> list[str]:
    found: list[str] = []
    for m in model.modules():
        for n in (m.loras if isinstance(m, SVDQLinear) else getattr(m, _HOOKED, {})):
            if n not in found:
                found.append(n)
    return found


def add_lora(
    model: nn.Module,
    lora: Mapping[str, torch.Tensor] | str | os.PathLike,
    strength: float = 1.0,
    name: str | None = None,
    *,
    strict: bool = True,
) -> str:
    """Attach a LoRA (state dict or safetensors path) to `model`; returns its name.

    strict=True raises if a LoRA module matches no layer of the model; False skips such modules."""
    factors = parse_lora(_load(lora))
    existing = lora_names(model)
    if name is None:
        name = next(f"lora_{i}" for i in range(len(existing) + 1) if f"lora_{i}" not in existing)
    elif name in existing:
        raise ValueError(f"a LoRA named {name!r} is already attached; remove it first or pick another name")
    modules = dict(model.named_modules())
    names = {n for n in modules if n}
    underscored = {n.replace(".", "_"): n for n in names}
    plan: list[tuple[str, nn.Module, LoRAFactor]] = []
    unmatched: list[str] = []
    for path, f in factors.items():
        target = _resolve_module(path, names, underscored)
        if target is None:
            unmatched.append(path)
            continue
        module = modules[target]
        if isinstance(module, PointwiseConv):
            module = module.linear  # the branch runs on channels-last tokens, like the layer itself
        k, n = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if k is None or n is None:
            raise ValueError(f"LoRA module {path!r} maps to layer {target!r} ({type(module).__name__}), "
                             "which is not a linear layer")
        if f.down.shape[0] != k or f.up.shape[0] != n:
            raise ValueError(
                f"LoRA for layer {target!r} does not fit: the layer maps {k} -> {n} features, the LoRA has "
                f"A [{f.down.shape[1]}, {f.down.shape[0]}] and B [{f.up.shape[0]}, {f.up.shape[1]}]"
            )
        plan.append((target, module, f))
    if unmatched and strict:
        raise ValueError(f"LoRA modules match no layer of the model: {unmatched[:10]}"
                         + (f" ... and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""))
    for _, module, f in plan:
        _attach(module, name, f, strength)
    return name


def _attach(module: nn.Module, name: str, f: LoRAFactor, strength: float) -> None:
    if isinstance(module, SVDQLinear):
        dev, dt = module.lora_down.device, module.lora_down.dtype
        module.loras[name] = (f.down.to(dev, dt), f.up.to(dev, dt), float(strength))
        module.rebuild_lora_branch()
        return
    ref = next(iter(module.buffers()), None) if getattr(module, "weight", None) is None else module.weight
    dev = ref.device if ref is not None else f.down.device
    loras = getattr(module, _HOOKED, None)
    if loras is None:
        loras = {}
        setattr(module, _HOOKED, loras)
        setattr(module, _HOOK_HANDLE, module.register_forward_hook(_lora_hook))
    loras[name] = (f.down.to(dev), f.up.to(dev), float(strength))


def _lora_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0].float()
    extra = 0.0
    for down, up, strength in getattr(module, _HOOKED).values():
        extra = extra + ((x @ down) @ up.t()) * strength
    return (output.float() + extra).to(output.dtype)


def set_lora_strength(model: nn.Module, strength: float, name: str | None = None) -> None:
    """Change the strength of LoRA `name` (None: every attached LoRA)."""
    _update(model, name, lambda entry: (entry[0], entry[1], float(strength)))


def remove_lora(model: nn.Module, name: str | None = None) -> None:
    """Detach LoRA `name` (None: all); the quantized weights are untouched."""
    _update(model, name, None)


def _update(model: nn.Module, name: str | None, change) -> None:
    if name is not None and name not in lora_names(model):
        raise ValueError(f"no LoRA named {name!r} is attached; attached: {lora_names(model)}")
    for module in model.modules():
        loras = module.loras if isinstance(module, SVDQLinear) else getattr(module, _HOOKED, None)
        if not loras:
            continue
        for key in [k for k in loras if name is None or k == name]:
            if change is None:
                del loras[key]
            else:
                loras[key] = change(loras[key])
        if isinstance(module, SVDQLinear):
            module.rebuild_lora_branch()
        elif not loras:
            getattr(module, _HOOK_HANDLE).remove()
            delattr(module, _HOOKED)
            delattr(module, _HOOK_HANDLE)
