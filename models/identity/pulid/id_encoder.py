"""PuLID v1's ID encoder: ArcFace and EVA-CLIP features -> 10 identity tokens (paper Sec. 3.1, ``pulid_v1.bin``).

    id = [ArcFace embedding (512) ; EVA CLS embedding, L2-normalised (768)]                  1280
    body(id)                                   MLP 1280 -> 1024 -> 1024 -> 5 x 2048          5 tokens
    for each of the 5 EVA hidden states h_i (CLS token first, then the patch tokens):
        mapping_i(h_i[CLS]) + mean over patches of mapping_patch_i(h_i[patch])  1024 -> 2048  5 tokens

Every MLP is Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear (``mapping_mlp``), so its weights
sit at indices 0, 1, 3, 4, 6: the names of the published file (``body.0.weight``, ``mapping_3.4.bias``, ...).
The patch mapping is applied to every patch token before the mean, as in the official encoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...common.operations import resolve_operations
from ...errors import InvalidInputError
from ..identity import ARCFACE_DIM

EVA_CLS_DIM = 768
EVA_LAYERS = 5  # PuLID reads the EVA tower's token states after its first 4, 8, 12, 16 and 20 blocks (CLS first)


@dataclass(frozen=True)
class IDEncoderConfig:
    embedding_dim: int = ARCFACE_DIM + EVA_CLS_DIM  # the ID features: ArcFace ; EVA CLS
    vit_dim: int = 1024  # width of EVA02-CLIP-L's hidden states
    hidden_dim: int = 1024
    context_dim: int = 2048  # SDXL's cross-attention width
    num_tokens: int = 5

    @classmethod
    def tiny(cls, context_dim: int = 64) -> "IDEncoderConfig":
        return cls(vit_dim=32, hidden_dim=48, context_dim=context_dim, num_tokens=5)

    def to_dict(self) -> dict:
        return asdict(self)


def mapping_mlp(dim_in: int, hidden_1: int, hidden_2: int, dim_out: int, ops) -> nn.Sequential:
    """PuLID's MLP: Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear."""
    return nn.Sequential(ops.Linear(dim_in, hidden_1), ops.LayerNorm(hidden_1), nn.LeakyReLU(),
                         ops.Linear(hidden_1, hidden_2), ops.LayerNorm(hidden_2), nn.LeakyReLU(),
                         ops.Linear(hidden_2, dim_out))


def check_features(id_features: torch.Tensor, hidden_states, id_dim: int, vit_dim: int) -> None:
    """(B, id_dim) or (B, N, id_dim) ID features and ``EVA_LAYERS`` hidden states (B, tokens, vit_dim)."""
    if id_features.ndim not in (2, 3) or id_features.shape[-1] != id_dim or 0 in id_features.shape:
        raise InvalidInputError(f"PuLID's ID features must be (batch, {id_dim}) (ArcFace 512 + EVA CLS 768), got "
                                f"{list(id_features.shape)}", "feed ArcFace embeddings and the EVA-CLIP tower's CLS")
    if len(hidden_states) != EVA_LAYERS:
        raise InvalidInputError(f"PuLID reads {EVA_LAYERS} EVA-CLIP hidden states, got {len(hidden_states)}",
                                "feed the five hidden states the EVA-CLIP tower returns for PuLID")
    for h in hidden_states:
        if h.ndim != 3 or h.shape[0] != id_features.shape[0] or h.shape[2] != vit_dim or h.shape[1] < 2:
            raise InvalidInputError(f"EVA-CLIP hidden states must be (batch {id_features.shape[0]}, CLS + patches, "
                                    f"{vit_dim}), got {list(h.shape)}", "use the EVA02-CLIP-L-14-336 tower's output")


class IDEncoder(nn.Module):
    """``operations`` supplies ``Linear`` and ``LayerNorm`` (default torch.nn; ComfyUI: ``comfy.ops``);
    ``compute_dtype``: what the features are cast to (default: the weights' dtype)."""

    def __init__(self, config: IDEncoderConfig = IDEncoderConfig(), operations=None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = resolve_operations(operations)
        self.config = cfg = config
        self.compute_dtype = compute_dtype
        out = cfg.context_dim * cfg.num_tokens
        self.body = mapping_mlp(cfg.embedding_dim, min(out // 4, 1024), min(out // 2, 1024), out, ops)
        for i in range(EVA_LAYERS):
            for kind in ("mapping", "mapping_patch"):
                setattr(self, f"{kind}_{i}", mapping_mlp(cfg.vit_dim, cfg.hidden_dim, cfg.hidden_dim,
                                                        cfg.context_dim, ops))

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.body[0].weight.dtype

    def forward(self, id_features: torch.Tensor, hidden_states) -> torch.Tensor:
        """(B, 1280) ID features and 5 hidden states (B, 1 + patches, 1024) -> (B, 10, context_dim) tokens."""
        check_features(id_features, hidden_states, self.config.embedding_dim, self.config.vit_dim)
        if id_features.ndim != 2:
            raise InvalidInputError("PuLID v1 encodes one image per sample", "average the tokens of several images")
        cfg = self.config
        tokens = [self.body(id_features.to(self.dtype)).reshape(-1, cfg.num_tokens, cfg.context_dim)]
        for i, h in enumerate(hidden_states):
            h = h.to(self.dtype)
            patches = getattr(self, f"mapping_patch_{i}")(h[:, 1:]).mean(dim=1, keepdim=True)
            tokens.append(getattr(self, f"mapping_{i}")(h[:, :1]) + patches)
        return torch.cat(tokens, dim=1)
