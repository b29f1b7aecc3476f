"""An identity as data: the tokens one person's reference photos were encoded into, ready for a ControlNet and
the UNet's cross-attention, and portable without the photos or the face models.

An identity records which encoder made its tokens (``encoder``: the kind, ``weights_key``: which weights,
``model_name``: the file they came from), because tokens of two encoders live in different spaces: they may be blended
only when both match, and the apply nodes take only tokens of the weights they load (``weights_key``).

File format (``.safetensors``, no pickle): tensors ``cond`` and ``uncond`` (1, T, D) and optionally
``id_embedding`` (512,); metadata ``facesnap_identity`` (format version), ``encoder``, ``model_key`` (the weights key),
``num_references``, ``tokens``, ``width``, optionally ``model_name`` (files saved before it existed load without
it), plus free-form string entries.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace

import torch

from ..common.file_checks import check_finite
from ..common.safetensors_files import read_header, read_tensors
from ..errors import InvalidInputError, ModelFileError

FORMAT_VERSION = "1"
FACESNAP_MIXER = "facesnap-mixer"
INSTANTID_RESAMPLER = "instantid-resampler"
ARCFACE_DIM = 512
TENSORS = ("cond", "uncond")
OPTIONAL_TENSORS = ("id_embedding",)
RESERVED_METADATA = ("facesnap_identity", "encoder", "model_key", "model_name", "num_references", "tokens", "width")
LOAD_FIX = "pick a file written by FaceSnap Save Identity"


@dataclass(frozen=True, eq=False)
class Identity:
    """One person's identity tokens.

    cond / uncond: (1, T, D) tokens for the positive pass and the identity-free tokens for the negative pass.
    encoder: what made them (``FACESNAP_MIXER``, ``INSTANTID_RESAMPLER``, ...); weights_key: which weights of it
    (``weights_key``); model_name: the weights file's name, for messages ("" when not recorded). num_references: how
    many photos went in. id_embedding: for encoders fed by ArcFace (InstantID), the averaged embedding the tokens
    were made from, so that blends can be re-encoded in embedding space.
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    encoder: str
    weights_key: str = ""
    num_references: int = 1
    id_embedding: torch.Tensor | None = None
    model_name: str = ""

    def __post_init__(self):
        for name in TENSORS:
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != 1 or 0 in t.shape:
                shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InvalidInputError(f"identity {name} tokens must be (1, tokens, width), got {shape}",
                                        "build identities with an identity encoder node")
            if not t.is_floating_point():
                raise InvalidInputError(f"identity {name} tokens must be floating point, got {t.dtype}",
                                        "build identities with an identity encoder node")
        if self.cond.shape != self.uncond.shape:
            raise InvalidInputError(f"identity cond tokens {list(self.cond.shape)} and uncond tokens "
                                    f"{list(self.uncond.shape)} differ", "encode both with the same model")
        if not self.encoder or not isinstance(self.encoder, str):
            raise InvalidInputError("an identity needs the name of the encoder that made it",
                                    f"use e.g. {FACESNAP_MIXER!r} or {INSTANTID_RESAMPLER!r}")
        if not isinstance(self.weights_key, str) or not isinstance(self.model_name, str):
            raise InvalidInputError("an identity's weights_key and model_name must be text",
                                    "build identities with an identity encoder node")
        if not isinstance(self.num_references, int) or self.num_references < 1:
            raise InvalidInputError(f"an identity needs at least one reference, got {self.num_references!r}",
                                    "encode at least one reference photo")
        if self.id_embedding is not None and tuple(self.id_embedding.shape) != (ARCFACE_DIM,):
            raise InvalidInputError(f"identity id_embedding must be ({ARCFACE_DIM},), got "
                                    f"{list(self.id_embedding.shape)}", "pass the averaged ArcFace embedding")

    @property
    def num_tokens(self) -> int:
        return self.cond.shape[1]

    @property
    def width(self) -> int:
        return self.cond.shape[2]

    @property
    def source(self) -> str:
        return f"{self.encoder} [{self.weights_key}]" if self.weights_key else self.encoder

    @property
    def made_with(self) -> str:
        """The weights that made the tokens, for messages: the file's name when recorded, and the key."""
        key = f"weights key {self.weights_key}" if self.weights_key else "no weights key"
        return f"{self.model_name} ({key})" if self.model_name else f"a file whose name was not recorded ({key})"

    def describe(self) -> str:
        refs = "reference" if self.num_references == 1 else "references"
        return f"{self.source}: {self.num_tokens} x {self.width} tokens from {self.num_references} {refs}"


def _sampled(tensors: dict[str, torch.Tensor], samples: int, values_dtype: torch.dtype | None):
    """Per tensor in name order: (name, shape, dtype, a strided sample of its values as float32)."""
    for name in sorted(tensors):
        t = tensors[name].detach()
        flat = t.reshape(-1)
        step = max(1, flat.numel() // samples)
        sample = flat[::step][:samples].to(device="cpu", dtype=torch.float32)
        if values_dtype is not None:
            sample = sample.to(values_dtype).to(torch.float32)
        yield name, tuple(t.shape), t.dtype, sample


def weights_key(tensors: dict[str, torch.Tensor], samples: int = 256) -> str:
    """A short fingerprint of a model's weights: names, shapes and a strided sample of every tensor's values, taken at
    fp16 precision. It is the same for a file and its fp16 copy, and for any storage dtype the loader picks (keys are
    taken from the file's tensors); a bf16 or fp8 copy rounds differently and gets another key.

    It tells two weight files apart (two trainings differ almost everywhere) in milliseconds, without hashing
    gigabytes; it is not a cryptographic hash of the file."""
    digest = hashlib.sha256()
    for name, shape, _, sample in _sampled(tensors, samples, torch.float16):
        digest.update(f"{name}:{shape};".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def legacy_weights_key(tensors: dict[str, torch.Tensor], samples: int = 256) -> str:
    """The key identities were saved with before ``weights_key`` ignored the dtype (the dtype in the digest, values at
    full precision); apply nodes still accept it for the weights it was taken from."""
    digest = hashlib.sha256()
    for name, shape, dtype, sample in _sampled(tensors, samples, None):
        digest.update(f"{name}:{shape}:{dtype};".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def blend_identities(first: Identity, second: Identity, second_weight: float) -> Identity:
    """(1 - w) * first + w * second, token by token (and the ArcFace embeddings alike). Both must come from the
    same encoder and weights: tokens of different encoders are not in one space."""
    w = float(second_weight)
    if not 0.0 <= w <= 1.0:
        raise InvalidInputError(f"blend weight {w} is outside 0..1", "use 0 for the first identity, 1 for the second")
    if (first.encoder, first.weights_key) != (second.encoder, second.weights_key):
        raise InvalidInputError(
            f"cannot blend an identity from {first.source} with one from {second.source}: their tokens live in "
            "different spaces", "encode both people with the same model (the same loader and encoder node)")
    if first.cond.shape != second.cond.shape:
        raise InvalidInputError(f"cannot blend {list(first.cond.shape)} tokens with {list(second.cond.shape)} tokens",
                                "encode both people with the same model")
    second_cond, second_uncond = (t.to(first.cond) for t in (second.cond, second.uncond))
    embedding = None
    if first.id_embedding is not None and second.id_embedding is not None:
        embedding = torch.lerp(first.id_embedding, second.id_embedding.to(first.id_embedding), w)
    return replace(first, cond=torch.lerp(first.cond, second_cond, w),
                   uncond=torch.lerp(first.uncond, second_uncond, w),
                   num_references=first.num_references + second.num_references, id_embedding=embedding)


def save_identity(path: str, identity: Identity, extra_metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {"cond": identity.cond, "uncond": identity.uncond}
    if identity.id_embedding is not None:
        tensors["id_embedding"] = identity.id_embedding
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    metadata = {str(k): str(v) for k, v in (extra_metadata or {}).items() if k not in RESERVED_METADATA}
    metadata.update(facesnap_identity=FORMAT_VERSION, encoder=identity.encoder, model_key=identity.weights_key,
                    model_name=identity.model_name, num_references=str(identity.num_references),
                    tokens=str(identity.num_tokens), width=str(identity.width))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=metadata)


def load_identity(path: str) -> tuple[Identity, dict[str, str]]:
    """-> (identity, the free-form metadata). Every shape is checked against the metadata before any data is read."""
    name = os.path.basename(path)
    shapes, metadata = read_header(path)
    if metadata.get("facesnap_identity") != FORMAT_VERSION:
        found = (f"format {metadata['facesnap_identity']!r}" if "facesnap_identity" in metadata
                 else "no identity metadata")
        raise ModelFileError(f"{name} is not a FaceSnap identity file ({found}; {len(shapes)} tensors)", LOAD_FIX)
    try:
        tokens, width, refs = (int(metadata[k]) for k in ("tokens", "width", "num_references"))
        encoder = metadata["encoder"]
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{name} has incomplete identity metadata ({err})", LOAD_FIX) from err
    expected = {"cond": (1, tokens, width), "uncond": (1, tokens, width), "id_embedding": (ARCFACE_DIM,)}
    for tensor in TENSORS:
        if tensor not in shapes:
            raise ModelFileError(f"{name} has no {tensor!r} tensor", LOAD_FIX)
    for tensor, shape in shapes.items():
        if tensor not in expected:
            raise ModelFileError(f"{name} has an unexpected tensor {tensor!r}", LOAD_FIX)
        if shape != expected[tensor]:
            raise ModelFileError(f"tensor {tensor!r} in {name} has shape {list(shape)}, expected "
                                 f"{list(expected[tensor])} from its metadata", LOAD_FIX)
    data = read_tensors(path)
    for tensor, value in data.items():
        if not value.is_floating_point():
            raise ModelFileError(f"tensor {tensor!r} in {name} holds {value.dtype} values, not floating point",
                                 LOAD_FIX)
    check_finite(data, name, LOAD_FIX)
    try:
        identity = Identity(cond=data["cond"], uncond=data["uncond"], encoder=encoder,
                            weights_key=metadata.get("model_key", ""), num_references=refs,
                            id_embedding=data.get("id_embedding"), model_name=metadata.get("model_name", ""))
    except InvalidInputError as err:
        raise ModelFileError(f"{name} holds an invalid identity: {err.message}", LOAD_FIX) from err
    return identity, {k: v for k, v in metadata.items() if k not in RESERVED_METADATA}
