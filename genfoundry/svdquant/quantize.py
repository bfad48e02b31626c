"""`quantize(model, calibrate, config)`: replace a model's `nn.Linear` layers by quantized ones, in place.

Works on any torch module (ours, diffusers, transformers). ``calibrate(model)`` runs forward passes on
calibration data; forward pre-hooks stream what the search needs per layer:
  - the running per-channel max |x| (for the smoothing factors),
  - a bounded uniform sample of tokens (priority sampling: each token gets a seeded random key and
    the `calib_tokens` smallest keys are kept) for the output-error search,
  - which layers read the very same input tensor (q/k/v), so they can share one smoothing factor.
Nothing else of the activations is kept.

Methods (W4A4 ones use `SVDQLinear`):
  svdquant     smoothing (grid search by default) + rank-32 low-rank branch with refinement
  smoothquant  smoothing (alpha 0.5 by default), rank 0
  rtn          round to nearest, no smoothing, rank 0
  w4a16        weight-only NF4 (default) or INT4
  w8a8         SmoothQuant W8A8 (INT8 per-channel weights, per-token activations)
"""

from __future__ import annotations

import fnmatch
import math
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from genfoundry.nunchaku import packing
from genfoundry.svdquant import quantizers
from genfoundry.svdquant.linear import PointwiseConv, SVDQLinear, W4A16Linear, W8A8Linear, is_pointwise_conv, linear_view
from genfoundry.svdquant.lowrank import LowRankResult, refine_lowrank
from genfoundry.svdquant.smooth import LayerProblem, output_error, search_smoothing, smooth_factors, weight_channel_amax

METHODS = ("svdquant", "smoothquant", "rtn", "w4a16", "w8a8")
AUTO = "auto"

# Models that declare nothing (see `default_patterns`): embeddings, heads, in/out projections,
# time/text embedders stay in 16 bits; adaLN-style modulation projections get 4-bit weights only
GENERIC_SKIP = [
    "*embed*", "*lm_head*", "proj_in", "proj_out", "*time_emb*", "*timestep*", "*context_embedder*",
    "*caption_projection*", "*score*", "*classifier*",
]
GENERIC_W4A16 = ["*norm*.linear", "*adaln*", "*adaLN*"]


@dataclass
class QuantConfig:
    """What to quantize and how. ``"auto"`` fields take the method's default (see `resolved`)."""

    method: str = "svdquant"
    weight: str = AUTO  # int4 | nvfp4 (W4A4); nf4 | int4 (w4a16); int8 (w8a8)
    act: str | None = AUTO  # int4 | nvfp4 | int8 | None (weight-only)
    group_size: int | None = None  # None: 64 for int4/nf4, 16 for nvfp4
    rank: int | None = None  # None: 32 for svdquant, 0 otherwise
    lowrank_bits: int = 16  # 16: the branch in the compute dtype (SVDQuant); 8: int8 (see SVDQLinear)
    smooth: str | float | None = AUTO  # "search" | alpha in [0, 1] (beta = 1 - alpha) | None
    skip: list[str] | None = None  # glob patterns of layer names kept in 16 bits; None: model defaults
    w4a16: list[str] | None = None  # globs of layers made weight-only 4-bit; None: model defaults
    unsigned: list[str] = field(default_factory=list)  # globs of layers whose input is post-GELU (int4 only)
    calib_tokens: int = 256  # tokens sampled per layer for the error search
    refine_iters: int = 100  # low-rank refinement iterations at most (early stop)
    share_inputs: bool = True  # layers that read the same tensor share one smoothing factor
    share_lowrank: bool = False  # ...and also one low-rank down projection (q/k/v: one X @ L1 for all)
    indivisible: str = "error"  # a layer whose K is not a multiple of the group size: "error" | "skip" (16-bit)
    seed: int = 0
    progress: bool = True

    def resolved(self) -> "QuantConfig":
        """A copy with every "auto" filled in; raises ValueError for an unsupported combination."""
        m = self.method
        if m not in METHODS:
            raise ValueError(f"unknown quantization method {m!r}; expected one of {METHODS}")
        weight = self.weight
        if weight == AUTO:
            weight = {"w4a16": "nf4", "w8a8": "int8"}.get(m, "int4")
        allowed = {"w4a16": ("nf4", "int4"), "w8a8": ("int8",)}.get(m, ("int4", "nvfp4"))
        if weight not in allowed:
            raise ValueError(f"method {m!r} takes weight in {allowed}, got {weight!r}")
        act = self.act
        if act == AUTO:
            act = {"w4a16": None, "w8a8": "int8"}.get(m, weight)
        act_allowed = {"w4a16": (None,), "w8a8": ("int8",)}.get(m, (weight,))
        if act not in act_allowed:
            raise ValueError(f"method {m!r} with weight {weight!r} takes act in {act_allowed}, got {act!r}")
        group = self.group_size
        if group is None:
            group = packing.NVFP4_GROUP if weight == "nvfp4" else packing.INT4_GROUP
        if weight == "nvfp4" and group != packing.NVFP4_GROUP:
            raise ValueError(f"nvfp4 uses group size {packing.NVFP4_GROUP}, got {group}")
        if group <= 0 or group % 2:
            raise ValueError(f"group_size must be a positive even number, got {group}")
        rank = self.rank if self.rank is not None else (32 if m == "svdquant" else 0)
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if rank and m != "svdquant":
            raise ValueError(f"method {m!r} has no low-rank branch; rank must be 0, got {rank}")
        if self.lowrank_bits not in SVDQLinear.LOWRANK_BITS:
            raise ValueError(f"lowrank_bits must be 16 or 8, got {self.lowrank_bits!r}")
        if self.lowrank_bits != 16 and not rank:
            raise ValueError(f"lowrank_bits={self.lowrank_bits} needs a low-rank branch (method svdquant, rank > 0)")
        smooth = self.smooth
        if smooth == AUTO:
            smooth = {"svdquant": "search", "smoothquant": 0.5, "w8a8": 0.5}.get(m)
        if smooth is not None and m in ("rtn", "w4a16"):
            raise ValueError(f"method {m!r} does not smooth; smooth must be None, got {smooth!r}")
        if isinstance(smooth, str) and smooth != "search":
            raise ValueError(f"smooth must be 'search', a float alpha in [0, 1], or None; got {smooth!r}")
        if isinstance(smooth, (int, float)) and not 0.0 <= float(smooth) <= 1.0:
            raise ValueError(f"smoothing alpha must be in [0, 1], got {smooth}")
        if self.unsigned and act != "int4":
            raise ValueError("unsigned (post-GELU) activations exist only for int4 activations")
        if self.indivisible not in ("error", "skip"):
            raise ValueError(f"indivisible must be 'error' or 'skip', got {self.indivisible!r}")
        if self.calib_tokens < 1:
            raise ValueError(f"calib_tokens must be >= 1, got {self.calib_tokens}")
        return replace(self, weight=weight, act=act, group_size=group, rank=rank, smooth=smooth,
                       skip=list(self.skip) if self.skip is not None else None,
                       w4a16=list(self.w4a16) if self.w4a16 is not None else None)

    def needs_calibration(self) -> bool:
        return self.smooth is not None or bool(self.rank)


def default_patterns(model: nn.Module) -> tuple[list[str], list[str]]:
    """(skip, w4a16) glob defaults: what the model declares (its `quantization_skip` /
    `quantization_weight_only` attributes, or what a system registered for its class in
    genfoundry.models), else the generic ones."""
    from genfoundry.models import declared_layers

    declared = declared_layers(model)
    if declared is None:
        return list(GENERIC_SKIP), list(GENERIC_W4A16)
    return list(declared.skip), list(declared.weight_only)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# ----------------------------------------------------------------------------------------------
# calibration


class _LayerStats:
    """Streaming statistics of one layer's input: running channel max and a uniform token sample."""

    def __init__(self, name: str, capacity: int, seed: int) -> None:
        self.name = name
        self.capacity = capacity
        self.generator = torch.Generator().manual_seed(seed)
        self.amax: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        x2 = x.detach().reshape(-1, x.shape[-1])
        if not bool(torch.isfinite(x2).all()):
            raise ValueError(
                f"calibration activations of layer {self.name!r} contain NaN or Inf (input shape "
                f"{tuple(x.shape)}); check the model and calibration data (fp16 overflow?) before quantizing"
            )
        x2 = x2.float()
        amax = x2.abs().amax(dim=0)
        self.amax = amax if self.amax is None else torch.maximum(self.amax, amax)
        # same seed per layer + same stream of inputs -> layers sharing an input keep the same tokens
        keys = torch.rand(x2.shape[0], generator=self.generator).to(x2.device)
        if self.tokens is not None:
            keys, x2 = torch.cat([self.keys, keys]), torch.cat([self.tokens, x2])
        if keys.numel() > self.capacity:
            keep = torch.topk(keys, self.capacity, largest=False).indices.sort().values
            keys, x2 = keys[keep], x2[keep]
        self.keys, self.tokens = keys, x2.clone() if self.tokens is None else x2
        self.count += x.numel() // x.shape[-1]


class _Calibrator:
    def __init__(self, layers: dict[str, nn.Module], cfg: QuantConfig, shareable: set[str]) -> None:
        self.stats = {n: _LayerStats(n, cfg.calib_tokens, cfg.seed) for n in layers}
        self.group_of: dict[str, int] = {}
        self._recent: list[tuple[weakref.ref, int]] = []
        self._shareable = shareable if cfg.share_inputs else set()
        self._handles = [mod.register_forward_pre_hook(self._hook(n, is_pointwise_conv(mod)))
                         for n, mod in layers.items()]

    def _hook(self, name: str, channels_first: bool):
        def hook(module: nn.Module, args: tuple) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            if name not in self.group_of:
                self.group_of[name] = self._group_for(name, x)
            self.stats[name].update(x.movedim(1, -1) if channels_first else x)
        return hook

    def _group_for(self, name: str, x: torch.Tensor) -> int:
        self._recent = [(r, g) for r, g in self._recent if r() is not None]
        if name in self._shareable:
            for ref, gid in self._recent:
                if ref() is x:
                    return gid
        gid = len(self.group_of)
        if name in self._shareable:
            self._recent.append((weakref.ref(x), gid))
        return gid

    def close(self) -> None:
        for h in self._handles:
            h.remove()


# ----------------------------------------------------------------------------------------------
# the pass


def _select_layers(model: nn.Module, cfg: QuantConfig) -> tuple[dict[str, nn.Module], set[str]]:
    """The layers to quantize (nn.Linear and 1x1 nn.Conv2d not matching `skip`) and the weight-only ones."""
    skip, w4a16 = default_patterns(model)
    skip = cfg.skip if cfg.skip is not None else skip
    w4a16 = cfg.w4a16 if cfg.w4a16 is not None else w4a16
    targets, weight_only = {}, set()
    for name, module in model.named_modules():
        if not (type(module) is nn.Linear or is_pointwise_conv(module)) or _matches(name, skip):
            continue
        targets[name] = module
        if cfg.method != "w4a16" and _matches(name, w4a16):
            weight_only.add(name)
    indivisible = []
    for name, lin in targets.items():
        n, k = linear_view(lin).out_features, linear_view(lin).in_features
        fmt_group = cfg.group_size if (cfg.method != "w8a8" or name in weight_only) else 1
        if k % fmt_group:
            indivisible.append(name)
            continue
        if name not in weight_only and cfg.rank > min(n, k):
            raise ValueError(f"rank {cfg.rank} exceeds min(in, out) = {min(n, k)} of layer {name!r} ({k}->{n})")
    if indivisible and cfg.indivisible == "error":
        listed = ", ".join(f"{n!r} (in_features={linear_view(targets[n]).in_features})" for n in indivisible)
        raise ValueError(
            f"layers whose in_features is not a multiple of group size {cfg.group_size}: {listed}; choose a "
            "group size dividing them, add them to `skip`, or set indivisible='skip' to keep them in 16 bits"
        )
    if indivisible:
        tqdm.write(f"quantize: kept in 16 bits, in_features not a multiple of {cfg.group_size}: {indivisible}")
        for n in indivisible:
            del targets[n]
    return targets, weight_only


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize(
    model: nn.Module,
    calibrate: Callable[[nn.Module], object] | None,
    config: QuantConfig | None = None,
) -> nn.Module:
    """Quantize `model` in place and return it. `calibrate(model)` must run forward passes on
    calibration data (required unless the method needs none: rtn, w4a16)."""
    cfg = (config or QuantConfig()).resolved()
    targets, weight_only = _select_layers(model, cfg)
    if not targets:
        raise ValueError("quantize: no nn.Linear (or 1x1 conv) layer left to quantize (check the `skip` patterns)")
    w4a4_like = {n for n in targets if n not in weight_only}
    if cfg.needs_calibration() and w4a4_like and calibrate is None:
        raise ValueError(f"method {cfg.method!r} with smooth={cfg.smooth!r}, rank={cfg.rank} needs a "
                         "`calibrate(model)` function that runs forward passes")
    calib: _Calibrator | None = None
    if calibrate is not None:
        shareable = w4a4_like if cfg.smooth is not None else set()
        calib = _Calibrator(targets, cfg, shareable)
        try:
            with torch.no_grad():
                calibrate(model)
        finally:
            calib.close()
        # a layer whose forward never ran may be used through its weight directly (F.linear(x, m.weight))
        idle = [n for n in targets if calib.stats[n].count == 0]
        if idle:
            tqdm.write(f"quantize: kept in 16 bits, never called during calibration: {idle}")
    else:
        # without a calibration run we cannot tell whether a 1x1 conv's forward is ever called
        idle = [n for n, m in targets.items() if is_pointwise_conv(m)]
    for n in idle:
        del targets[n]
    if not targets:
        raise ValueError("quantize: none of the selected layers ran during calibration; nothing to quantize")

    groups: dict[tuple[str, int], list[str]] = {}
    for i, name in enumerate(targets):
        gid = calib.group_of.get(name) if calib is not None else None
        groups.setdefault(("g", gid) if gid is not None else ("solo", i), []).append(name)

    bar = tqdm(total=len(targets), desc=f"quantize ({cfg.method})", unit="layer", disable=not cfg.progress)
    with torch.no_grad():
        for names in groups.values():
            bar.set_postfix_str(names[0][-40:])
            views = {n: linear_view(targets[n]) for n in names}
            new = _quantize_group(names, views, weight_only, calib, cfg)
            for name, module in new.items():
                _set_module(model, name, PointwiseConv(module) if is_pointwise_conv(targets[name]) else module)
            bar.update(len(names))
    bar.close()
    model.svdquant_config = asdict(cfg)  # read by save_quantized
    return model


def _quantize_group(names: list[str], targets: dict[str, nn.Linear], weight_only: set[str],
                    calib: _Calibrator | None, cfg: QuantConfig) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    if names[0] in weight_only or cfg.method == "w4a16":
        fmt = cfg.weight if cfg.method == "w4a16" else "int4"
        for n in names:
            out[n] = W4A16Linear.from_linear(targets[n], fmt, cfg.group_size)
        return out
    stats = [calib.stats[n] if calib is not None else None for n in names]
    have_stats = all(s is not None and s.amax is not None for s in stats)
    lam = None
    if cfg.method == "w8a8":
        for n, s in zip(names, stats):
            w = targets[n].weight.detach().float()
            if cfg.smooth is not None and s is not None:
                lam = smooth_factors(s.amax, weight_channel_amax([w]), float(cfg.smooth), 1.0 - float(cfg.smooth))
            out[n] = W8A8Linear.from_linear(targets[n], lam)
        return out

    device = targets[names[0]].weight.device
    generator = torch.Generator().manual_seed(cfg.seed)
    scale_dtype = torch.float32
    act_fmt = cfg.act

    def quantize_weight(r: torch.Tensor) -> torch.Tensor:
        return quantizers.fake_quant_weight(r, cfg.weight, cfg.group_size, scale_dtype)

    def quantize_act(x: torch.Tensor, unsigned: bool) -> torch.Tensor:
        return quantizers.fake_quant_act(x, act_fmt, cfg.group_size, unsigned=unsigned, scale_dtype=scale_dtype)

    # layers of one group read the same input: one shared sample and channel max
    sample = stats[0].tokens.to(device) if have_stats else None
    x_amax = torch.stack([s.amax for s in stats]).amax(dim=0).to(device) if have_stats else None
    problems = [LayerProblem(targets[n].weight.detach().float(), sample, _matches(n, cfg.unsigned)) for n in names]
    if cfg.smooth is not None and have_stats:
        if cfg.smooth == "search":
            lam, _, _ = search_smoothing(problems, x_amax, cfg.rank, quantize_weight, quantize_act, generator=generator)
        else:
            alpha = float(cfg.smooth)
            lam = smooth_factors(x_amax, weight_channel_amax([p.weight for p in problems]), alpha, 1.0 - alpha)
    lam_used = lam if lam is not None else torch.ones(problems[0].weight.shape[1], device=device)
    # smoothing is stored in the layer dtype: search the low rank with the factor the engine will use
    dtype = targets[names[0]].weight.dtype
    lam_used = lam_used.to(dtype).float()
    w_hats = [p.weight * lam_used for p in problems]
    if cfg.share_lowrank and len(names) > 1 and cfg.rank:
        results = _shared_lowrank(w_hats, problems, lam_used, cfg, quantize_weight, quantize_act, generator)
    else:
        results = []
        for p, w_hat in zip(problems, w_hats):
            def error(up: torch.Tensor, down: torch.Tensor, rq: torch.Tensor, p: LayerProblem = p) -> float:
                return output_error(p, lam_used, up, down, rq, quantize_act)

            results.append(refine_lowrank(w_hat, cfg.rank, quantize_weight, error,
                                          max_iters=cfg.refine_iters if cfg.rank else 0, generator=generator))
    for n, p, w_hat, (up, down, err) in zip(names, problems, w_hats, ((r.up, r.down, r.error) for r in results)):
        if not math.isfinite(err):
            raise ValueError(f"layer {n!r}: quantization error is not finite; does its weight contain NaN/Inf?")
        residual = (w_hat.double() - up @ down.t()).float()
        out[n] = SVDQLinear.from_factors(
            residual, lam_used if lam is not None else None, down, up, targets[n].bias,
            weight_format=cfg.weight, group_size=cfg.group_size, act_unsigned=p.unsigned,
            lowrank_bits=cfg.lowrank_bits, dtype=dtype,
        )
    return out


def _shared_lowrank(w_hats: list[torch.Tensor], problems: list[LayerProblem], lam: torch.Tensor, cfg: QuantConfig,
                    quantize_weight, quantize_act, generator: torch.Generator) -> list:
    """One down projection for layers reading the same input: SVD of the stacked weights [sum N, K];
    each layer keeps its rows of the up projection. Refinement minimises the summed output error."""
    sizes = [w.shape[0] for w in w_hats]

    def quantize_stacked(r: torch.Tensor) -> torch.Tensor:  # per layer (nvfp4 has a per-layer tensor scale)
        return torch.cat([quantize_weight(part) for part in r.split(sizes)])

    def error(up: torch.Tensor, down: torch.Tensor, rq: torch.Tensor) -> float:
        return sum(output_error(p, lam, u, down, q, quantize_act)
                   for p, u, q in zip(problems, up.split(sizes), rq.split(sizes)))

    joint = refine_lowrank(torch.cat(w_hats), cfg.rank, quantize_stacked, error, max_iters=cfg.refine_iters,
                           generator=generator)
    return [LowRankResult(u, joint.down, q, joint.error, joint.iterations)
            for u, q in zip(joint.up.split(sizes), joint.residual_q.split(sizes))]
