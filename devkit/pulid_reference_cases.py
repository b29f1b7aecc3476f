"""The seeded cases behind ``tests/fixtures/pulid_reference.safetensors``: ``scripts/reference_pulid.py`` runs them
through the official code, the tests through the pack's modules. Both build the same full-size weights and inputs
from here (``seeded_weights``), so only small samples of the outputs are stored.

Weights: the encoders under the official file's names (``id_adapter.*``), the ID attention of module ``LAYER``
(``id_adapter_attn_layers.{LAYER}.id_to_k.weight`` / ``id_to_v``) and that UNet cross-attention's own projections
(``attn2.to_q``, ``to_k``, ``to_v``, ``to_out.0``), each from its seed in ``WEIGHT_SEEDS``.
Inputs (``INPUT_SEED`` + offset): ArcFace embeddings N(0, 1) (norm ~22, like insightface's raw ``embedding``), EVA CLS
N(0, 1) (normalised by the pipeline), EVA hidden states N(0, 1) (N, 577, 1024); for the attention call the layer's
input (2, 64, 1280) (an 8 x 8 latent grid), the text context (2, 77, 2048), identity tokens N(0, 1) for v1 (2, 10,
2048) and v1.1 (2, 32, 2048), batch row 0 the negative (uncond) and row 1 the positive, as in the official pipeline,
and a mask (1, 64, 64) uniform in [0, 1).
"""

from __future__ import annotations

import torch

from .seeded_weights import seeded_normal, seeded_state

WEIGHT_SEEDS = {"v1": 20_001, "v1.1": 20_011, "attention": 20_021}
INPUT_SEED = 20_101
LAYER = 63  # 1280 wide: diffusers up_blocks.0.attentions.0.transformer_blocks.7.attn2, ComfyUI ("output", 0, 7)
NEIGHBOUR_LAYER = 65  # the next cross-attention, same width: a wrong layer mapping would read it
CHANNELS, HEADS, CONTEXT = 1280, 20, 2048
GRID = (8, 8)
TEXT_TOKENS = 77
EVA_TOKENS = 577  # CLS + 24 x 24 patches at 336 px
ID_SCALE = 0.8  # the official demos' default id_scale
TOKEN_STRIDE = {"v1": 16, "v1.1": 32}  # stored: every n-th channel of each token
ATTENTION_ROWS, ATTENTION_STRIDE = 4, 16  # stored: every 4th query position, every 16th channel

# (fixture name, projection, num_zero, token set): the official demos' settings and their neighbours
OFFICIAL_MODES = [("official_none_0", "none", 0, "v1"), ("official_ortho_v2_8", "ortho_v2", 8, "v1"),
                  ("official_ortho_16", "ortho", 16, "v1"), ("official_ortho_v2_20_v1_1", "ortho_v2", 20, "v1.1")]
# cubiq's methods (fidelity: 8 zeros + ortho_v2, style: 16 + ortho, neutral: 0), one with a mask; EcomID's fidelity
CUBIQ_MODES = [("cubiq_fidelity", "ortho_v2", 8, False), ("cubiq_style", "ortho", 16, False),
               ("cubiq_neutral", "none", 0, False), ("cubiq_fidelity_mask", "ortho_v2", 8, True)]
ECOMID_MODES = [("ecomid_fidelity", "ortho_v2", 8, False)]


def encoder_inputs(images: int, offset: int = 0):
    """(ArcFace (N, 512), EVA CLS (N, 768), 5 EVA hidden states (N, 577, 1024)) for N ``images``."""
    seed = INPUT_SEED + 100 * offset
    arcface = seeded_normal((images, 512), seed)
    eva_cls = seeded_normal((images, 768), seed + 1)
    hidden = [seeded_normal((images, EVA_TOKENS, 1024), seed + 2 + i) for i in range(5)]
    return arcface, eva_cls, hidden


def attention_inputs() -> dict[str, torch.Tensor]:
    seed = INPUT_SEED + 1000
    return {"hidden": seeded_normal((2, GRID[0] * GRID[1], CHANNELS), seed),
            "text": seeded_normal((2, TEXT_TOKENS, CONTEXT), seed + 1),
            "v1": seeded_normal((2, 10, CONTEXT), seed + 2), "v1.1": seeded_normal((2, 32, CONTEXT), seed + 3),
            "mask": torch.rand((1, 64, 64), generator=torch.Generator().manual_seed(seed + 4))}


def cross_attention_weights() -> dict[str, torch.Tensor]:
    """The UNet cross-attention's own weights (diffusers' ``Attention`` names under ``attn2.``)."""
    shapes = {"attn2.to_q.weight": (CHANNELS, CHANNELS), "attn2.to_k.weight": (CHANNELS, CONTEXT),
              "attn2.to_v.weight": (CHANNELS, CONTEXT), "attn2.to_out.0.weight": (CHANNELS, CHANNELS),
              "attn2.to_out.0.bias": (CHANNELS,)}
    return seeded_state(shapes, WEIGHT_SEEDS["attention"])


def id_layer_weights(layer: int = LAYER) -> dict[str, torch.Tensor]:
    """``id_to_k`` / ``id_to_v`` of module ``layer`` under the official names."""
    shapes = {f"id_adapter_attn_layers.{layer}.id_to_{kv}.weight": (CHANNELS, CONTEXT) for kv in "kv"}
    return seeded_state(shapes, WEIGHT_SEEDS["attention"])


def sample_tokens(tokens: torch.Tensor, version: str) -> torch.Tensor:
    return tokens[..., ::TOKEN_STRIDE[version]].contiguous()


def sample_attention(out: torch.Tensor) -> torch.Tensor:
    return out[:, ::ATTENTION_ROWS, ::ATTENTION_STRIDE].contiguous()
