"""Conversions between ComfyUI IMAGE tensors (B, H, W, C float 0..1) and RGB uint8 numpy images."""

from __future__ import annotations

import numpy as np
import torch

from ..models.errors import InvalidInputError


def to_rgb_uint8(image: torch.Tensor) -> list[np.ndarray]:
    """IMAGE batch -> list of (H, W, 3) uint8 RGB. Grayscale is repeated; an alpha channel is dropped."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise InvalidInputError(f"expected an IMAGE tensor of shape (B, H, W, C), got {tuple(image.shape)}",
                                "connect an IMAGE output, such as Load Image")
    channels = image.shape[-1]
    if channels == 1:
        image = image.expand(-1, -1, -1, 3)
    elif channels == 4:
        image = image[..., :3]
    elif channels != 3:
        raise InvalidInputError(f"images with {channels} channels are not supported",
                                "convert the image to RGB, grayscale or RGBA first")
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return [np.ascontiguousarray(a) for a in array]


def to_image_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """List of same-size (H, W, 3) uint8 RGB -> IMAGE batch."""
    return torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
