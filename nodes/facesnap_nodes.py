"""Identity nodes: load FaceSnap weights, encode reference faces into an identity, apply it with FFRNet, and the
Diff-PC ID-Injector."""

from __future__ import annotations

import folder_paths
import torch
from comfy_api.latest import io

from ..comfy_glue.methods.facesnap import backbone_files, load_bundle
from ..comfy_glue.identity_apply import apply_facesnap_identity, mixer_identity, require_ffrnet
from ..comfy_glue.id_injector_patch import check_unet_matches
from ..models.errors import ModelFileError
from ..models.identity.facesnap.face_features import FaceFeatures
from ..models.identity.reference_faces import arcface_embeddings, face_crop, reference_indices
from ..models.identity.facesnap.checkpoint import OWN_FFRNET
from .errors import reports_errors
from .image_tensors import check_control_image, to_image_tensor
from .loader_inputs import dtype_input, other_weights_input
from .model_cache import LoadedModels, file_identity
from .socket_types import FaceFeatures as FaceFeaturesSocket
from .socket_types import Faces, FaceSnapModel, Identity

CATEGORY = "FaceSnap/Identity"
NO_CONTROLNET = OWN_FFRNET
_LOADED = LoadedModels("facesnap")


def _landmark_inputs():
    return [
        io.Image.Input("landmark_image", tooltip="72-point landmark control image (FaceSnap Draw Landmarks or the "
                                                 "landmark predictor). Drawn at the output's aspect ratio; its size "
                                                 "is resized to the latent, a different aspect ratio is an error."),
        io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                       tooltip="Scale of FFRNet's residuals and of the ID-Injector (0 = off)."),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Sampling progress at which FFRNet and the ID-Injector start acting."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Sampling progress after which FFRNet and the ID-Injector stop acting."),
    ]


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
                io.Combo.Input("controlnet_name", options=[NO_CONTROLNET] + folder_paths.get_filename_list("controlnet"),
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
        path = folder_paths.get_full_path("facesnap", facesnap_name)
        if path is None:
            dirs = ", ".join(folder_paths.get_folder_paths("facesnap"))
            raise ModelFileError(f"FaceSnap weights {facesnap_name!r} not found", f"put the file in one of: {dirs}")
        cn_path = None
        if controlnet_name != NO_CONTROLNET:
            cn_path = folder_paths.get_full_path("controlnet", controlnet_name)
            if cn_path is None:
                raise ModelFileError(f"ControlNet {controlnet_name!r} not found", "put it in ComfyUI/models/controlnet")
        key = repr(file_identity(path))  # pairs this file's ID-Injector with its controls
        bundle = _LOADED.get(dtype, [path, *backbone_files(cn_path)], lambda: load_bundle(
            path, cn_path, facesnap_name, dtype, key))
        return io.NodeOutput(bundle)


def encode_faces(faces, clip_vision) -> FaceFeatures:
    ids = arcface_embeddings(faces)
    size = getattr(faces, "crop_size", 0) or getattr(clip_vision, "image_size", 224)
    tokens = []
    for i in reference_indices(faces):
        crop = to_image_tensor([face_crop(faces, i, size)])
        # the stock CLIPVisionEncode with crop="center": encode_image(image, crop=True)
        tokens.append(clip_vision.encode_image(crop, crop=True)["penultimate_hidden_states"].float().cpu())
    return FaceFeatures(id_embeds=ids, clip_tokens=torch.cat(tokens, dim=0))


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
            outputs=[FaceFeaturesSocket.Output(display_name="face_features")],
        )

    @classmethod
    @reports_errors
    def execute(cls, faces, clip_vision) -> io.NodeOutput:
        return io.NodeOutput(encode_faces(faces, clip_vision))


def _conditioning_inputs(identity: bool = False):
    source = (Identity.Input("identity", tooltip="One person's identity from FaceSnap Attribute Mixer or FaceSnap Load "
                                                 "Identity (made with this FaceSnap file's mixer).")
              if identity else FaceFeaturesSocket.Input("face_features", tooltip="From FaceSnap Face Encode."))
    return [
        io.Conditioning.Input("positive", tooltip="Positive (prompt) conditioning of an SDXL model."),
        io.Conditioning.Input("negative", tooltip="Negative conditioning; it gets FFRNet with the identity-free "
                                                  "tokens, so CFG pushes towards the identity."),
        FaceSnapModel.Input("facesnap_model", tooltip="From FaceSnap Model Loader."),
        source,
    ]


def _mask_input():
    return io.Mask.Input("mask", optional=True,
                         tooltip="Optional: where FFRNet and the ID-Injector act (1 = full effect).")


def _conditioning_outputs():
    return [io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")]


def _advanced_inputs(identity: bool):
    landmark = _landmark_inputs()
    landmark[1] = io.Float.Input("cond_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                                 tooltip="FFRNet/ID-Injector strength on the positive.")
    return [*_conditioning_inputs(identity), *landmark,
            io.Float.Input("uncond_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                           tooltip="FFRNet/ID-Injector strength on the negative (uncond) pass."),
            io.Float.Input("uncond_noise", default=0.0, min=0.0, max=2.0, step=0.01,
                           tooltip="Gaussian noise (fixed seed) added to the negative's identity-free tokens."),
            _mask_input()]


def _apply_features(node_id, positive, negative, bundle, features, landmark_image, strength, start, end, mask=None,
                    uncond_strength=None, uncond_noise=0.0):
    """The face-features apply nodes: the mixer's identity, applied like the identity apply nodes do."""
    check_control_image(landmark_image, "landmark_image")
    require_ffrnet(bundle)
    return apply_facesnap_identity(positive, negative, bundle, mixer_identity(bundle, features), landmark_image,
                                   strength, start, end, mask, uncond_strength, uncond_noise, node_id=node_id)


SUPERSEDED = ("Kept so that saved workflows keep loading and running; new graphs use FaceSnap Attribute Mixer + "
              "{new}, which make the same result and let the identity be saved, loaded and blended.")


class FaceSnapApplyFFRNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyFFRNet",
            display_name="FaceSnap Apply FFRNet",
            category=CATEGORY,
            description="Adds FaceSnap's FFRNet ControlNet to the conditioning, fed the face features through the "
                        "Facial Attribute Mixer. " + SUPERSEDED.format(new="FaceSnap Apply Identity"),
            inputs=[*_conditioning_inputs(), *_landmark_inputs(), _mask_input()],
            outputs=_conditioning_outputs(),
            is_deprecated=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, face_features, landmark_image, strength, start_percent,
                end_percent, mask=None) -> io.NodeOutput:
        if strength == 0:
            return io.NodeOutput(positive, negative)
        return io.NodeOutput(*_apply_features("FaceSnapApplyFFRNet", positive, negative, facesnap_model, face_features,
                                              landmark_image, strength, start_percent, end_percent, mask))


class FaceSnapApplyFFRNetAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyFFRNetAdvanced",
            display_name="FaceSnap Apply FFRNet (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply FFRNet with separate strengths for the positive and the negative, and "
                        "optional noise on the negative's identity-free tokens. "
                        + SUPERSEDED.format(new="FaceSnap Apply Identity (Advanced)"),
            inputs=_advanced_inputs(identity=False),
            outputs=_conditioning_outputs(),
            is_deprecated=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, face_features, landmark_image, cond_strength, start_percent,
                end_percent, uncond_strength, uncond_noise, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*_apply_features("FaceSnapApplyFFRNetAdvanced", positive, negative, facesnap_model,
                                              face_features, landmark_image, cond_strength, start_percent, end_percent,
                                              mask, uncond_strength, uncond_noise))


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
                FaceFeaturesSocket.Input("face_features", tooltip="From FaceSnap Face Encode: all references of one "
                                                                  "person."),
            ],
            outputs=[Identity.Output(display_name="identity")],
        )

    @classmethod
    @reports_errors
    def execute(cls, facesnap_model, face_features) -> io.NodeOutput:
        return io.NodeOutput(mixer_identity(facesnap_model, face_features))


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
            inputs=[*_conditioning_inputs(identity=True), *_landmark_inputs(), _mask_input()],
            outputs=_conditioning_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, identity, landmark_image, strength, start_percent,
                end_percent, mask=None) -> io.NodeOutput:
        check_control_image(landmark_image, "landmark_image")
        if strength == 0:
            return io.NodeOutput(positive, negative)
        return io.NodeOutput(*apply_facesnap_identity(positive, negative, facesnap_model, identity, landmark_image,
                                                      strength, start_percent, end_percent, mask,
                                                      node_id="FaceSnapApplyIdentity"))


class FaceSnapApplyIdentityAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyIdentityAdvanced",
            display_name="FaceSnap Apply Identity (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply Identity with separate strengths for the positive and the negative, optional "
                        "noise on the negative's identity-free tokens, and FFRNet on the positive only.",
            inputs=[*_advanced_inputs(identity=True)[:-1],
                    io.Boolean.Input("positive_only", default=False,
                                     tooltip="Run FFRNet on the positive only (the negative keeps its own "
                                             "ControlNets): about half FFRNet's cost per step; uncond_strength "
                                             "is then unused."),
                    other_weights_input("FaceSnap file"),
                    _mask_input()],
            outputs=_conditioning_outputs(),
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, identity, landmark_image, cond_strength, start_percent,
                end_percent, uncond_strength, uncond_noise, positive_only=False, allow_other_weights=False,
                mask=None) -> io.NodeOutput:
        check_control_image(landmark_image, "landmark_image")
        return io.NodeOutput(*apply_facesnap_identity(
            positive, negative, facesnap_model, identity, landmark_image, cond_strength, start_percent, end_percent,
            mask, uncond_strength, uncond_noise, positive_only, allow_other_weights,
            node_id="FaceSnapApplyIdentityAdvanced"))


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
        require_ffrnet(facesnap_model)
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
                *_landmark_inputs(),
            ],
            outputs=[io.Model.Output(display_name="model"), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, positive, negative, faces, clip_vision, facesnap_model, landmark_image, strength,
                start_percent, end_percent) -> io.NodeOutput:
        require_ffrnet(facesnap_model)
        if facesnap_model.has_injector:
            model = facesnap_model.inject(model, "ApplyFaceSnap")
        else:
            check_unet_matches(model, facesnap_model.ffrnet)
        if strength == 0:
            return io.NodeOutput(model, positive, negative)
        features = encode_faces(faces, clip_vision)
        positive, negative = _apply_features("ApplyFaceSnap", positive, negative, facesnap_model, features,
                                             landmark_image, strength, start_percent, end_percent)
        return io.NodeOutput(model, positive, negative)


NODES = [FaceSnapModelLoader, FaceSnapFaceEncode, FaceSnapAttributeMixer, FaceSnapApplyIdentity,
         FaceSnapApplyIdentityAdvanced, ApplyFaceSnap, DiffPCIDInjector, FaceSnapApplyFFRNet, FaceSnapApplyFFRNetAdvanced]
