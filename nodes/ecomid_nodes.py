"""EcomID in FaceSnap's graph: load its three files, encode a person, apply (PuLID v1's ID attention on the MODEL +
EcomID's IdentityNet on the conditioning). Thin adapters over ``comfy_glue/methods/ecomid.py``."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..comfy_glue.controlnet_files import controlnet_files, controlnet_location
from ..comfy_glue.methods import ecomid as glue
from ..comfy_glue.methods.pulid import AttentionMode
from ..models.identity.ecomid.recipe import EcomIDSettings
from ..models.identity.pulid.adapter import V1
from ..models.identity.pulid.id_attention import METHODS
from ..models.identity.pulid.weights import FILE_FIX as PULID_FIX
from .apply_inputs import apply_method, apply_outputs, control_apply_inputs, mask_input, window_inputs
from .errors import reports_errors
from .loader_inputs import dtype_input, other_weights_input
from .model_cache import LoadedModels
from .model_paths import resolve_model_file
from .pulid_nodes import encode_faces, feature_inputs
from .socket_types import EcomID, Identity

CATEGORY = "FaceSnap/EcomID"
_LOADED = LoadedModels("ecomid")
DEFAULTS = EcomIDSettings()
SIMPLE_NOISE = 0.35  # EcomID's simple node: its function's default noise (it has no noise input)


def mode(name: str, zero_noise: float) -> AttentionMode:
    return AttentionMode.preset(name, V1, DEFAULTS.share, zero_noise)


class FaceSnapEcomIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapEcomIDLoader",
            display_name="FaceSnap EcomID Loader",
            category=CATEGORY,
            description="Loads EcomID (alimama-creative/SDXL-EcomID): InstantID's ip-adapter.bin (only its "
                        "Resampler, whose 16 ArcFace tokens EcomID's IdentityNet reads), PuLID v1 for SDXL (its ID "
                        "attention acts on the UNet) and EcomID's IdentityNet, a diffusers SDXL ControlNet. Files "
                        "are read without running any code in them; every tensor's name and shape is checked.",
            inputs=[io.Combo.Input("instantid_file", options=folder_paths.get_filename_list("instantid"),
                                   tooltip="InstantID's ip-adapter.bin in ComfyUI/models/instantid."),
                    io.Combo.Input("pulid_file", options=folder_paths.get_filename_list("pulid"),
                                   tooltip="PuLID v1 for SDXL in ComfyUI/models/pulid: "
                                           "ip-adapter_pulid_sdxl_fp16.safetensors (as EcomID's README) or "
                                           "pulid_v1.bin. EcomID was trained with v1; v1.1 is refused."),
                    io.Combo.Input("controlnet_name", options=folder_paths.get_filename_list("controlnet"),
                                   tooltip="EcomID's IdentityNet in ComfyUI/models/controlnet: SDXL-EcomID's "
                                           "diffusion_pytorch_model.safetensors (5 GB, float32), renamed or in a "
                                           "folder."),
                    dtype_input("the Resampler, IdentityNet and PuLID's layers")],
            outputs=[EcomID.Output(display_name="ecomid")],
        )

    @classmethod
    @reports_errors
    def execute(cls, instantid_file: str, pulid_file: str, controlnet_name: str, dtype: str = "auto") -> io.NodeOutput:
        ip_path = resolve_model_file("instantid_file", "instantid", instantid_file,
                                     "InstantID's ip-adapter.bin from InstantX/InstantID on Hugging Face")
        pulid_path = resolve_model_file("pulid_file", "pulid", pulid_file, PULID_FIX)
        cn_path = resolve_model_file("controlnet_name", "controlnet", controlnet_name,
                                     "diffusion_pytorch_model.safetensors from alimama-creative/SDXL-EcomID on "
                                     "Hugging Face")
        files = [ip_path, pulid_path, *controlnet_files(controlnet_location(cn_path))]
        return io.NodeOutput(_LOADED.get(dtype, files, lambda: glue.load(
            instantid=ip_path, pulid=pulid_path, controlnet=cn_path, name=controlnet_name, dtype=dtype)))


class FaceSnapEcomIDEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapEcomIDEncode",
            display_name="FaceSnap EcomID Encode",
            category=CATEGORY,
            description="One person's identity for EcomID, both token sets in one identity: InstantID's Resampler of "
                        "the ArcFace embedding (16 tokens, for IdentityNet) and PuLID v1's tokens of ArcFace and "
                        "EVA-CLIP (10, for the UNet), the photos averaged. Save, Load and Blend Identity take it.",
            inputs=[EcomID.Input("ecomid", tooltip="From FaceSnap EcomID Loader."), *feature_inputs(),
                    io.Float.Input("uncond_noise", default=SIMPLE_NOISE, min=0.0, max=1.0, step=0.01,
                                   tooltip="Both negatives are encoded from uniform noise of this amplitude (fixed "
                                           "seed) instead of zeros: 0.35 is EcomID's simple node's, 0 its Advanced "
                                           "node's default.")],
            outputs=[Identity.Output(display_name="identity")],
        )

    @classmethod
    @reports_errors
    def execute(cls, ecomid, eva_clip, face_parser, faces, uncond_noise: float) -> io.NodeOutput:
        return encode_faces(glue, ecomid, eva_clip, face_parser, faces, uncond_noise)


def _apply_inputs() -> list:
    loader = EcomID.Input("ecomid", tooltip="From FaceSnap EcomID Loader.")
    return [*control_apply_inputs("PuLID v1's ID attention", loader, "FaceSnap EcomID Encode"),
            io.Combo.Input("method", options=list(METHODS), default=DEFAULTS.method,
                           tooltip="PuLID's attention as EcomID's node sets it: fidelity (8 zero tokens, ortho_v2), "
                                   "style (16, ortho) or neutral (none).")]


class FaceSnapApplyEcomID(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyEcomID",
            display_name="FaceSnap Apply EcomID",
            category=CATEGORY,
            description="EcomID: PuLID v1's ID attention on all 70 cross-attentions of a copy of the MODEL and "
                        "EcomID's IdentityNet, reading InstantID's tokens, following the keypoint image. As EcomID's "
                        "simple node: one weight for both, 0.35 noise in the zero tokens. Stacks with a second "
                        "identity, stock ControlNets and other packs' attention patches.",
            inputs=[*_apply_inputs(),
                    io.Float.Input("weight", default=1.0, min=0.0, max=5.0, step=0.01,
                                   tooltip="ID attention weight and IdentityNet strength together (EcomID's simple "
                                           "node: 1.0; its examples use 0.3 to 0.5 attention with 0.8 IdentityNet "
                                           "through the Advanced node)."),
                    *window_inputs("EcomID"), mask_input()],
            outputs=apply_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, model, positive, negative, ecomid, identity, keypoints_image, method, weight, start_percent,
                end_percent, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*apply_method(
            glue, "FaceSnapApplyEcomID", ecomid, identity, keypoints_image=keypoints_image, model=model,
            positive=positive, negative=negative, attention_weight=weight, strength=weight,
            attention_mode=mode(method, SIMPLE_NOISE), start=start_percent, end=end_percent, mask=mask))


class FaceSnapApplyEcomIDAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyEcomIDAdvanced",
            display_name="FaceSnap Apply EcomID (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply EcomID with separate ID attention weight and IdentityNet strength (EcomID's "
                        "Advanced defaults: 0.8 and 0.8), the zero tokens' noise, and IdentityNet on the positive "
                        "only.",
            inputs=[*_apply_inputs(),
                    io.Float.Input("ip_weight", default=DEFAULTS.ip_weight, min=0.0, max=5.0, step=0.01,
                                   tooltip="Weight of PuLID's ID attention (0 = off)."),
                    io.Float.Input("cn_strength", default=DEFAULTS.cn_strength, min=0.0, max=10.0, step=0.01,
                                   tooltip="Strength of IdentityNet (0 = off)."),
                    io.Float.Input("zero_token_noise", default=DEFAULTS.noise, min=0.0, max=1.0, step=0.01,
                                   tooltip="0: the zero tokens are zeros. Above 0: uniform noise of this amplitude "
                                           "(EcomID's noise; its negative-input part is EcomID Encode's "
                                           "uncond_noise)."),
                    *window_inputs("EcomID"),
                    io.Boolean.Input("positive_only", default=False,
                                     tooltip="Run IdentityNet on the positive only: about half its cost per step."),
                    other_weights_input("set of EcomID files"), mask_input()],
            outputs=apply_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, model, positive, negative, ecomid, identity, keypoints_image, method, ip_weight, cn_strength,
                zero_token_noise, start_percent, end_percent, positive_only=False, allow_other_weights=False,
                mask=None) -> io.NodeOutput:
        return io.NodeOutput(*apply_method(
            glue, "FaceSnapApplyEcomIDAdvanced", ecomid, identity, keypoints_image=keypoints_image, model=model,
            positive=positive, negative=negative, attention_weight=ip_weight, strength=cn_strength,
            attention_mode=mode(method, zero_token_noise), start=start_percent, end=end_percent, mask=mask,
            positive_only=positive_only, allow_other_weights=allow_other_weights))


NODES = [FaceSnapEcomIDLoader, FaceSnapEcomIDEncode, FaceSnapApplyEcomID, FaceSnapApplyEcomIDAdvanced]
