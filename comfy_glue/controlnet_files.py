"""Which files a diffusers ControlNet is read from, for the loaders of every method (FaceSnap's FFRNet backbone,
InstantID's IdentityNet, EcomID's) and for their caches."""

from __future__ import annotations

import os

from ..models.identity.diffusers_controlnet import DIFFUSERS_WEIGHT_NAMES


def controlnet_location(path: str) -> str:
    """A diffusers ControlNet picked by its weights file: the folder when ``config.json`` sits beside a
    ``diffusion_pytorch_model*.safetensors`` (InstantID's ``ControlNetModel/`` layout), else the single file."""
    folder = os.path.dirname(path)
    if os.path.basename(path) in DIFFUSERS_WEIGHT_NAMES and os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    return path


def controlnet_files(location: str | None) -> list[str]:
    """The files a diffusers ControlNet at ``location`` (a folder or a single file) is read from."""
    if location is None:
        return []
    if not os.path.isdir(location):
        return [location]
    names = ["config.json", *DIFFUSERS_WEIGHT_NAMES]
    return [os.path.join(location, n) for n in names if os.path.isfile(os.path.join(location, n))]
