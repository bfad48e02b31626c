"""Image input checks shared by the model and the CLI: paths, PIL images and tensors -> [3, S, S] in [-1, 1]."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch


def load_image(image, size: int) -> torch.Tensor:
    """A PIL image, an image file path, or a tensor [3,H,W] in [-1,1] -> float tensor [3, size, size].

    An image of another size is resized (bicubic) with a note; a file that is not an image raises
    ValueError naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    from genfoundry.shapes import image_to_tensor

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image file not found: {path}")
        if path.is_dir():
            raise ValueError(f"expected an image file, got a folder: {path}")
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path} is not an image file PIL can read (PNG, JPEG, ...): {err}") from None
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be [3, H, W] in [-1, 1], got shape {tuple(image.shape)}")
        tensor = image.detach().float().cpu()
        if tensor.shape[1:] != (size, size):
            warnings.warn(f"note: image is {tensor.shape[2]}x{tensor.shape[1]}, resized to {size}x{size}",
                          UserWarning, stacklevel=3)
            tensor = torch.nn.functional.interpolate(tensor[None], size=(size, size), mode="bicubic",
                                                     align_corners=False)[0].clamp(-1, 1)
        return tensor
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, an image path or a [3,H,W] tensor, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (size, size):
        warnings.warn(f"note: image is {image.size[0]}x{image.size[1]}, resized to {size}x{size}",
                      UserWarning, stacklevel=3)
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image_to_tensor(image)
