"""Quantized replacements for `nn.Linear`.

- `SVDQLinear`: W4A4 + 16-bit low-rank branch (svdquant, smoothquant and rtn W4A4 all use it; the
  baselines simply have rank 0 and/or no smoothing), or with `lowrank_bits=8` an int8 branch.
  Buffers use nunchaku's names; forward calls `genfoundry.nunchaku.ops.svdq_linear`.
- `W4A16Linear`: 4-bit weights (NF4 or INT4), 16-bit activations.
- `W8A8Linear`: SmoothQuant-style INT8 weights (per channel) and INT8 activations (per token).

Each module can be built empty from its `spec()` (a JSON-able dict) so a saved file loads into a fresh
model without the original weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfoundry.nunchaku import ops, packing
from genfoundry.svdquant import quantizers

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    for name, d in _DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"unsupported compute dtype {dtype}; expected one of {list(_DTYPES)}")


def dtype_from_name(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; expected one of {list(_DTYPES)}")
    return _DTYPES[name]


class SVDQLinear(nn.Module):
    """``y = Q4(x / smooth) Q4(R)^T + (x @ lora_down) @ lora_up^T + bias``.

    Buffers: ``qweight`` int8 [N, K/2]; ``wscales`` [K/G, N] (compute dtype for int4, float8_e4m3fn for
    nvfp4); ``smooth`` [K]; ``lora_down`` [K, r] (pre-divided by smooth); ``lora_up`` [N, r];
    ``bias`` [N] or None; nvfp4 adds ``wtscale`` (fp32 scalar). Attached LoRAs (see `svdquant.lora`)
    are appended as extra columns of lora_down / lora_up; the first `rank` columns are the SVD branch.

    ``lowrank_bits=8`` runs the branch in int8, as an integer accelerator without 16-bit multipliers
    would (genfoundry.lego's `svdq:...:r8`): x per token, lora_down per column, the rank-r activation
    per token and lora_up per row, each symmetric int8 with its own scale, every product accumulated
    exactly. The buffers stay in the compute dtype (the scales are taken in the forward, so attached
    LoRA columns are quantized too), and the 4-bit GEMM runs without the branch on the chosen backend.
    """

    LOWRANK_BITS = (16, 8)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        bias: bool = True,
        weight_format: str = "int4",
        group_size: int | None = None,
        act_unsigned: bool = False,
        lowrank_bits: int = 16,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if lowrank_bits not in self.LOWRANK_BITS:
            raise ValueError(f"lowrank_bits must be 16 (the compute dtype) or 8 (int8), got {lowrank_bits!r}")
        self.lowrank_bits = lowrank_bits
        group_size = group_size or packing.default_group_size(weight_format)
        packing.check_groups(in_features, group_size, f"SVDQLinear({in_features}->{out_features})")
        if weight_format == "nvfp4" and (group_size != packing.NVFP4_GROUP or act_unsigned):
            raise ValueError("nvfp4 layers use group size 16 and signed activations")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.weight_format, self.group_size, self.act_unsigned = weight_format, group_size, act_unsigned
        self.dtype = dtype
        n, k, g = out_features, in_features, group_size
        scale_dtype = torch.float8_e4m3fn if weight_format == "nvfp4" else packing.scale_dtype_for(dtype)
        self.register_buffer("qweight", torch.zeros(n, k // 2, dtype=torch.int8, device=device))
        self.register_buffer("wscales", torch.zeros(k // g, n, device=device).to(scale_dtype))
        self.register_buffer("smooth", torch.ones(k, dtype=dtype, device=device))
        self.register_buffer("lora_down", torch.zeros(k, rank, dtype=dtype, device=device))
        self.register_buffer("lora_up", torch.zeros(n, rank, dtype=dtype, device=device))
        # unsigned activations need a bias to carry the shift correction
        has_bias = bias or act_unsigned
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if has_bias else None)
        if weight_format == "nvfp4":
            self.register_buffer("wtscale", torch.ones((), dtype=torch.float32, device=device))
        else:
            self.wtscale = None
        self.loras: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}  # name -> (down, up, scale)

    @classmethod
    def from_factors(
        cls,
        residual: torch.Tensor,
        smooth: torch.Tensor | None,
        down: torch.Tensor,
        up: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        weight_format: str = "int4",
        group_size: int | None = None,
        act_unsigned: bool = False,
        lowrank_bits: int = 16,
        dtype: torch.dtype = torch.float32,
    ) -> "SVDQLinear":
        """Pack a layer from the smoothed residual ``R [N, K]`` (= W * smooth - up @ down.T), the
        smoothing factor ``[K]`` (None = ones) and the low-rank factors of the smoothed weight."""
        n, k = residual.shape
        device = residual.device
        layer = cls(k, n, down.shape[1], bias=bias is not None, weight_format=weight_format,
                    group_size=group_size, act_unsigned=act_unsigned, lowrank_bits=lowrank_bits, dtype=dtype,
                    device=device)
        lam = torch.ones(k, dtype=torch.float64, device=device) if smooth is None else smooth.to(torch.float64)
        if weight_format == "int4":
            layer.qweight, layer.wscales = packing.quantize_int4_weight(residual, layer.group_size,
                                                                        packing.scale_dtype_for(dtype))
            deq = packing.dequantize_int4_weight(layer.qweight, layer.wscales, layer.group_size)
        elif weight_format == "nvfp4":
            layer.qweight, layer.wscales, layer.wtscale = packing.quantize_nvfp4_weight(residual, layer.group_size)
            deq = None
        else:
            raise ValueError(f"SVDQLinear weight format must be int4 or nvfp4, got {weight_format!r}")
        layer.smooth = lam.to(dtype)
        layer.lora_down = (down.to(torch.float64) / lam.unsqueeze(1)).to(dtype)
        layer.lora_up = up.to(dtype)
        b = torch.zeros(n, dtype=torch.float64, device=device) if bias is None else bias.detach().to(torch.float64)
        if act_unsigned:
            # the GEMM sees x/l + shift: subtract shift * sum_k Q(R)[n, k] once, here
            b = b - packing.UNSIGNED_SHIFT * deq.to(torch.float64).sum(dim=1)
        if layer.bias is not None:
            layer.bias = b.to(dtype)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SVDQLinear expects {self.in_features} input features, got shape {tuple(x.shape)}")
        int8_branch = self.lowrank_bits == 8 and self.lora_down.shape[1] > 0
        y = ops.svdq_linear(
            x, self.qweight, self.wscales, self.smooth, None if int8_branch else self.lora_down,
            None if int8_branch else self.lora_up, self.bias,
            weight_format=self.weight_format, group_size=self.group_size, wtscale=self.wtscale,
            act_unsigned=self.act_unsigned,
        )
        if int8_branch:
            y = y + int8_lowrank(x, self.lora_down, self.lora_up).to(y.dtype)
        return y

    # -- LoRA (no re-quantization: extra columns of the low-rank branch) --------------------------
    def rebuild_lora_branch(self) -> None:
        """Set lora_down / lora_up to the SVD columns followed by every attached LoRA (scaled on the
        up side), zero-padded to a multiple of 16 columns when LoRAs are attached."""
        downs = [self.lora_down[:, : self.rank]]
        ups = [self.lora_up[:, : self.rank]]
        for down, up, scale in self.loras.values():
            downs.append(down.to(self.lora_down.dtype))
            ups.append((up.float() * scale).to(self.lora_up.dtype))
        total = sum(d.shape[1] for d in downs)
        if self.loras and total % 16:
            pad = 16 - total % 16
            downs.append(self.lora_down.new_zeros(self.in_features, pad))
            ups.append(self.lora_up.new_zeros(self.out_features, pad))
        self.lora_down = torch.cat(downs, dim=1).contiguous()
        self.lora_up = torch.cat(ups, dim=1).contiguous()

    def base_state(self) -> dict[str, torch.Tensor]:
        """The buffers without attached LoRAs (what a quantized checkpoint stores)."""
        out = {k: v for k, v in self._buffers.items() if v is not None}
        out["lora_down"] = self.lora_down[:, : self.rank].contiguous()
        out["lora_up"] = self.lora_up[:, : self.rank].contiguous()
        return out

    def spec(self) -> dict:
        return {"kind": "svdq", "in_features": self.in_features, "out_features": self.out_features,
                "rank": self.rank, "bias": self.bias is not None, "weight_format": self.weight_format,
                "group_size": self.group_size, "act_unsigned": self.act_unsigned, "lowrank_bits": self.lowrank_bits,
                "dtype": dtype_name(self.dtype)}

    def extra_repr(self) -> str:
        branch = ", int8 low-rank branch" if self.lowrank_bits == 8 else ""
        return (f"in={self.in_features}, out={self.out_features}, w4a4={self.weight_format}, "
                f"group={self.group_size}, rank={self.rank}{branch}, loras={list(self.loras)}")


def int8_lowrank(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``(x @ down) @ up.T`` with both GEMMs in int8: x and the rank-r activation per token, down per
    column, up per row (symmetric, [-127, 127] weights), fp32 out. x ``[..., K]``, down ``[K, r]``,
    up ``[N, r]``."""
    x2 = x.reshape(-1, x.shape[-1]).float()
    down_q = quantizers.dequantize_int8_weight(*quantizers.quantize_int8_weight(down.float().t())).t()
    up_q = quantizers.dequantize_int8_weight(*quantizers.quantize_int8_weight(up.float()))
    act = quantizers.fake_quant_act(x2, "int8", 0) @ down_q
    y = quantizers.fake_quant_act(act, "int8", 0) @ up_q.t()
    return y.reshape(*x.shape[:-1], up.shape[0])


class W4A16Linear(nn.Module):
    """4-bit weights (``nf4``: NF4 levels x per-group absmax; ``int4``: symmetric INT4), 16-bit inputs."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, weight_format: str = "nf4",
                 group_size: int = 64, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if weight_format not in ("nf4", "int4"):
            raise ValueError(f"W4A16 weight format must be nf4 or int4, got {weight_format!r}")
        packing.check_groups(in_features, group_size, f"W4A16Linear({in_features}->{out_features})")
        self.in_features, self.out_features = in_features, out_features
        self.weight_format, self.group_size, self.dtype = weight_format, group_size, dtype
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.int8, device=device))
        self.register_buffer("wscales", torch.zeros(in_features // group_size, out_features,
                                                     dtype=packing.scale_dtype_for(dtype), device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_format: str = "nf4", group_size: int = 64) -> "W4A16Linear":
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    weight_format=weight_format, group_size=group_size, dtype=w.dtype, device=w.device)
        sd = packing.scale_dtype_for(w.dtype)
        if weight_format == "nf4":
            layer.qweight, layer.wscales = quantizers.quantize_nf4(w, group_size, sd)
        else:
            layer.qweight, layer.wscales = packing.quantize_int4_weight(w, group_size, sd)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def dequantized_weight(self) -> torch.Tensor:
        if self.weight_format == "nf4":
            return quantizers.dequantize_nf4(self.qweight, self.wscales, self.group_size)
        return packing.dequantize_int4_weight(self.qweight, self.wscales, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), bias)

    def spec(self) -> dict:
        return {"kind": "w4a16", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "weight_format": self.weight_format,
                "group_size": self.group_size, "dtype": dtype_name(self.dtype)}

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, w4a16={self.weight_format}, group={self.group_size}"


class W8A8Linear(nn.Module):
    """``y = Q8(x / smooth) Q8(W * smooth)^T + bias``: per-channel INT8 weights, per-token INT8 inputs."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("wscales", torch.zeros(out_features, dtype=packing.scale_dtype_for(dtype), device=device))
        self.register_buffer("smooth", torch.ones(in_features, dtype=dtype, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, smooth: torch.Tensor | None = None) -> "W8A8Linear":
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, dtype=w.dtype,
                    device=w.device)
        lam = torch.ones(linear.in_features, device=w.device) if smooth is None else smooth.float()
        layer.smooth = lam.to(w.dtype)
        layer.qweight, layer.wscales = quantizers.quantize_int8_weight(w.float() * layer.smooth.float(),
                                                                       packing.scale_dtype_for(w.dtype))
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1]).float() / self.smooth.float()
        xq = quantizers.fake_quant_act(x2, "int8", 0, scale_dtype=packing.scale_dtype_for(x.dtype))
        y = xq @ quantizers.dequantize_int8_weight(self.qweight, self.wscales).t()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def spec(self) -> dict:
        return {"kind": "w8a8", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": dtype_name(self.dtype)}

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, w8a8"




def build_from_spec(spec: dict, device: torch.device | str | None = None) -> nn.Module:
    """An empty quantized layer of the shape a checkpoint describes (its buffers are loaded after)."""
    if spec.get("pointwise_conv"):
        return PointwiseConv(build_from_spec({k: v for k, v in spec.items() if k != "pointwise_conv"}, device))
    kind = spec.get("kind")
    dtype = dtype_from_name(spec["dtype"])
    if kind == "svdq":
        return SVDQLinear(spec["in_features"], spec["out_features"], spec["rank"], bias=spec["bias"],
                          weight_format=spec["weight_format"], group_size=spec["group_size"],
                          act_unsigned=spec["act_unsigned"], lowrank_bits=spec.get("lowrank_bits", 16), dtype=dtype,
                          device=device)
    if kind == "w4a16":
        return W4A16Linear(spec["in_features"], spec["out_features"], bias=spec["bias"],
                           weight_format=spec["weight_format"], group_size=spec["group_size"], dtype=dtype,
                           device=device)
    if kind == "w8a8":
        return W8A8Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], dtype=dtype, device=device)
    raise ValueError(f"unknown quantized layer kind {kind!r}; expected svdq, w4a16 or w8a8")


def is_pointwise_conv(module: nn.Module) -> bool:
    """A 1x1 `nn.Conv2d` without stride, padding, dilation or groups: a linear layer over channels."""
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding == (0, 0) and module.dilation == (1, 1) and module.groups == 1)


def linear_view(module: nn.Module) -> nn.Linear:
    """`module` itself for an nn.Linear; for a pointwise conv an nn.Linear sharing its weight storage."""
    if type(module) is nn.Linear:
        return module
    w = module.weight
    view = nn.Linear(module.in_channels, module.out_channels, bias=module.bias is not None, device="meta")
    view.weight = nn.Parameter(w.detach().reshape(w.shape[0], w.shape[1]), requires_grad=False)
    if module.bias is not None:
        view.bias = nn.Parameter(module.bias.detach(), requires_grad=False)
    return view


class PointwiseConv(nn.Module):
    """A quantized layer standing in for a 1x1 conv: ``[B, C, H, W]`` -> channels-last -> linear -> back."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"PointwiseConv expects [B, C, H, W] input, got shape {tuple(x.shape)}")
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)

    def spec(self) -> dict:
        return {**self.linear.spec(), "pointwise_conv": True}


QUANTIZED_TYPES = (SVDQLinear, W4A16Linear, W8A8Linear, PointwiseConv)
