"""PuLID SDXL weight files, v1 and v1.1, in their two published layouts.

Accepted files (every tensor name and shape is checked before any model is built; errors name the tensor):
- the official ``pulid_v1.bin`` (a torch pickle, read with ``torch.load(weights_only=True)``: a pickle that would run
  code is refused and nothing in it runs) and ``pulid_v1.1.safetensors`` (guozinan/PuLID): ``id_adapter.*`` (the
  encoder) and ``id_adapter_attn_layers.{n}.id_to_k.weight`` / ``.id_to_v.weight``;
- the IP-Adapter-style conversions ``ip-adapter_pulid_sdxl_fp16.safetensors`` (huchenlei/ipadapter_pulid, read by
  cubiq's node) and ``ip-adapter_pulidv1.1_sdxl_fp16.safetensors`` (Runzy/ip-adapter_pulid): the same tensors
  renamed ``image_proj.*`` and ``ip_adapter.{n}.to_k_ip.weight`` / ``.to_v_ip.weight``, stored in float16.
The version follows from the encoder's tensors: ``body.*`` (v1 IDEncoder) or ``id_embedding_mapping.*`` (v1.1
IDFormer). Named refusals: InstantID's ip-adapter, other IP-Adapters (CLIP, FaceID), SD1.5/SD2 variants (768- or
1024-wide attention), PuLID for FLUX, ControlNets (EcomID's IdentityNet), EVA-CLIP files, truncated files and
weights holding NaN or infinity.

A ``.safetensors`` file may carry another layout in its metadata (the tests' tiny files): ``pulid_config`` (the
encoder config's fields) and ``unet_config`` (the UNet fields ``unet_sites`` reads), both JSON. Published files have
neither.
"""

from __future__ import annotations

import json
import os
import re

import torch

from ...common.safetensors_files import check_shapes, check_values, read_header, read_tensors
from ...common.torch_pickle import read_torch_weights
from ...errors import InvalidInputError, ModelFileError
from ..unet_sites import REQUIRED as UNET_FIELDS
from ..unet_sites import SDXL_UNET_CONFIG, context_base
from .adapter import CONFIGS, V1, V1_1, PuLIDAdapter, default_config

FILE_FIX = ("download pulid_v1.bin or pulid_v1.1.safetensors (guozinan/PuLID on Hugging Face), or the conversion "
            "ip-adapter_pulid_sdxl_fp16.safetensors (huchenlei/ipadapter_pulid), into ComfyUI/models/pulid")
PARTS = ("image_proj", "ip_adapter")
OFFICIAL_LAYER = re.compile(r"id_adapter_attn_layers\.(\d+)\.id_to_([kv])\.weight")
PACK_LAYER = re.compile(r"ip_adapter\.(\d+)\.to_([kv])_ip\.weight")
KIND = "PuLID's SDXL weights"


def pack_name(name: str) -> str | None:
    """A tensor name of either published layout -> the converted layout's name (``PuLIDAdapter``'s); None for names
    outside both layouts."""
    layer = OFFICIAL_LAYER.fullmatch(name)
    if layer:
        return f"ip_adapter.{layer.group(1)}.to_{layer.group(2)}_ip.weight"
    if name.startswith("id_adapter."):
        return "image_proj." + name[len("id_adapter."):]
    if name.startswith(("image_proj.", "ip_adapter.")):
        return name
    return None


def official_name(name: str) -> str:
    """``PuLIDAdapter``'s name -> the official file's (``pulid_v1.bin``, ``pulid_v1.1.safetensors``)."""
    layer = PACK_LAYER.fullmatch(name)
    if layer:
        return f"id_adapter_attn_layers.{layer.group(1)}.id_to_{layer.group(2)}.weight"
    return "id_adapter." + name[len("image_proj."):] if name.startswith("image_proj.") else name


def _refuse_other_files(shapes: dict[str, tuple], name: str) -> None:
    """Files that are not PuLID SDXL weights at all, named by what they hold."""
    if any(k.startswith(("pulid_encoder.", "pulid_ca.")) for k in shapes):
        raise ModelFileError(f"{name} is PuLID for FLUX (pulid_encoder / pulid_ca tensors); this loader reads "
                             "PuLID for SDXL", "use pulid_v1.bin or pulid_v1.1.safetensors with an SDXL checkpoint; "
                             + FILE_FIX)
    if any(k.startswith("controlnet_cond_embedding.") for k in shapes):
        raise ModelFileError(f"{name} is a ControlNet (EcomID's or InstantID's IdentityNet?), not PuLID's weights",
                             "put ControlNets in ComfyUI/models/controlnet; " + FILE_FIX)
    if any(k.startswith(("visual.", "text.", "logit_scale")) for k in shapes):
        raise ModelFileError(f"{name} is a CLIP / EVA-CLIP model, not PuLID's weights",
                             "load EVA02-CLIP-L-14-336 with the EVA-CLIP loader; " + FILE_FIX)
    unknown = next((k for k in shapes if pack_name(k) is None), None)
    layout = "PuLID's layout (id_adapter / id_adapter_attn_layers, or image_proj / ip_adapter)"
    if unknown is not None and any(pack_name(k) for k in shapes):
        raise ModelFileError(f"{name} has a tensor {unknown!r} outside {layout}", FILE_FIX)
    if unknown is not None or not shapes:
        raise ModelFileError(f"{name} has no tensors in {layout}; it holds e.g. {unknown!r}", FILE_FIX)


def _refuse_other_adapters(shapes: dict[str, tuple], name: str, own_layout: bool) -> None:
    """IP-Adapter-layout files that are not PuLID's: another base model's (unless the file declares its own layout),
    InstantID's, CLIP or FaceID adapters."""
    k_ip = shapes.get("ip_adapter.1.to_k_ip.weight")
    if k_ip is not None and len(k_ip) == 2 and k_ip[1] != 2048 and not own_layout:
        layers = sum(k.endswith(".to_k_ip.weight") for k in shapes)
        base = context_base(k_ip[1])
        raise ModelFileError(f"{name} is an adapter for {base} ({layers} attention layers, "
                             f"{k_ip[1]}-wide: tensor 'ip_adapter.1.to_k_ip.weight' is {list(k_ip)}); PuLID here "
                             "needs SDXL (2048-wide cross-attention)", "use PuLID's SDXL weights with an SDXL "
                             "checkpoint; " + FILE_FIX)
    if "image_proj.proj_in.weight" in shapes:
        latents = shapes.get("image_proj.latents")
        if latents is not None and tuple(latents) == (1, 16, 1280) and shapes["image_proj.proj_in.weight"][1] == 512:
            raise ModelFileError(f"{name} is InstantID's ip-adapter (a Resampler of ArcFace embeddings), not PuLID's",
                                 "put it in ComfyUI/models/instantid and load it with the InstantID loader; "
                                 + FILE_FIX)
        raise ModelFileError(f"{name} is an IP-Adapter Plus (a Resampler of image features), not PuLID's", FILE_FIX)
    if any(k.startswith("image_proj.perceiver_resampler.") or "_lora." in k for k in shapes):
        raise ModelFileError(f"{name} is an IP-Adapter FaceID, not PuLID's", FILE_FIX)
    if "image_proj.proj.weight" in shapes:
        raise ModelFileError(f"{name} is an IP-Adapter for CLIP image embeddings, not PuLID's", FILE_FIX)


def file_version(shapes: dict[str, tuple], name: str) -> str:
    """``V1`` or ``V1_1`` from a header's (or state dict's) tensor names in the converted layout."""
    if "image_proj.body.0.weight" in shapes:
        return V1
    if "image_proj.id_embedding_mapping.0.weight" in shapes:
        return V1_1
    if not any(k.startswith("image_proj.") for k in shapes):
        raise ModelFileError(f"{name} has only attention layers and no identity encoder (id_adapter / image_proj): "
                             "the file is incomplete", FILE_FIX)
    raise ModelFileError(f"{name} has no 'id_adapter.body.0.weight' (v1) nor 'id_adapter.id_embedding_mapping.0."
                         "weight' (v1.1): its encoder is not PuLID's, or the file is incomplete", FILE_FIX)


def identify(shapes: dict[str, tuple], name: str, own_layout: bool = False) -> str:
    """The version of a file from its names and shapes (either layout); refuses other files by name.
    ``own_layout``: the file's metadata declares its layout (tiny test files)."""
    _refuse_other_files(shapes, name)
    renamed = {pack_name(k): tuple(v) for k, v in shapes.items()}
    if len(renamed) != len(shapes):
        raise ModelFileError(f"{name} holds both the official and the converted names of some tensors", FILE_FIX)
    _refuse_other_adapters(renamed, name, own_layout)
    return file_version(renamed, name)


def file_layout(metadata: dict[str, str], version: str, name: str):
    """(encoder config, UNet config): the published ones unless the file's metadata names others."""
    try:
        fields = json.loads(metadata.get("pulid_config", "{}"))
        config = CONFIGS[version](**{**default_config(version).to_dict(), **fields})
        unet = json.loads(metadata["unet_config"]) if "unet_config" in metadata else dict(SDXL_UNET_CONFIG)
        numbers = list(config.to_dict().values())
        if not all(isinstance(v, int) and v > 0 for v in numbers) or not all(k in unet for k in UNET_FIELDS):
            raise ValueError("expected positive integers and the UNet fields " + ", ".join(UNET_FIELDS))
    except (ValueError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{name} has a corrupt layout in its metadata ({err})", FILE_FIX) from err
    return config, unet


def expected_shapes(version: str, config, unet_config: dict) -> dict[str, tuple]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in PuLIDAdapter(version, config, unet_config).state_dict().items()}


def check_pulid_file(path: str, shapes: dict[str, tuple] | None = None, metadata: dict | None = None):
    """-> (version, encoder config, UNet config) of a PuLID file, from its header alone (a ``.safetensors``) or
    from the ``shapes`` of a pickle already read; every name and shape checked, nothing built or allocated."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"PuLID weights not found: {path}", FILE_FIX)
    if shapes is None:
        shapes, metadata = read_header(path)
    metadata = metadata or {}
    version = identify(shapes, name, own_layout=bool({"pulid_config", "unet_config"} & set(metadata)))
    config, unet = file_layout(metadata, version, name)
    try:
        expected = expected_shapes(version, config, unet)
    except InvalidInputError as err:
        raise ModelFileError(f"{name} has a corrupt layout in its metadata ({err.message})", FILE_FIX) from err
    if any(k.startswith("id_adapter") for k in shapes):  # name tensors as the file does
        expected = {official_name(k): v for k, v in expected.items()}
    check_shapes(shapes, expected, name, KIND, FILE_FIX)
    return version, config, unet


def read_pulid(path: str):
    """-> (version, encoder config, UNet config, tensors under ``PuLIDAdapter``'s names), every name and shape
    checked before data is read (for a ``.bin``, before anything is built), and every value finite."""
    if path.lower().endswith(".safetensors") or not os.path.isfile(path):
        version, config, unet = check_pulid_file(path)
        tensors = read_tensors(path)
    else:
        tensors = read_torch_weights(path, FILE_FIX, PARTS)
        version, config, unet = check_pulid_file(path, {k: tuple(v.shape) for k, v in tensors.items()})
    check_values(tensors, os.path.basename(path), FILE_FIX)
    return version, config, unet, {pack_name(k): v for k, v in tensors.items()}


def build_pulid(version: str, config, unet_config: dict, tensors: dict[str, torch.Tensor], operations=None,
                dtype: torch.dtype | None = None, compute_dtype: torch.dtype | None = None) -> PuLIDAdapter:
    """The adapter built on the meta device from ``operations`` and filled with ``tensors`` (from ``read_pulid``),
    stored in ``dtype`` (default: the file's)."""
    with torch.device("meta"):
        adapter = PuLIDAdapter(version, config, unet_config, operations, compute_dtype)
    adapter.load_state_dict({k: v if dtype is None else v.to(dtype) for k, v in tensors.items()}, assign=True)
    adapter.weights_key = adapter.fingerprint()
    return adapter.eval()


def load_pulid(path: str, operations=None, dtype: torch.dtype | None = None,
               compute_dtype: torch.dtype | None = None) -> PuLIDAdapter:
    """Read, check and build in one step."""
    version, config, unet, tensors = read_pulid(path)
    return build_pulid(version, config, unet, tensors, operations, dtype, compute_dtype)
