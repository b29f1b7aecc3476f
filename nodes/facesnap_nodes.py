"""FaceSnap's nodes: load FaceSnap weights, encode reference faces into an identity, apply it with FFRNet, and the
Diff-PC ID-Injector. Thin adapters over ``comfy_glue/methods/facesnap.py``."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..comfy_glue.controlnet_files import controlnet_files
from ..comfy_glue.id_injector_patch import check_unet_matches
from ..comfy_glue.identity_methods import ApplyRequest
from ..comfy_glue.methods import facesnap
from ..models.errors import ModelFileError
from ..models.identity.facesnap.checkpoint import OWN_FFRNET
from .errors import reports_errors
from .image_tensors import check_control_image
from .loader_inputs import dtype_input, other_weights_input
from .model_cache import LoadedModels, file_identity
from .model_paths import resolve_model_file
from .socket_types import FaceFeatures, Faces, FaceSnapModel, Identity

CATEGORY = "FaceSnap/Identity"
NO_CONTROLNET = OWN_FFRNET
_LOADED = LoadedModels("facesnap")


def landmark_inputs(strength_name: str = "strength",
                    strength_tooltip: str = "Scale of FFRNet's residuals and of the ID-Injector (0 = off).") -> list:
    return [
        io.Image.Input("landmark_image", tooltip="72-point landmark control image (FaceSnap Draw Landmarks or the "
                                                 "landmark predictor). Drawn at the output's aspect ratio; its size "
                                                 "is resized to the latent, a different aspect ratio is an error."),
        io.Float.Input(strength_name, default=1.0, min=0.0, max=10.0, step=0.01, tooltip=strength_tooltip),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Sampling progress at which FFRNet and the ID-Injector start acting."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Sampling progress after which FFRNet and the ID-Injector stop acting."),
    ]


def conditioning_inputs(source) -> list:
    """positive, negative, the FaceSnap model and ``source`` (the identity or, in old nodes, the face features)."""
    return [
        io.Conditioning.Input("positive", tooltip="Positive (prompt) conditioning of an SDXL model."),
        io.Conditioning.Input("negative", tooltip="Negative conditioning; it gets FFRNet with the identity-free "
                                                  "tokens, so CFG pushes towards the identity."),
        FaceSnapModel.Input("facesnap_model", tooltip="From FaceSnap Model Loader."),
        source,
    ]


def identity_input():
    return Identity.Input("identity", tooltip="One person's identity from FaceSnap Attribute Mixer or FaceSnap Load "
                                              "Identity (made with this FaceSnap file's mixer).")


def mask_input():
    return io.Mask.Input("mask", optional=True,
                         tooltip="Optional: where FFRNet and the ID-Injector act (1 = full effect).")


def uncond_inputs(noise_name: str) -> list:
    """The Advanced nodes' negative settings; ``noise_name`` is the token-noise widget's name."""
    return [io.Float.Input("uncond_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                           tooltip="FFRNet/ID-Injector strength on the negative (uncond) pass."),
            io.Float.Input(noise_name, default=0.0, min=0.0, max=2.0, step=0.01,
                           tooltip="Gaussian noise (fixed seed, this standard deviation) added to the negative's "
                                   "identity-free tokens.")]


def conditioning_outputs():
    return [io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")]


def apply_identity(node_id: str, bundle, identity, *, positive, negative, landmark_image, **settings):
    """The FaceSnap apply nodes' one path: checks the landmark image, then ``facesnap.apply``."""
    check_control_image(landmark_image, "landmark_image")
    request = ApplyRequest(positive=positive, negative=negative, control_image=landmark_image, node_id=node_id,
                           **settings)
    applied = facesnap.apply(bundle, identity, request=request)
    return applied.positive, applied.negative


class FaceSnapModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapModelLoader",
            display_name="FaceSnap Model Loader",
            category=CATEGORY,
            description="Loads FaceSnap weights (.safetensors from models/facesnap): the Facial Attribute Mixer, "
                        "the ID-Injector heads and the FFRNet ControlNet, or takes FFRNet from a diffusers-layout "
                        "SDXL ControlNet in models/controlnet. Every tensor shape is checked.",
            inputs=[
                io.Combo.Input("facesnap_name", options=folder_paths.get_filename_list("facesnap"),
                               tooltip="FaceSnap weights file in ComfyUI/models/facesnap."),
                io.Combo.Input("controlnet_name",
                               options=[NO_CONTROLNET] + folder_paths.get_filename_list("controlnet"),
                               default=NO_CONTROLNET,
                               tooltip="Where FFRNet comes from: the FaceSnap file itself, or a diffusers-layout "
                                       "SDXL ControlNet .safetensors in ComfyUI/models/controlnet for a FaceSnap file "
                                       "without its own FFRNet. A file with its own FFRNet refuses another ControlNet "
                                       "(an error names both) rather than ignore it."),
                dtype_input("the mixer, FFRNet and ID-Injector weights", optional=True),
            ],
            outputs=[FaceSnapModel.Output(display_name="facesnap_model")],
        )

    @classmethod
    @reports_errors
    def execute(cls, facesnap_name: str, controlnet_name: str, dtype: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("facesnap_name", "facesnap", facesnap_name,
                                  "train your own FaceSnap weights (docs/training.md)")
        cn_path = None
        if controlnet_name != NO_CONTROLNET:
            cn_path = resolve_model_file("controlnet_name", "controlnet", controlnet_name,
                                         "the diffusers SDXL ControlNet trained with this FaceSnap file")
        pairing_key = repr(file_identity(path))  # pairs this file's ID-Injector with its controls
        bundle = _LOADED.get(dtype, [path, *controlnet_files(cn_path)], lambda: facesnap.load(
            weights=path, controlnet=cn_path, name=facesnap_name, dtype=dtype, pairing_key=pairing_key))
        return io.NodeOutput(bundle)


class FaceSnapFaceEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapFaceEncode",
            display_name="FaceSnap Face Encode",
            category=CATEGORY,
            description="Encodes the reference faces of one person for the Facial Attribute Mixer: the ArcFace "
                        "512-D embedding from the insightface analyzer and the CLIP-ViT-H penultimate hidden states "
                        "(257x1280) of each face crop. Several references stay together and are fused into one "
                        "identity.",
            inputs=[
                Faces.Input("faces", tooltip="Reference faces from FaceSnap Face Crop (insightface analyzer)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP-ViT-H/14 image encoder (Load CLIP Vision)."),
            ],
            outputs=[FaceFeatures.Output(display_name="face_features")],
        )

    @classmethod
    @reports_errors
    def execute(cls, faces, clip_vision) -> io.NodeOutput:
        return io.NodeOutput(facesnap.face_features(faces=faces, clip_vision=clip_vision))


class FaceSnapAttributeMixer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapAttributeMixer",
            display_name="FaceSnap Attribute Mixer",
            category=CATEGORY,
            description="FaceSnap's Facial Attribute Mixer (paper Eq. 1-2): fuses the ArcFace and CLIP features of "
                        "one person's reference photos (1 or more; every photo's tokens attend to all of them) into "
                        "16 identity tokens f_mix. The identity also carries the mixer's output for zeroed features, "
                        "which the negative gets. Save it with FaceSnap Save Identity to reuse the person without the "
                        "photos.",
            inputs=[
                FaceSnapModel.Input("facesnap_model", tooltip="From FaceSnap Model Loader: its mixer encodes."),
                FaceFeatures.Input("face_features", tooltip="From FaceSnap Face Encode: all references of one "
                                                            "person."),
            ],
            outputs=[Identity.Output(display_name="identity")],
        )

    @classmethod
    @reports_errors
    def execute(cls, facesnap_model, face_features) -> io.NodeOutput:
        return io.NodeOutput(facesnap.encode_features(facesnap_model, features=face_features))


class FaceSnapApplyIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyIdentity",
            display_name="FaceSnap Apply Identity",
            category=CATEGORY,
            description="Adds FaceSnap's FFRNet ControlNet to the conditioning: the landmark image steers the face's "
                        "pose and shape, the identity's tokens (f_mix) replace the text in its cross-attention, the "
                        "negative gets the identity-free tokens. Chains with other ControlNets, which keep reading the "
                        "prompt, and with further applies (one per person, each with its own mask). The ID-Injector "
                        "heads, if any, act only on a MODEL patched by Diff-PC ID-Injector with the same FaceSnap "
                        "file.",
            inputs=[*conditioning_inputs(identity_input()), *landmark_inputs(), mask_input()],
            outputs=conditioning_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, identity, landmark_image, strength, start_percent,
                end_percent, mask=None) -> io.NodeOutput:
        if strength == 0:
            check_control_image(landmark_image, "landmark_image")
            return io.NodeOutput(positive, negative)
        return io.NodeOutput(*apply_identity(
            "FaceSnapApplyIdentity", facesnap_model, identity, positive=positive, negative=negative,
            landmark_image=landmark_image, strength=strength, start=start_percent, end=end_percent, mask=mask))


def advanced_inputs(noise_name: str) -> list:
    return [*conditioning_inputs(identity_input()),
            *landmark_inputs("cond_strength", "FFRNet/ID-Injector strength on the positive."),
            *uncond_inputs(noise_name),
            io.Boolean.Input("positive_only", default=False,
                             tooltip="Run FFRNet on the positive only (the negative keeps its own ControlNets): about "
                                     "half FFRNet's cost per step; uncond_strength is then unused."),
            other_weights_input("FaceSnap file"),
            mask_input()]


def apply_identity_advanced(node_id: str, positive, negative, facesnap_model, identity, landmark_image, cond_strength,
                            start_percent, end_percent, uncond_strength, uncond_token_noise, positive_only,
                            allow_other_weights, mask):
    return apply_identity(
        node_id, facesnap_model, identity, positive=positive, negative=negative, landmark_image=landmark_image,
        strength=cond_strength, start=start_percent, end=end_percent, mask=mask, uncond_strength=uncond_strength,
        uncond_token_noise=uncond_token_noise, positive_only=positive_only, allow_other_weights=allow_other_weights)


class FaceSnapApplyIdentityAdvancedV2(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyIdentityAdvancedV2",
            display_name="FaceSnap Apply Identity (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply Identity with separate strengths for the positive and the negative, optional "
                        "Gaussian noise on the negative's identity-free tokens, and FFRNet on the positive only.",
            inputs=advanced_inputs("uncond_token_noise"),
            outputs=conditioning_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, identity, landmark_image, cond_strength, start_percent,
                end_percent, uncond_strength, uncond_token_noise, positive_only=False, allow_other_weights=False,
                mask=None) -> io.NodeOutput:
        return io.NodeOutput(*apply_identity_advanced(
            "FaceSnapApplyIdentityAdvancedV2", positive, negative, facesnap_model, identity, landmark_image,
            cond_strength, start_percent, end_percent, uncond_strength, uncond_token_noise, positive_only,
            allow_other_weights, mask))


class DiffPCIDInjector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiffPCIDInjector",
            display_name="Diff-PC ID-Injector",
            category=CATEGORY,
            description="Returns a copy of the MODEL with Diff-PC's ID-Injector: after the middle block and every "
                        "decoder block the UNet features are modulated, y = (1 + phi) * h + mu, with phi and mu "
                        "computed by this FaceSnap file's heads from the features of the FFRNets applied with the "
                        "same file (each with its own strength, mask and start/end window). Chain one per FaceSnap "
                        "file. The input MODEL is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="An SDXL model."),
                FaceSnapModel.Input("facesnap_model", tooltip="FaceSnap weights with ID-Injector heads."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, facesnap_model) -> io.NodeOutput:
        facesnap_model.require_ffrnet()
        if not facesnap_model.has_injector:
            raise ModelFileError(f"the FaceSnap file {facesnap_model.name!r} has no ID-Injector heads",
                                 "use FaceSnap weights trained with the ID-Injector, or leave this node out")
        return io.NodeOutput(facesnap_model.inject(model))


class ApplyFaceSnap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApplyFaceSnap",
            display_name="Apply FaceSnap",
            category=CATEGORY,
            description="All in one: encodes the reference faces, applies FFRNet to positive and negative and, "
                        "when the FaceSnap file has ID-Injector heads, patches a copy of the MODEL with them.",
            inputs=[
                io.Model.Input("model", tooltip="An SDXL model."),
                io.Conditioning.Input("positive", tooltip="Positive (prompt) conditioning of the SDXL model."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning of the SDXL model."),
                Faces.Input("faces", tooltip="Reference faces of one person from FaceSnap Face Crop."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP-ViT-H/14 image encoder (Load CLIP Vision)."),
                FaceSnapModel.Input("facesnap_model", tooltip="From FaceSnap Model Loader."),
                *landmark_inputs(),
            ],
            outputs=[io.Model.Output(display_name="model"), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, positive, negative, faces, clip_vision, facesnap_model, landmark_image, strength,
                start_percent, end_percent) -> io.NodeOutput:
        facesnap_model.require_ffrnet()
        if facesnap_model.has_injector:
            model = facesnap_model.inject(model, "ApplyFaceSnap")
        else:
            check_unet_matches(model, facesnap_model.ffrnet)
        if strength == 0:
            return io.NodeOutput(model, positive, negative)
        identity = facesnap.encode(facesnap_model, faces=faces, clip_vision=clip_vision)
        positive, negative = apply_identity("ApplyFaceSnap", facesnap_model, identity, positive=positive,
                                            negative=negative, landmark_image=landmark_image, strength=strength,
                                            start=start_percent, end=end_percent)
        return io.NodeOutput(model, positive, negative)


NODES = [FaceSnapModelLoader, FaceSnapFaceEncode, FaceSnapAttributeMixer, FaceSnapApplyIdentity,
         FaceSnapApplyIdentityAdvancedV2, ApplyFaceSnap, DiffPCIDInjector]
