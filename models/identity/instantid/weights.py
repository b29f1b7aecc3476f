"""InstantID's ``ip-adapter.bin``: the Resampler (``image_proj``) and the IP-attention layers (``ip_adapter``).

Accepted files:
- the published ``ip-adapter.bin``: a torch pickle holding ``{"image_proj": {...}, "ip_adapter": {...}}``, read
  with ``torch.load(weights_only=True)``: a pickle that would run code is refused, and nothing in it runs;
- a ``.safetensors`` conversion whose tensor names carry the ``image_proj.`` / ``ip_adapter.`` prefixes.

Every tensor name and shape is checked before a model is built; errors name the tensor. IP-Adapter files for
other bases (SD1.5's 768-wide, SD2's 1024-wide cross-attention) and IP-Adapters for CLIP image features are
recognised and named.

The layout is InstantID's published one (SDXL). A ``.safetensors`` file may carry another in its metadata, as the
pack's diffusers ControlNet files do: ``resampler_config`` (the ``ResamplerConfig`` fields) and ``unet_config`` (the
UNet fields ``unet_sites`` reads), both JSON. The tests' tiny files use this; published files have neither.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ...common.file_checks import Interrupt, check_parameter_budget, declared_parameters, parse_config, poll
from ...common.safetensors_files import check_shapes, check_values, read_header, read_tensors
from ...common.torch_pickle import read_torch_weights
from ...errors import InvalidInputError, ModelFileError
from ..identity import INSTANTID_RESAMPLER, Identity, legacy_weights_key, weights_key
from ..ip_attention import IPAttentionLayers, ip_layer_parameters
from ..unet_sites import SDXL_UNET_CONFIG, checked_unet_config, context_base, ip_adapter_layer_sites
from .resampler import Resampler, ResamplerConfig, checked_resampler_config, resampler_parameters

PARTS = ("image_proj", "ip_adapter")
FILE_FIX = "download ip-adapter.bin from InstantX/InstantID (Hugging Face) into ComfyUI/models/instantid"
INSTANTID_LAYOUT = ResamplerConfig.instantid()
PULID_PREFIXES = ("id_adapter.", "id_adapter_attn_layers.", "image_proj.body.", "image_proj.id_embedding_mapping.")


class InstantIDAdapter(nn.Module):
    """The two parts of ``ip-adapter.bin``; its state dict names are the file's (``image_proj.latents``,
    ``ip_adapter.1.to_k_ip.weight``, ...). ``operations``: layer classes (default torch.nn; ComfyUI: comfy.ops);
    ``compute_dtype``: what both parts compute in when their layers cast stored weights (see ``Resampler``)."""

    def __init__(self, config: ResamplerConfig = INSTANTID_LAYOUT, unet_config: dict = SDXL_UNET_CONFIG,
                 operations=None, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.config, self.unet_config = config, unet_config
        self.image_proj = Resampler(config, operations, compute_dtype)
        self.ip_adapter = IPAttentionLayers(ip_adapter_layer_sites(unet_config), config.output_dim, operations,
                                            compute_dtype)
        self.weights_key = ""  # weights_key of the Resampler's file tensors (set by build_instantid)
        self.legacy_weights_key = ""  # the key identities saved by earlier versions carry

    def encode_identity(self, embeddings: torch.Tensor, uncond_noise: float = 0.0, seed: int = 0,
                        device: torch.device | None = None) -> Identity:
        """``resampler_identity`` with this file's Resampler and weights key."""
        return resampler_identity(self.image_proj, embeddings, uncond_noise, seed, device, self.weights_key)


@torch.no_grad()
def resampler_identity(resampler: Resampler, embeddings: torch.Tensor, uncond_noise: float = 0.0, seed: int = 0,
                       device: torch.device | None = None, weights_key: str = "") -> Identity:
    """One identity from the ArcFace embeddings (N, 512) of one person's photos through InstantID's Resampler.

    ``embeddings`` are insightface's ``Face.embedding``, which InstantID's pipeline and cubiq's node both feed
    unnormalised (not ``normed_embedding``). The N embeddings are averaged first (as cubiq's ComfyUI_InstantID does;
    InstantID's own pipeline would feed them as N key tokens). The negative tokens are the Resampler of zeros, as
    InstantID's pipeline does, plus ``uncond_noise`` x uniform noise when > 0 (cubiq's ``noise`` option), from a fixed
    ``seed``. ``device``: where the Resampler runs (default: where its ``latents`` are; ComfyUI's partial load streams
    the layers and leaves that raw parameter offloaded)."""
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise InvalidInputError(f"expected (references, 512) ArcFace embeddings, got {list(embeddings.shape)}",
                                "connect at least one face with an ArcFace embedding")
    mean = embeddings.to(torch.float32).mean(dim=0)
    negative = torch.zeros_like(mean)
    if uncond_noise > 0:
        negative = uncond_noise * torch.rand(mean.shape, generator=torch.Generator().manual_seed(seed))
    inputs = torch.stack([mean, negative])[:, None].to(device or resampler.latents.device)
    cond, uncond = resampler(inputs).chunk(2)
    return Identity(cond=cond, uncond=uncond, encoder=INSTANTID_RESAMPLER, weights_key=weights_key,
                    num_references=embeddings.shape[0], id_embedding=mean)


def _describe_foreign(shapes: dict[str, tuple], name: str, expected: dict[str, tuple]) -> None:
    """Name the kind of file when it is not InstantID's: PuLID's, a ControlNet, another base, a CLIP IP-Adapter."""
    if any(k.startswith(PULID_PREFIXES) for k in shapes):
        raise ModelFileError(f"{name} holds PuLID's identity encoder, not InstantID's Resampler",
                             "put PuLID files in ComfyUI/models/pulid; " + FILE_FIX)
    if not any(k.split(".", 1)[0] in PARTS for k in shapes):
        if any(k.startswith("controlnet_cond_embedding.") for k in shapes):
            raise ModelFileError(f"{name} is a ControlNet (InstantID's IdentityNet?), not the ip-adapter file",
                                 "put ControlNets in ComfyUI/models/controlnet; " + FILE_FIX)
        example = next(iter(shapes), "nothing")
        raise ModelFileError(f"{name} has no image_proj / ip_adapter tensors (it holds e.g. {example!r}); it is not "
                             "an InstantID ip-adapter file", FILE_FIX)
    stray = next((k for k in shapes if k.split(".", 1)[0] not in PARTS), None)
    if stray is not None:
        raise ModelFileError(f"{name} has tensor {stray!r} outside the image_proj. / ip_adapter. prefixes", FILE_FIX)
    want = expected["ip_adapter.1.to_k_ip.weight"][1]
    k_ip = shapes.get("ip_adapter.1.to_k_ip.weight")
    if k_ip is not None and len(k_ip) == 2 and k_ip[1] != want:
        layers = sum(k.endswith(".to_k_ip.weight") for k in shapes)
        raise ModelFileError(
            f"{name} is an IP-Adapter for {context_base(k_ip[1])} (tensor 'ip_adapter.1.to_k_ip.weight' is "
            f"{list(k_ip)}, {layers} layers); InstantID needs {context_base(want)} ({want}-wide cross-attention)",
            "use InstantID's SDXL ip-adapter.bin with an SDXL checkpoint")
    if not any(k.startswith("image_proj.") for k in shapes):
        raise ModelFileError(f"{name} has no image_proj tensors (InstantID's Resampler): the file is incomplete",
                             FILE_FIX)
    proj_in = shapes.get("image_proj.proj_in.weight")
    want_in = expected["image_proj.proj_in.weight"]
    not_arcface = f"not InstantID's: its image_proj is not a Resampler of {want_in[1]}-d ArcFace embeddings"
    if proj_in is not None and tuple(proj_in) != tuple(want_in):
        raise ModelFileError(f"{name} is an IP-Adapter for CLIP image features, {not_arcface} (tensor "
                             f"'image_proj.proj_in.weight' is {list(proj_in)}, expected {list(want_in)})", FILE_FIX)
    if proj_in is None and "image_proj.latents" not in shapes:
        what = "CLIP image embeddings" if "image_proj.proj.weight" in shapes else "another face or image encoder"
        raise ModelFileError(f"{name} is an IP-Adapter for {what}, {not_arcface} (it has no "
                             "'image_proj.latents' / 'image_proj.proj_in.weight')", FILE_FIX)


def check_instantid_shapes(shapes: dict[str, tuple], name: str, expected: dict[str, tuple]) -> None:
    """Every expected tensor present with its shape, nothing else; errors name the tensor."""
    _describe_foreign(shapes, name, expected)
    check_shapes(shapes, expected, name, "InstantID's ip-adapter", FILE_FIX)


def read_instantid_tensors(path: str, expected: dict[str, tuple],
                           interrupt: Interrupt = None) -> dict[str, torch.Tensor]:
    """The file's tensors under ``image_proj.*`` / ``ip_adapter.*`` names, checked against ``expected`` shapes and
    for NaN or infinite values. ``interrupt`` is polled between tensors."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"InstantID weights not found: {path}", FILE_FIX)
    if path.lower().endswith(".safetensors"):
        shapes, _ = read_header(path)
        check_instantid_shapes(shapes, name, expected)  # before reading any data
        tensors = read_tensors(path, interrupt)
    else:
        tensors = read_torch_weights(path, FILE_FIX, PARTS)
        poll(interrupt)
        check_instantid_shapes({k: tuple(v.shape) for k, v in tensors.items()}, name, expected)
    check_values(tensors, name, FILE_FIX, interrupt)
    return tensors


def file_layout(path: str) -> tuple[ResamplerConfig, dict]:
    """(Resampler config, UNet config) of a weights file: InstantID's published SDXL layout unless a
    ``.safetensors`` file names another in its metadata. A named layout is checked field by field and against the
    parameters the file holds before anything is built from it."""
    if not path.lower().endswith(".safetensors"):
        return ResamplerConfig.instantid(), dict(SDXL_UNET_CONFIG)
    shapes, metadata = read_header(path)
    name = os.path.basename(path)
    fields = parse_config(metadata.get("resampler_config", "{}"), "its resampler_config metadata", name, FILE_FIX)
    config = checked_resampler_config(fields, name, FILE_FIX)
    unet = dict(SDXL_UNET_CONFIG)
    if "unet_config" in metadata:
        unet = checked_unet_config(parse_config(metadata["unet_config"], "its unet_config metadata", name, FILE_FIX),
                                   name, FILE_FIX)
    if "resampler_config" in metadata or "unet_config" in metadata:
        implied = resampler_parameters(config) + ip_layer_parameters(unet, config.output_dim)
        check_parameter_budget(implied, declared_parameters(shapes), "the layout in its metadata", name, FILE_FIX)
    return config, unet


def build_instantid(tensors: dict[str, torch.Tensor], config: ResamplerConfig, unet_config: dict,
                    operations=None, dtype: torch.dtype | None = None) -> InstantIDAdapter:
    """The adapter built on the meta device from ``operations`` and filled with ``tensors`` (read and checked by
    ``read_instantid_tensors``), stored in ``dtype`` (default: the file's)."""
    with torch.device("meta"):
        adapter = InstantIDAdapter(config, unet_config, operations)
    adapter.load_state_dict({k: v if dtype is None else v.to(dtype) for k, v in tensors.items()}, assign=True)
    resampler = {k: v for k, v in tensors.items() if k.startswith("image_proj.")}
    adapter.weights_key, adapter.legacy_weights_key = weights_key(resampler), legacy_weights_key(resampler)
    return adapter.eval()


def expected_shapes(config: ResamplerConfig, unet_config: dict) -> dict[str, tuple]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in InstantIDAdapter(config, unet_config).state_dict().items()}


def load_instantid(path: str, operations=None, config: ResamplerConfig | None = None,
                   unet_config: dict | None = None, dtype: torch.dtype | None = None) -> InstantIDAdapter:
    """Read, check and build in one step. ``config`` / ``unet_config`` default to the file's layout
    (``file_layout``)."""
    if config is None or unet_config is None:
        file_config, file_unet = file_layout(path)
        config, unet_config = config or file_config, unet_config or file_unet
    tensors = read_instantid_tensors(path, expected_shapes(config, unet_config))
    return build_instantid(tensors, config, unet_config, operations, dtype)
