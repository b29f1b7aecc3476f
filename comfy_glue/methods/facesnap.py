"""FaceSnap in ComfyUI: the FACESNAP_MODEL payload (the Facial Attribute Mixer and FFRNet with the ID-Injector heads
inside it, each built from ComfyUI's operations and managed by ComfyUI) and the identity-method interface
(``comfy_glue/identity_methods.py``): encode reference faces into an identity, apply it with FFRNet, its weights key.

The mixer's inputs are computed here too, with ComfyUI's own CLIP-vision code exactly as the stock CLIPVisionEncode
node does (``clip_tokens``), for the nodes and for training.
"""

from __future__ import annotations

import uuid
import weakref

import torch

import comfy.model_management

from ...models.errors import InvalidInputError, ModelFileError
from ...models.face_analysis.record import FaceSet
from ...models.identity.facesnap.attribute_mixer import FacialAttributeMixer
from ...models.identity.facesnap.checkpoint import load_facesnap
from ...models.identity.facesnap.face_features import FaceFeatures
from ...models.identity.facesnap.ffrnet import FFRNet
from ...models.identity.identity import Identity, legacy_weights_key
from ...models.identity.identity import weights_key as file_weights_key
from ...models.identity.reference_faces import arcface_embeddings, face_crop, reference_indices
from ..conditioning import apply_identity_control
from ..control import wrap_identity_model
from ..id_injector_patch import patch_model_with_injector
from ..identity_methods import FACESNAP, Applied, ApplyRequest, check_identity, check_window
from ..weight_dtypes import build_managed, choose_weight_dtypes, dtype_option, file_dtype, managed_patcher

_LEGACY_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class FaceSnapBundle:
    """The FACESNAP_MODEL payload: mixer + (optional) FFRNet, each managed by a ComfyUI ModelPatcher.

    ``pairing_key`` names the FaceSnap file: this file's ID-Injector heads act only on the controls of this file
    (``id_injector_patch.py``); without one the bundle gets a unique key. ``weights_key`` fingerprints the mixer's
    weights: the identities it makes carry it."""

    def __init__(self, mixer: FacialAttributeMixer, ffrnet: FFRNet | None, metadata: dict, name: str = "",
                 dtype: str = "auto", pairing_key: str | None = None):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(mixer, ffrnet))
        self.dtype = self.dtypes.compute
        self.weights_key = file_weights_key(mixer.state_dict())  # the file's mixer, whatever the storage dtype
        self.mixer = build_managed(lambda ops, compute: FacialAttributeMixer(mixer.config, ops, compute), mixer,
                                   self.dtypes)
        self.ffrnet = None
        if ffrnet is not None:
            self.ffrnet = build_managed(lambda ops, compute: FFRNet(ffrnet.config, ops, compute), ffrnet, self.dtypes)
        self.metadata = metadata
        self.name = name
        self.pairing_key = pairing_key or f"{name or 'facesnap'}#{uuid.uuid4().hex}"
        self.mixer_patcher = managed_patcher(self.mixer)
        self.control = None
        if self.ffrnet is not None:  # its ModelPatcher is the control's control_model_wrapped (get_models())
            self.control = wrap_identity_model(self.ffrnet, manual_cast_dtype=self.dtypes.manual_cast)
        if self.has_injector:
            self.control.pairing_key = self.pairing_key

    @property
    def has_injector(self) -> bool:
        return self.ffrnet is not None and self.ffrnet.id_injector is not None

    def require_ffrnet(self) -> None:
        if self.control is None:
            raise ModelFileError(f"the FaceSnap file {self.name!r} holds no FFRNet",
                                 "select the matching diffusers SDXL ControlNet in FaceSnap Model Loader")

    def inject(self, model_patcher, node_id: str = "DiffPCIDInjector"):
        """A clone of MODEL with this file's ID-Injector heads (``id_injector_patch.patch_model_with_injector``); the
        heads' network is loaded with the MODEL."""
        return patch_model_with_injector(model_patcher, self.ffrnet, self.pairing_key, node_id,
                                         ffrnet_patcher=self.control.control_model_wrapped)

    def run_mixer(self, *args) -> torch.Tensor:
        comfy.model_management.load_models_gpu([self.mixer_patcher])
        device = self.mixer_patcher.load_device
        with torch.no_grad():
            out = self.mixer(*[a.to(device, self.dtype) for a in args])
        return out.to(comfy.model_management.intermediate_device(), torch.float32)

    def uncond_tokens(self) -> torch.Tensor:
        """The negative's tokens: the mixer's output for zeroed features (training's feature dropout)."""
        c = self.mixer.config
        return self.run_mixer(torch.zeros(1, 1, c.id_dim), torch.zeros(1, 1, c.clip_tokens, c.clip_dim))


def load(*, weights: str, controlnet: str | None, name: str, dtype: str, pairing_key: str) -> FaceSnapBundle:
    """A FaceSnap file (and the diffusers ControlNet that holds its FFRNet, for files without their own) as a
    bundle."""
    dtype_option(dtype)  # refuse a bad option before reading the files
    mixer, ffrnet, metadata = load_facesnap(weights, controlnet,
                                            interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
    return FaceSnapBundle(mixer, ffrnet, metadata, name=name, dtype=dtype, pairing_key=pairing_key)


def clip_tokens(clip_vision, images: torch.Tensor) -> torch.Tensor:
    """CLIP-ViT-H/14's penultimate hidden states of ComfyUI IMAGEs (B, H, W, C), as the stock CLIPVisionEncode node
    computes them with crop="center": (B, 257, 1280) float32 on the CPU."""
    return clip_vision.encode_image(images, crop=True)["penultimate_hidden_states"].float().cpu()


def face_features(*, faces: FaceSet, clip_vision) -> FaceFeatures:
    """The mixer's inputs for one person's reference faces: ArcFace embeddings and the CLIP tokens of each crop."""
    ids = arcface_embeddings(faces)
    size = getattr(faces, "crop_size", 0) or getattr(clip_vision, "image_size", 224)
    crops = [torch.from_numpy(face_crop(faces, i, size)).float()[None] / 255.0 for i in reference_indices(faces)]
    return FaceFeatures(id_embeds=ids, clip_tokens=torch.cat([clip_tokens(clip_vision, c) for c in crops], dim=0))


def legacy_mixer_key(bundle: FaceSnapBundle) -> str:
    """The key identities of a bundle's mixer were saved with before the key ignored the dtype: of the mixer as held
    by ComfyUI (computed once per loaded bundle)."""
    if bundle not in _LEGACY_KEYS:
        _LEGACY_KEYS[bundle] = legacy_weights_key(bundle.mixer.state_dict())
    return _LEGACY_KEYS[bundle]


def weights_key(bundle: FaceSnapBundle) -> str:
    return bundle.weights_key


def encode_features(bundle: FaceSnapBundle, *, features: FaceFeatures) -> Identity:
    """FaceSnap Eq. 1-2 over all references of one person; the negative is the mixer's output for zeroed features."""
    return Identity(cond=bundle.run_mixer(*features.batched()), uncond=bundle.uncond_tokens(),
                    encoder=FACESNAP.encoder, weights_key=bundle.weights_key, num_references=len(features),
                    model_name=bundle.name)


def encode(bundle: FaceSnapBundle, *, faces: FaceSet, clip_vision=None) -> Identity:
    if clip_vision is None:
        raise InvalidInputError("FaceSnap's mixer reads CLIP-ViT-H/14 tokens of the faces",
                                "connect Load CLIP Vision (CLIP-ViT-H-14) to the encode node")
    return encode_features(bundle, features=face_features(faces=faces, clip_vision=clip_vision))


def apply(bundle: FaceSnapBundle, identity: Identity, *, request: ApplyRequest) -> Applied:
    """FFRNet with ``identity``'s tokens on the positive and the negative; the MODEL is passed through (the ID-Injector
    heads are put on it by ``FaceSnapBundle.inject``)."""
    request.refuse_unsupported(FACESNAP.label, "attention_weight", "attention_mode", "uncond_input_noise")
    bundle.require_ffrnet()
    check_window(request.start, request.end)
    check_identity(identity, method=FACESNAP, keys=(bundle.weights_key, legacy_mixer_key(bundle)),
                   file_name=bundle.name, width=bundle.ffrnet.config.cross_attention_dim,
                   target="this FaceSnap file's FFRNet", allow_other_weights=request.allow_other_weights)
    uncond = identity.uncond
    if request.uncond_token_noise > 0:
        noise = torch.randn(uncond.shape, generator=torch.Generator().manual_seed(0))
        uncond = uncond + request.uncond_token_noise * noise.to(uncond)
    positive, negative = apply_identity_control(
        request.positive, request.negative, bundle.control, cond_tokens=identity.cond, uncond_tokens=uncond,
        hint=request.control_image, strength=request.strength, start=request.start, end=request.end, mask=request.mask,
        uncond_strength=request.uncond_strength, positive_only=request.positive_only, node_id=request.node_id)
    return Applied(request.model, positive, negative)
