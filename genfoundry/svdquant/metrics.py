"""How far a quantized model's images are from the 16-bit model's, and how many bytes it takes.

`psnr` / `ssim` compare two 8-bit RGB images (numpy [H, W, 3]); `quantized_bytes` counts the quantized
layers against the same layers in bf16; `deployed_bytes` counts a whole module as it would be stored
for inference: floating-point tensors in 16 bits, packed integer and fp8 tensors at their own size.
"""

from __future__ import annotations

import numpy as np
from torch import nn

PSNR_CAP_DB = 100.0  # identical images: a finite number that still sorts above every real one


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two 8-bit images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over RGB channels with an 11-tap Gaussian window (sigma 1.5), as in Wang et al. 2004."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)

        def blur(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, 1.5, truncate=3.5)  # 11-tap window

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


def quantized_bytes(module: nn.Module) -> tuple[int, int]:
    """(bytes of the quantized layers' buffers/params, bytes the same layers take in bf16)."""
    from genfoundry.svdquant.linear import SVDQLinear, W4A16Linear, W8A8Linear

    stored = dense = 0
    for m in module.modules():
        if isinstance(m, (SVDQLinear, W4A16Linear, W8A8Linear)):
            stored += sum(t.numel() * t.element_size() for t in m.state_dict().values())
            dense += 2 * m.in_features * m.out_features + 2 * m.out_features
    return stored, dense


def deployed_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s state stored for inference: fp32/fp16/bf16 tensors at 2 bytes an element
    (a 16-bit model), every other tensor (packed 4-bit weights, int8, fp8 scales) at its own size."""
    total = 0
    for t in module.state_dict().values():
        wide_float = t.is_floating_point() and t.element_size() >= 2
        total += t.numel() * (2 if wide_float else t.element_size())
    return total


def image_distance(images: list, references: list) -> dict:
    """Mean PSNR (dB, capped at PSNR_CAP_DB) and SSIM of PIL `images` against `references`, and the
    per-image values."""
    if len(images) != len(references) or not images:
        raise ValueError(f"need as many images as references, got {len(images)} and {len(references)}")
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    refs = [np.asarray(im.convert("RGB")) for im in references]
    psnrs = [min(psnr(a, r), PSNR_CAP_DB) for a, r in zip(arrays, refs)]
    ssims = [ssim(a, r) for a, r in zip(arrays, refs)]
    return {"psnr_db": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "psnr_db_per_image": psnrs,
            "ssim_per_image": ssims}


__all__ = ["PSNR_CAP_DB", "deployed_bytes", "image_distance", "psnr", "quantized_bytes", "ssim"]
