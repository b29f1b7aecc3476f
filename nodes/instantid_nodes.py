"""InstantID's public SDXL weights in FaceSnap's graph: load them, encode a person, apply (IP-attention on the MODEL +
IdentityNet on the conditioning). Its 5-keypoint image is drawn by FaceSnap Draw Keypoints (face_nodes.py)."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..comfy_glue.controlnet_files import controlnet_files, controlnet_location
from ..comfy_glue.identity_methods import ApplyRequest
from ..comfy_glue.methods import instantid as method
from .errors import reports_errors
from .image_tensors import check_control_image
from .loader_inputs import dtype_input, other_weights_input
from .model_cache import LoadedModels
from .model_paths import resolve_model_file
from .socket_types import Faces, Identity, InstantID

CATEGORY = "FaceSnap/InstantID"
_LOADED = LoadedModels("instantid")


def apply_instantid(node_id: str, instantid, identity, *, keypoints_image, **settings):
    """The InstantID apply nodes' one path: checks the keypoint image, then ``instantid.apply``."""
    check_control_image(keypoints_image, "keypoints_image")
    applied = method.apply(instantid, identity, request=ApplyRequest(control_image=keypoints_image, node_id=node_id,
                                                                      **settings))
    return applied.model, applied.positive, applied.negative


class FaceSnapInstantIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapInstantIDLoader",
            display_name="FaceSnap InstantID Loader",
            category=CATEGORY,
            description="Loads InstantID's public SDXL weights: ip-adapter.bin (its Resampler turns ArcFace into 16 "
                        "identity tokens, its IP-attention adds them to all 70 UNet cross-attentions) from "
                        "models/instantid, and IdentityNet (a diffusers SDXL ControlNet reading those tokens) from "
                        "models/controlnet. The .bin is read without running any code in it; every tensor's name and "
                        "shape is checked.",
            inputs=[
                io.Combo.Input("instantid_file", options=folder_paths.get_filename_list("instantid"),
                               tooltip="InstantID's ip-adapter.bin (or a .safetensors conversion with image_proj. / "
                                       "ip_adapter. names) in ComfyUI/models/instantid."),
                io.Combo.Input("controlnet_name", options=folder_paths.get_filename_list("controlnet"),
                               tooltip="InstantID's IdentityNet in ComfyUI/models/controlnet: its "
                                       "diffusion_pytorch_model.safetensors (a config.json beside it is read) or a "
                                       "renamed single file."),
                dtype_input("the Resampler, IP layers and IdentityNet"),
            ],
            outputs=[InstantID.Output(display_name="instantid")],
        )

    @classmethod
    @reports_errors
    def execute(cls, instantid_file: str, controlnet_name: str, dtype: str = "auto") -> io.NodeOutput:
        ip_path = resolve_model_file("instantid_file", "instantid", instantid_file,
                                     "InstantID's ip-adapter.bin from InstantX/InstantID on Hugging Face")
        cn_path = resolve_model_file("controlnet_name", "controlnet", controlnet_name,
                                     "InstantID's ControlNetModel/ from InstantX/InstantID on Hugging Face")
        bundle = _LOADED.get(dtype, [ip_path, *controlnet_files(controlnet_location(cn_path))],
                             lambda: method.load(weights=ip_path, controlnet=cn_path, name=instantid_file, dtype=dtype))
        return io.NodeOutput(bundle)


class FaceSnapInstantIDEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapInstantIDEncode",
            display_name="FaceSnap InstantID Encode",
            category=CATEGORY,
            description="One person's identity for InstantID: the ArcFace embeddings of the reference faces "
                        "(insightface's raw embedding, as InstantID feeds it) through InstantID's Resampler into 16 "
                        "tokens. The negative gets the Resampler of zeros, as in InstantID, or of a little noise.",
            inputs=[
                InstantID.Input("instantid", tooltip="From FaceSnap InstantID Loader."),
                Faces.Input("faces", tooltip="Reference faces of one person from FaceSnap Face Crop with the "
                                             "insightface analyzer (dlib computes no ArcFace embedding). Several "
                                             "faces are averaged in embedding space first, as cubiq's "
                                             "ComfyUI_InstantID does (InstantID's own pipeline would pass them as "
                                             "separate tokens)."),
                io.Float.Input("uncond_noise", default=0.35, min=0.0, max=1.0, step=0.01,
                               tooltip="The negative's tokens are the Resampler of this much uniform noise (fixed "
                                       "seed): 0.35 is cubiq's default, which reduces burn; 0 = InstantID's zeros."),
            ],
            outputs=[Identity.Output(display_name="identity")],
        )

    @classmethod
    @reports_errors
    def execute(cls, instantid, faces, uncond_noise: float) -> io.NodeOutput:
        return io.NodeOutput(method.encode(instantid, faces=faces, uncond_noise=uncond_noise))


def _apply_inputs():
    return [
        io.Model.Input("model", tooltip="An SDXL model; a copy gets InstantID's IP-attention."),
        io.Conditioning.Input("positive", tooltip="Positive (prompt) conditioning of the SDXL model."),
        io.Conditioning.Input("negative", tooltip="Negative conditioning; IdentityNet reads the identity's negative "
                                                  "tokens there."),
        InstantID.Input("instantid", tooltip="From FaceSnap InstantID Loader."),
        Identity.Input("identity", tooltip="From FaceSnap InstantID Encode or FaceSnap Load Identity (an InstantID "
                                           "identity)."),
        io.Image.Input("keypoints_image", tooltip="InstantID's 5-keypoint image (FaceSnap Draw Keypoints) at the "
                                                  "output's aspect ratio: where the face goes and how it is turned."),
    ]


def _window_inputs():
    return [io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                           tooltip="Sampling progress at which InstantID starts acting."),
            io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                           tooltip="Sampling progress after which InstantID stops acting.")]


def _mask_input():
    return io.Mask.Input("mask", optional=True, tooltip="Optional: where the identity goes (1 = full effect), e.g. "
                                                        "one of two people. Over the whole image.")


def _apply_outputs():
    return [io.Model.Output(display_name="model"), io.Conditioning.Output(display_name="positive"),
            io.Conditioning.Output(display_name="negative")]


class FaceSnapApplyInstantID(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyInstantID",
            display_name="FaceSnap Apply InstantID",
            category=CATEGORY,
            description="InstantID: the identity's tokens join all 70 cross-attentions of a copy of the MODEL "
                        "(IP-attention, the middle block's 10 included) and drive IdentityNet, which follows the "
                        "keypoint image. Stacks with a second identity (each with its own mask), stock ControlNets "
                        "and other packs' attention patches. The input MODEL is not changed.",
            inputs=[*_apply_inputs(),
                    io.Float.Input("weight", default=0.8, min=0.0, max=5.0, step=0.01,
                                   tooltip="IP-attention weight and IdentityNet strength together (InstantID and "
                                           "cubiq use 0.8)."),
                    *_window_inputs(), _mask_input()],
            outputs=_apply_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, model, positive, negative, instantid, identity, keypoints_image, weight, start_percent,
                end_percent, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*apply_instantid(
            "FaceSnapApplyInstantID", instantid, identity, keypoints_image=keypoints_image, model=model,
            positive=positive, negative=negative, attention_weight=weight, strength=weight, start=start_percent,
            end=end_percent, mask=mask))


class FaceSnapApplyInstantIDAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyInstantIDAdvanced",
            display_name="FaceSnap Apply InstantID (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply InstantID with separate IP-attention weight and IdentityNet strength, noise "
                        "for the negative's tokens, and IdentityNet on the positive only.",
            inputs=[*_apply_inputs(),
                    io.Float.Input("ip_weight", default=0.8, min=0.0, max=3.0, step=0.01,
                                   tooltip="Weight of the identity tokens in the UNet's cross-attention (0 = off)."),
                    io.Float.Input("cn_strength", default=0.8, min=0.0, max=10.0, step=0.01,
                                   tooltip="Strength of IdentityNet (0 = off)."),
                    *_window_inputs(),
                    io.Float.Input("uncond_noise", default=0.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="0: the negative tokens the identity carries. Above 0: they are re-made as "
                                           "the Resampler of this much uniform noise (cubiq's noise option)."),
                    io.Boolean.Input("positive_only", default=False,
                                     tooltip="Run IdentityNet on the positive only (like diffusers' guess mode): "
                                             "about half its cost per step."),
                    other_weights_input("InstantID ip-adapter file"),
                    _mask_input()],
            outputs=_apply_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, model, positive, negative, instantid, identity, keypoints_image, ip_weight, cn_strength,
                start_percent, end_percent, uncond_noise=0.0, positive_only=False, allow_other_weights=False,
                mask=None) -> io.NodeOutput:
        return io.NodeOutput(*apply_instantid(
            "FaceSnapApplyInstantIDAdvanced", instantid, identity, keypoints_image=keypoints_image, model=model,
            positive=positive, negative=negative, attention_weight=ip_weight, strength=cn_strength,
            start=start_percent, end=end_percent, mask=mask, uncond_input_noise=uncond_noise,
            positive_only=positive_only, allow_other_weights=allow_other_weights))


NODES = [FaceSnapInstantIDLoader, FaceSnapInstantIDEncode, FaceSnapApplyInstantID, FaceSnapApplyInstantIDAdvanced]
