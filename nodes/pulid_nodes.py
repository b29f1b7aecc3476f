"""PuLID SDXL (v1 and v1.1) in FaceSnap's graph: load EVA-CLIP, the face parser and a PuLID file, encode a person,
apply PuLID's ID attention to the MODEL. Thin adapters over ``comfy_glue/methods/pulid.py``."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..comfy_glue import pulid_features
from ..comfy_glue.methods import pulid as glue
from ..models.face_analysis.face_parsing import FILE_NAME as PARSER_FILE
from ..models.identity.pulid.eva_clip_weights import FILE_NAME as EVA_FILE
from ..models.identity.pulid.id_attention import PROJECTIONS, SHARE_OFFICIAL, SHARES
from ..models.identity.pulid.weights import FILE_FIX as PULID_FIX
from .apply_inputs import apply_method, mask_input, model_output, window_inputs
from .errors import reports_errors
from .loader_inputs import dtype_input, other_weights_input
from .model_cache import LoadedModels
from .model_paths import EVA_CLIP_FOLDER, file_options, resolve_model_file
from .socket_types import EvaClip, FaceParser, Faces, Identity, PuLID

CATEGORY = "FaceSnap/PuLID"
PARSER_FOLDER = "facexlib"
_LOADED = LoadedModels("pulid")
EVA_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors")
PRESET_TOOLTIP = ("default: the official demo's setting for the file (v1: fidelity; v1.1: 20 zero tokens, ortho_v2). "
                  "fidelity: 8 zero tokens, ortho_v2. style: 16 zero tokens, ortho (more prompt, less likeness). "
                  "neutral: no zero tokens, no projection (cubiq's presets).")


class FaceSnapEVACLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapEVACLIPLoader",
            display_name="FaceSnap EVA-CLIP Loader",
            category=CATEGORY,
            description=f"Loads the vision tower of EVA02-CLIP-L-14-336 ({EVA_FILE}, QuanSun/EVA-CLIP), which PuLID "
                        "and EcomID read the faces with, from ComfyUI/models/clip (or models/text_encoders, where "
                        "lldacing's PuLID-Flux pack reads it too). The .pt is read without running any code in it; "
                        "only the vision tower is kept, every tensor's name and shape checked.",
            inputs=[io.Combo.Input("eva_clip_file", options=file_options(EVA_CLIP_FOLDER, EVA_EXTENSIONS),
                                   tooltip=f"{EVA_FILE} (856 MB) or a .safetensors conversion, in models/clip."),
                    dtype_input("the EVA-CLIP tower")],
            outputs=[EvaClip.Output(display_name="eva_clip")],
        )

    @classmethod
    @reports_errors
    def execute(cls, eva_clip_file: str, dtype: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("eva_clip_file", EVA_CLIP_FOLDER, eva_clip_file,
                                  f"download {EVA_FILE} from QuanSun/EVA-CLIP on Hugging Face into ComfyUI/models/clip")
        return io.NodeOutput(_LOADED.get(("eva", dtype), [path], lambda: pulid_features.load_eva_clip(
            weights=path, name=eva_clip_file, dtype=dtype)))


class FaceSnapFaceParserLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapFaceParserLoader",
            display_name="FaceSnap Face Parser Loader",
            category=CATEGORY,
            description=f"Loads facexlib's BiSeNet face parser ({PARSER_FILE}), with which PuLID and EcomID white out "
                        "the background, clothes, hat, ears, neck and jewellery around each reference face, from "
                        "ComfyUI/models/facexlib (as lldacing's PuLID-Flux pack). Read without running any code in "
                        "the file; it runs in float32 (13 M parameters).",
            inputs=[io.Combo.Input("parser_file", options=folder_paths.get_filename_list(PARSER_FOLDER),
                                   tooltip=f"{PARSER_FILE} (facexlib release v0.2.0, 53 MB) in models/facexlib.")],
            outputs=[FaceParser.Output(display_name="face_parser")],
        )

    @classmethod
    @reports_errors
    def execute(cls, parser_file: str) -> io.NodeOutput:
        path = resolve_model_file("parser_file", PARSER_FOLDER, parser_file,
                                  f"download {PARSER_FILE} from facexlib's GitHub release v0.2.0 into "
                                  "ComfyUI/models/facexlib")
        return io.NodeOutput(_LOADED.get("parser", [path], lambda: pulid_features.load_parser(weights=path,
                                                                                                name=parser_file)))


class FaceSnapPuLIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapPuLIDLoader",
            display_name="FaceSnap PuLID Loader",
            category=CATEGORY,
            description="Loads PuLID for SDXL, v1 or v1.1, in either published layout, from ComfyUI/models/pulid: "
                        "its ID encoder (ArcFace + EVA-CLIP -> 10 tokens in v1, 32 in v1.1) and its ID attention "
                        "layers for all 70 UNet cross-attentions. The version is read from the file; .bin files are "
                        "read without running any code in them; every tensor's name and shape is checked.",
            inputs=[io.Combo.Input("pulid_file", options=folder_paths.get_filename_list("pulid"),
                                   tooltip="pulid_v1.bin or pulid_v1.1.safetensors (guozinan/PuLID), or the "
                                           "conversions ip-adapter_pulid_sdxl_fp16.safetensors (huchenlei) and "
                                           "ip-adapter_pulidv1.1_sdxl_fp16.safetensors (Runzy), in models/pulid."),
                    dtype_input("the ID encoder and the ID attention layers")],
            outputs=[PuLID.Output(display_name="pulid")],
        )

    @classmethod
    @reports_errors
    def execute(cls, pulid_file: str, dtype: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("pulid_file", "pulid", pulid_file, PULID_FIX)
        return io.NodeOutput(_LOADED.get(("pulid", dtype), [path], lambda: glue.load(weights=path, name=pulid_file,
                                                                                       dtype=dtype)))


def feature_inputs() -> list:
    """The face-feature models PuLID and EcomID read the reference faces with."""
    return [EvaClip.Input("eva_clip", tooltip="From FaceSnap EVA-CLIP Loader."),
            FaceParser.Input("face_parser", tooltip="From FaceSnap Face Parser Loader."),
            Faces.Input("faces", tooltip="Reference faces of one person from FaceSnap Face Crop with the insightface "
                                         "analyzer (dlib computes no ArcFace embedding). One face per photo is read "
                                         "(the largest, as the official code does), aligned from the photo itself "
                                         "with the detector's five keypoints; several photos are combined.")]


def encode_faces(method, bundle, eva_clip, face_parser, faces, uncond_noise: float) -> io.NodeOutput:
    """The PuLID and EcomID encode nodes' one call: ``method.encode`` (a glue module) with EVA-CLIP as its CLIP."""
    return io.NodeOutput(method.encode(bundle, faces=faces, clip_vision=eva_clip, face_parser=face_parser,
                                       uncond_noise=uncond_noise))


class FaceSnapPuLIDEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapPuLIDEncode",
            display_name="FaceSnap PuLID Encode",
            category=CATEGORY,
            description="One person's identity for PuLID: insightface's ArcFace embedding and EVA-CLIP's features of "
                        "the aligned, grey face on white, through PuLID's ID encoder (v1: 10 tokens per photo, "
                        "averaged as cubiq's node does; v1.1: 32 tokens from all photos together). The negative "
                        "encodes zeros, as the official code does, or a little noise.",
            inputs=[PuLID.Input("pulid", tooltip="From FaceSnap PuLID Loader."), *feature_inputs(),
                    io.Float.Input("uncond_noise", default=0.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="0: the negative encodes zeros (official and cubiq's default). Above 0: "
                                           "uniform noise of this amplitude (fixed seed), cubiq's Advanced noise.")],
            outputs=[Identity.Output(display_name="identity")],
        )

    @classmethod
    @reports_errors
    def execute(cls, pulid, eva_clip, face_parser, faces, uncond_noise: float) -> io.NodeOutput:
        return encode_faces(glue, pulid, eva_clip, face_parser, faces, uncond_noise)


def _apply_inputs() -> list:
    return [io.Model.Input("model", tooltip="An SDXL model; a copy gets PuLID's ID attention."),
            PuLID.Input("pulid", tooltip="From FaceSnap PuLID Loader."),
            Identity.Input("identity", tooltip="From FaceSnap PuLID Encode or FaceSnap Load Identity (made with this "
                                               "PuLID file)."),
            io.Float.Input("weight", default=0.8, min=-1.0, max=5.0, step=0.01,
                           tooltip="Weight of the ID attention (the official demos' id_scale: 0.8; cubiq: 1.0).")]


class FaceSnapApplyPuLID(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyPuLID",
            display_name="FaceSnap Apply PuLID",
            category=CATEGORY,
            description="PuLID: the identity's tokens join all 70 cross-attentions of a copy of the MODEL through "
                        "PuLID's ID attention (the middle block's 10 included). Stacks with a second identity (each "
                        "with its own mask), ControlNets and other packs' attention patches; the input MODEL is not "
                        "changed. No pose control of its own: chain an OpenPose ControlNet for that.",
            inputs=[*_apply_inputs(),
                    io.Combo.Input("method", options=list(glue.PRESETS), default=glue.DEFAULT_PRESET,
                                   tooltip=PRESET_TOOLTIP),
                    *window_inputs("PuLID"), mask_input()],
            outputs=[model_output()],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, pulid, identity, weight, method, start_percent, end_percent, mask=None) -> io.NodeOutput:
        return io.NodeOutput(apply_method(
            glue, "FaceSnapApplyPuLID", pulid, identity, model=model, positive=[], negative=[],
            attention_weight=weight, attention_mode=method, start=start_percent, end=end_percent, mask=mask)[0])


class FaceSnapApplyPuLIDAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyPuLIDAdvanced",
            display_name="FaceSnap Apply PuLID (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply PuLID with the ID attention's parts set one by one: zero tokens, projection, "
                        "how ortho_v2 measures the identity's share, noise in the zero tokens.",
            inputs=[*_apply_inputs(),
                    io.Int.Input("num_zero_tokens", default=8, min=0, max=256,
                                 tooltip="Zero tokens after the identity's (cubiq's 'fidelity'): they dilute the ID "
                                         "attention. More: more editable, less likeness. v1 fidelity 8, style 16; "
                                         "v1.1's demo 20."),
                    io.Combo.Input("projection", options=list(reversed(PROJECTIONS)), default="ortho_v2",
                                   tooltip="ortho_v2: the ID attention minus its part along the text attention, "
                                           "scaled by the identity's share. ortho: minus that whole part. none: "
                                           "added as it is."),
                    io.Combo.Input("share", options=list(SHARES), default=SHARE_OFFICIAL,
                                   tooltip="How ortho_v2 measures the identity's share of the attention. official: "
                                           "per head and image position (the official PuLID code). cubiq: over all "
                                           "heads and positions at once (cubiq's node, EcomID's)."),
                    io.Float.Input("zero_token_noise", default=0.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="0: the zero tokens are zeros. Above 0: uniform noise of this amplitude, "
                                           "the same in the positive and the negative (cubiq's Advanced noise; its "
                                           "negative-input noise is FaceSnap PuLID Encode's uncond_noise)."),
                    *window_inputs("PuLID"), other_weights_input("PuLID file"), mask_input()],
            outputs=[model_output()],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, pulid, identity, weight, num_zero_tokens, projection, share, zero_token_noise,
                start_percent, end_percent, allow_other_weights=False, mask=None) -> io.NodeOutput:
        mode = glue.AttentionMode(num_zero_tokens, projection, share, zero_token_noise)
        return io.NodeOutput(apply_method(
            glue, "FaceSnapApplyPuLIDAdvanced", pulid, identity, model=model, positive=[], negative=[],
            attention_weight=weight, attention_mode=mode, start=start_percent, end=end_percent, mask=mask,
            allow_other_weights=allow_other_weights)[0])


NODES = [FaceSnapEVACLIPLoader, FaceSnapFaceParserLoader, FaceSnapPuLIDLoader, FaceSnapPuLIDEncode,
         FaceSnapApplyPuLID, FaceSnapApplyPuLIDAdvanced]
