"""What FACESNAP_FACE_FEATURES carries: the mixer's inputs for the reference photos of one person."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError


@dataclass
class FaceFeatures:
    id_embeds: torch.Tensor  # (N, 512) ArcFace embeddings, one per reference photo
    clip_tokens: torch.Tensor  # (N, 257, 1280) CLIP-ViT-H penultimate hidden states of the face crops

    def __post_init__(self):
        if self.id_embeds.shape[0] == 0:
            raise InvalidInputError("the reference batch is empty", "connect at least one reference face")
        if self.id_embeds.shape[0] != self.clip_tokens.shape[0]:
            raise InvalidInputError(
                f"{self.id_embeds.shape[0]} ArcFace embeddings but {self.clip_tokens.shape[0]} CLIP encodings",
                "encode the same reference faces with both models",
            )

    def __len__(self) -> int:
        return self.id_embeds.shape[0]

    def batched(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, N, 512), (1, N, 257, 1280): all references of one person as one mixer sample."""
        return self.id_embeds[None], self.clip_tokens[None]
