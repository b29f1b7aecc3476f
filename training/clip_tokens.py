"""The mixer's CLIP input: penultimate hidden states of CLIP-ViT-H/14 on the face crop (257 x 1280).

Computed by the same function as FaceSnap Face Encode at inference (``comfy_glue.methods.facesnap.clip_tokens``:
ComfyUI's own CLIP-vision code, as the stock CLIPVisionEncode node runs it).
``TinyClipTokens`` is a frozen random stand-in with the tiny mixer's token shape, for tests and the benchmark.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ClipTokenEncoder:
    """``source``: a CLIP-vision safetensors path, or an already loaded ``comfy.clip_vision.ClipVisionModel``."""

    def __init__(self, source):
        import comfy.clip_vision

        self.model = comfy.clip_vision.load(source) if isinstance(source, str) else source

    @torch.no_grad()
    def encode_batch(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 257, 1280) float32."""
        from ..comfy_glue.identity_methods import METHODS

        return METHODS["facesnap"].glue().clip_tokens(self.model, faces.permute(0, 2, 3, 1).cpu())

    def encode(self, face_rgb: np.ndarray) -> np.ndarray:
        faces = torch.from_numpy(face_rgb).permute(2, 0, 1)[None].float() / 255.0
        return self.encode_batch(faces)[0].numpy()


class TinyClipTokens(nn.Module):
    """1 pooled token + a (g x g) grid of patch tokens from a frozen random projection."""

    def __init__(self, tokens: int, dim: int, seed: int = 0):
        super().__init__()
        self.grid = int(round((tokens - 1) ** 0.5))
        if self.grid * self.grid + 1 != tokens:
            raise ValueError(f"TinyClipTokens needs 1 + g*g tokens, got {tokens}")
        g = torch.Generator().manual_seed(seed + 7)
        self.register_buffer("proj", torch.randn(3 * 8 * 8, dim, generator=g) / 8.0)

    @torch.no_grad()
    def encode_batch(self, faces: torch.Tensor) -> torch.Tensor:
        b = faces.shape[0]
        x = F.interpolate(faces.float(), size=(8 * self.grid, 8 * self.grid), mode="area")
        patches = F.unfold(x, 8, stride=8).transpose(1, 2)  # (B, g*g, 192)
        tokens = (patches - 0.5) @ self.proj.to(patches)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], 1).reshape(b, -1, self.proj.shape[1])
