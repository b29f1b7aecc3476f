"""CLIP-T (prompt-image) and CLIP-face (reference face - generated face) through open_clip, from local files only.

A model is named either ``local-dir:<folder>`` (open_clip's own layout: ``open_clip_config.json`` beside the
weights) or by an open_clip architecture name with ``--clip-checkpoint <file>`` (for example ``ViT-H-14`` with
``open_clip_pytorch_model.bin`` of laion/CLIP-ViT-H-14-laion2B-s32B-b79K). A pretrained *tag* would make open_clip
download, so only existing files are accepted. Weights load with ``weights_only=True`` or from safetensors.
Scores are 100 x cosine, as the papers print them.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
import torch

from ..models.errors import MissingDependencyError, ModelFileError

LOCAL_DIR = "local-dir:"
INSTALL_FIX = "pip install open_clip_torch   (the pack's `eval` extra; the nodes do not need it)"


def _import_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise MissingDependencyError(f"CLIP scores need open_clip ({err})", INSTALL_FIX) from err
    return open_clip


class ClipScorer:
    """An open_clip model with its evaluation transform and tokenizer."""

    def __init__(self, model, preprocess, tokenizer, name: str, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device

    @classmethod
    def load(cls, model: str, checkpoint: str | pathlib.Path | None = None, device: str = "cpu") -> "ClipScorer":
        open_clip = _import_open_clip()
        if model.startswith(LOCAL_DIR):
            folder = pathlib.Path(model[len(LOCAL_DIR):]).expanduser()
            if not (folder / "open_clip_config.json").is_file():
                raise ModelFileError(f"the CLIP folder {folder} has no open_clip_config.json",
                                     "point local-dir: at a folder holding open_clip_config.json and its weights")
            name, pretrained = f"{LOCAL_DIR}{folder}", None
        else:
            if checkpoint is None or not pathlib.Path(checkpoint).expanduser().is_file():
                raise ModelFileError(
                    f"the CLIP checkpoint for {model} was not found ({checkpoint or 'none given'})",
                    "download the open_clip weights once (e.g. open_clip_pytorch_model.bin of "
                    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K) and pass --clip-checkpoint PATH; nothing is downloaded "
                    "at run time")
            name, pretrained = model, str(pathlib.Path(checkpoint).expanduser())
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device,
                                                                        weights_only=True)
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelFileError(f"could not load the CLIP model {model} ({err})",
                                 "check that the weights belong to that open_clip architecture") from err
        return cls(clip, preprocess, open_clip.get_tokenizer(name), model, device)

    @torch.no_grad()
    def image_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, D) L2-normalised features of RGB uint8 images."""
        from PIL import Image

        batch = torch.stack([self.preprocess(Image.fromarray(image)) for image in images]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1).cpu()

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()


def clip_score(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """100 x row-wise cosine of two (N, D) batches of normalised features."""
    return (100.0 * (a * b).sum(-1)).numpy()
