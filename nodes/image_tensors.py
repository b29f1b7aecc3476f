"""Conversions between ComfyUI IMAGE tensors (B, H, W, C float 0..1) and RGB uint8 numpy images, and the memory
limit every node checks before it builds images.

Memory limit: a FaceSnap node refuses to build more than ``DEFAULT_MEMORY_LIMIT_MB`` (1024 MB) of images in one run,
estimated from the batch size and canvas sizes before anything is allocated; the error names the widgets to lower.
Set the environment variable ``FACESNAP_MEMORY_LIMIT_MB`` before starting ComfyUI to change it.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..models.errors import InvalidInputError

MEMORY_LIMIT_ENV = "FACESNAP_MEMORY_LIMIT_MB"
DEFAULT_MEMORY_LIMIT_MB = 1024
MEMORY_LIMIT_NOTE = (f"The images one node builds in a run may take at most {DEFAULT_MEMORY_LIMIT_MB} MB "
                     f"(set {MEMORY_LIMIT_ENV} to change).")
IMAGE_BYTES_PER_PIXEL = 12  # an IMAGE output: float32 RGB
UINT8_BYTES_PER_PIXEL = 3  # the RGB uint8 image it is made from


def memory_limit_bytes() -> int:
    try:
        megabytes = float(os.environ.get(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT_MB))
    except ValueError:
        megabytes = DEFAULT_MEMORY_LIMIT_MB
    return int(megabytes * 2**20)


def image_bytes(count: int, height: int, width: int, outputs: int = 1) -> int:
    """Memory of ``outputs`` IMAGE outputs of ``count`` images, with the uint8 images they are built from."""
    return outputs * count * height * width * (IMAGE_BYTES_PER_PIXEL + UINT8_BYTES_PER_PIXEL)


def ensure_memory(estimate: int, what: str, lower: str) -> None:
    """Refuse work whose estimated memory is above the limit; ``lower`` names the widgets or inputs to reduce."""
    limit = memory_limit_bytes()
    if estimate > limit:
        raise InvalidInputError(
            f"{what} would need about {estimate / 2**20:,.0f} MB of memory, above the pack's limit of "
            f"{limit / 2**20:,.0f} MB per node",
            f"lower {lower}; or, if this machine has the memory, start ComfyUI with the environment variable "
            f"{MEMORY_LIMIT_ENV} set higher (in MB)")


def _image_batch(image, connect: str) -> torch.Tensor:
    """``image`` as a (B, H, W, C) IMAGE batch with at least one image of at least one pixel, or the error naming
    what is wrong; ``connect`` says what to connect instead."""
    if not isinstance(image, torch.Tensor):
        raise InvalidInputError(f"expected an IMAGE tensor, got {type(image).__name__}", f"connect {connect}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise InvalidInputError(f"expected an IMAGE tensor of shape (B, H, W, C), got {tuple(image.shape)}",
                                f"connect {connect}")
    if image.shape[0] == 0:
        raise InvalidInputError("the image batch is empty (0 images)",
                                "connect an IMAGE output that holds at least one image; a node before this one "
                                "(a batch split, a filter or a selection) passed on none")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise InvalidInputError(f"the images are {image.shape[2]} x {image.shape[1]} pixels",
                                "connect images of at least one pixel on each side")
    return image


def _nonfinite_error(index: int) -> InvalidInputError:
    return InvalidInputError(f"image {index} of the batch holds NaN or infinite pixel values",
                             "fix the node that made this image (for example a failed decode or a division by zero); "
                             "the pack does not guess missing pixels")


def check_control_image(image, input_name: str) -> torch.Tensor:
    """The pre-flight check of a control image an apply node hands to a ControlNet (landmarks, keypoints): a
    non-empty RGB IMAGE batch with finite pixels, whose copies while sampling fit the memory limit. Its aspect ratio is
    checked against the latent when sampling starts (``comfy_glue/control.py``)."""
    connect = "the image output of FaceSnap Draw Landmarks or Draw Keypoints"
    try:
        image = _image_batch(image, connect)
        count, height, width, channels = image.shape
        if channels != 3:
            raise InvalidInputError(f"the images have {channels} channels; a control image is RGB (3 channels)",
                                    f"connect {connect}, or convert the image to RGB first")
        ensure_memory(image_bytes(count, height, width), f"{count} control image(s) of {width} x {height}",
                      "the size of the control image (draw it at the output size: only its aspect ratio matters)")
        for index, item in enumerate(image):
            if not bool(torch.isfinite(item).all()):
                raise _nonfinite_error(index)
    except InvalidInputError as err:
        raise InvalidInputError(f"{input_name}: {err.message}", err.fix) from None
    return image


def to_rgb_uint8(image: torch.Tensor) -> list[np.ndarray]:
    """IMAGE batch -> list of (H, W, 3) uint8 RGB. Grayscale is repeated; an alpha channel is dropped.
    Converted one image at a time, so the only large allocation is the uint8 result."""
    image = _image_batch(image, "an IMAGE output, such as Load Image")
    channels = image.shape[-1]
    if channels not in (1, 3, 4):
        raise InvalidInputError(f"images with {channels} channels are not supported",
                                "convert the image to RGB, grayscale or RGBA first")
    result = []
    for index, item in enumerate(image.detach()):
        item = item.float()
        if not torch.isfinite(item).all():
            raise _nonfinite_error(index)
        rgb = item.expand(-1, -1, 3) if channels == 1 else item[..., :3]
        result.append(np.ascontiguousarray((rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()))
    return result


def _filled_batch(images: list, fill) -> torch.Tensor:
    """An IMAGE batch of the first item's size, each slot written in place by ``fill(slot, image)``."""
    if not images:
        raise InvalidInputError("there is no image to output (the batch is empty)",
                                "connect inputs that hold at least one image or face")
    height, width = images[0].shape[:2]
    batch = torch.empty((len(images), height, width, 3), dtype=torch.float32)
    for slot, image in zip(batch, images, strict=True):
        fill(slot, image)
    return batch


def to_image_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """List of same-size (H, W, 3) uint8 RGB -> IMAGE batch, filled in place (no stacked or float64 copies)."""
    return _filled_batch(images, lambda slot, image: slot.copy_(torch.from_numpy(np.ascontiguousarray(image)))
                         .div_(255.0))


def gray_to_image_tensor(images: list[torch.Tensor]) -> torch.Tensor:
    """List of same-size (H, W) float images in [0, 1] -> RGB IMAGE batch (the gray value in every channel)."""
    return _filled_batch(images, lambda slot, image: slot.copy_(image.float().unsqueeze(-1).expand(-1, -1, 3)))
