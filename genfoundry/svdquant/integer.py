"""The integer operands of one `SVDQLinear` call, as an integer accelerator takes them.

For an INT4 layer and an input ``x [M, K]``: the activation codes ``X [M, K]`` (int4, per token and
group of `group_size` channels, after the smoothing division), the weight codes ``W [K, N]`` (int4, per
output channel and group), the low-rank activation ``L = x @ lora_down [M, R]`` and the up projection
``U = lora_up^T [R, N]``, each symmetric int`B` with one scale. genfoundry.lego's `svdq:MxNxKxR`
operator computes ``X W + L U`` on exactly these (int32 accumulation); `dequantized_output` applies the
scales the way the W4A4 kernel does (per group of K, then the branch and bias) and reproduces the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genfoundry.errors import InputError
from genfoundry.nunchaku import packing
from genfoundry.nunchaku.reference import quantize_act_lora_down
from genfoundry.svdquant.linear import SVDQLinear


@dataclass
class IntegerOperands:
    x: np.ndarray  # [M, K] int4 activation codes
    w: np.ndarray  # [K, N] int4 weight codes
    l: np.ndarray  # [M, R] low-rank activation, int`lowrank_bits`  # noqa: E741 - the operator's name
    u: np.ndarray  # [R, N] up projection, int`lowrank_bits`
    x_scales: np.ndarray  # [M, K/G] one per token and group
    w_scales: np.ndarray  # [K/G, N] one per group and output channel
    l_scale: float
    u_scale: float
    bias: np.ndarray | None  # [N]
    group_size: int
    lowrank_bits: int

    def tensors(self) -> dict[str, np.ndarray]:
        """The inputs of lego's svdq operator: X, W, L, U."""
        return {"X": self.x, "W": self.w, "L": self.l, "U": self.u}

    def dequantized_output(self) -> np.ndarray:
        """The layer's output [M, N] computed from these integers and their scales (float64)."""
        m, k = self.x.shape
        g = self.group_size
        xg = self.x.astype(np.int64).reshape(m, k // g, g)
        wg = self.w.astype(np.int64).reshape(k // g, g, -1)
        partial = np.einsum("mgc,gcn->mgn", xg, wg)  # integer dot product of every group
        y = np.einsum("mgn,mg,gn->mn", partial.astype(np.float64), self.x_scales, self.w_scales)
        y += (self.l.astype(np.int64) @ self.u.astype(np.int64)).astype(np.float64) * self.l_scale * self.u_scale
        return y if self.bias is None else y + self.bias


def _symmetric(t: torch.Tensor, bits: int) -> tuple[np.ndarray, float]:
    qmax = (1 << (bits - 1)) - 1
    amax = float(t.abs().max()) if t.numel() else 0.0
    scale = amax / qmax if amax > 0 else 1.0
    codes = torch.round(t.double() / scale).clamp(-qmax, qmax).to(torch.int64)
    return codes.numpy().astype(np.int32 if bits > 8 else np.int8), scale


@torch.no_grad()
def integer_operands(layer: SVDQLinear, x: torch.Tensor, lowrank_bits: int = 16) -> IntegerOperands:
    """The integer operands of `layer(x)` for `x [M, K]` (see the module docstring)."""
    if not isinstance(layer, SVDQLinear):
        raise InputError(f"expected an SVDQLinear layer, got {type(layer).__name__}")
    if layer.weight_format != "int4" or layer.act_unsigned:
        raise InputError(f"layer has {layer.weight_format} weights{' and unsigned activations' if layer.act_unsigned else ''}:"
                         " its 4-bit codes are not the signed integers an integer accelerator multiplies (int4 only)")
    if x.dim() != 2 or x.shape[1] != layer.in_features:
        raise InputError(f"x must be [M, {layer.in_features}], got {tuple(x.shape)}")
    if not 2 <= lowrank_bits <= 16:
        raise InputError(f"lowrank_bits must be in 2..16, got {lowrank_bits}")
    rank = layer.rank
    qact, ascales, lora_act = quantize_act_lora_down(x.float(), layer.smooth, layer.lora_down[:, :rank],
                                                     act_format="int4", group_size=layer.group_size)
    x_codes = packing.unpack_nibbles(qact, signed=True)
    w_codes = packing.unpack_nibbles(layer.qweight, signed=True)
    l_codes, l_scale = _symmetric(lora_act, lowrank_bits)
    u_codes, u_scale = _symmetric(layer.lora_up[:, :rank].float().t(), lowrank_bits)
    return IntegerOperands(
        x=x_codes.numpy(), w=w_codes.t().contiguous().numpy(), l=l_codes, u=u_codes,
        x_scales=ascales.t().double().numpy(), w_scales=layer.wscales.double().numpy(),
        l_scale=l_scale, u_scale=u_scale,
        bias=None if layer.bias is None else layer.bias.double().numpy(),
        group_size=layer.group_size, lowrank_bits=lowrank_bits)
