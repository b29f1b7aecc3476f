"""Write the example workflows in workflows/ (``make workflows``), then their thumbnails (scripts/make_thumbnails.py).

Each workflow is described compactly below and laid out by scripts/workflow_builder.py from the live node schemas
of the pinned ComfyUI with this pack loaded, so widget orders always match what the web UI expects. Only core nodes
and this pack's nodes are used. workflows/facesnap_landmarks.json is maintained by hand with the face nodes and is
not rewritten here.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.load_pack()
from workflow_builder import Node, Workflow, build, note  # noqa: E402  (beside this script)

WORKFLOWS_DIR = PACK_ROOT / "workflows"
SEED = 1234567
PROMPT = ("professional portrait photo of a person, soft window light, shallow depth of field, 85mm, "
          "natural skin texture, detailed eyes")
NEGATIVE = "blurry, lowres, deformed, cartoon, painting, extra fingers, watermark, text"
MODELS_NOTE = """### Models
- `models/checkpoints/sd_xl_base_1.0.safetensors`: any SDXL 1.0 checkpoint
- `models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors`: CLIP-ViT-H/14
- `models/insightface/models/antelopev2/`: the five antelopev2 .onnx files (ArcFace for identity)
- `models/facesnap/facesnap_sdxl.safetensors`: FaceSnap weights (none are published: train your own, see the README)
"""


INSTANTID_NOTE = """### Models
- `models/checkpoints/sd_xl_base_1.0.safetensors`: any SDXL 1.0 checkpoint
- `models/insightface/models/antelopev2/`: the five antelopev2 .onnx files (ArcFace and keypoints)
- `models/instantid/ip-adapter.bin`: InstantID's Resampler and IP-attention (InstantX/InstantID on Hugging Face)
- `models/controlnet/instantid/diffusion_pytorch_model.safetensors`: InstantID's IdentityNet (`ControlNetModel/`)

Tips (InstantID, cubiq): CFG 4-5; 1016x1016 rather than 1024x1024 avoids the training set's watermarks.
"""


def sdxl_head() -> list:
    """Column 0 under the note: checkpoint and the two prompts."""
    return [
        Node("checkpoint", "CheckpointLoaderSimple", 0, widgets={"ckpt_name": "sd_xl_base_1.0.safetensors"}),
        Node("positive", "CLIPTextEncode", 0, links={"clip": ("checkpoint", "CLIP")}, widgets={"text": PROMPT},
             title="Prompt"),
        Node("negative", "CLIPTextEncode", 0, links={"clip": ("checkpoint", "CLIP")}, widgets={"text": NEGATIVE},
             title="Negative prompt"),
    ]


def sdxl_tail(col: int, model: tuple, positive: tuple, negative: tuple) -> list:
    """Latent, KSampler, decode and save, stacked in one column."""
    return [
        Node("latent", "EmptyLatentImage", col, widgets={"width": 1024, "height": 1024, "batch_size": 1}),
        Node("sampler", "KSampler", col, links={"model": model, "positive": positive, "negative": negative,
                                                "latent_image": ("latent", "LATENT")},
             widgets={"seed": SEED, "steps": 30, "cfg": 5.0, "sampler_name": "dpmpp_2m", "scheduler": "karras"}),
        Node("decode", "VAEDecode", col, links={"samples": ("sampler", "LATENT"), "vae": ("checkpoint", "VAE")}),
        Node("save", "SaveImage", col, links={"images": ("decode", "IMAGE")}, widgets={"filename_prefix": "facesnap"}),
    ]


def photo(key: str, name: str, title: str, col: int = 1) -> Node:
    return Node(key, "LoadImage", col, widgets={"image": name}, title=title, height=330)


def crop(key: str, image: tuple, col: int = 2, title: str | None = None) -> Node:
    return Node(key, "FaceSnapFaceCrop", col, links={"analyzer": ("analyzer", "analyzer"), "image": image},
                widgets={"selection": "largest", "size": 512}, title=title)


def analyzer(col: int = 1) -> Node:
    # ArcFace (identity) needs insightface's antelopev2; dlib finds faces and landmarks but has no ArcFace.
    return Node("analyzer", "FaceSnapFaceAnalyzerLoader", col, widgets={"backend": "insightface", "provider": "CPU"})


def facesnap_loaders(col: int = 4) -> list:
    return [
        Node("clip_vision", "CLIPVisionLoader", col,
             widgets={"clip_name": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"}),
        Node("facesnap", "FaceSnapModelLoader", col, widgets={"facesnap_name": "facesnap_sdxl.safetensors"}),
    ]


def apply_facesnap(landmark_image: tuple, faces: tuple, col: int = 4) -> Node:
    return Node("apply", "ApplyFaceSnap", col, links={
        "model": ("checkpoint", "MODEL"), "positive": ("positive", "CONDITIONING"),
        "negative": ("negative", "CONDITIONING"), "faces": faces, "clip_vision": ("clip_vision", "CLIP_VISION"),
        "facesnap_model": ("facesnap", "facesnap_model"), "landmark_image": landmark_image})


def identity_nodes(col: int = 4) -> list:
    """FaceSnap Face Encode and Attribute Mixer: the reference faces as one identity."""
    return [
        Node("encode", "FaceSnapFaceEncode", col, links={"faces": ("reference_crop", "faces"),
                                                         "clip_vision": ("clip_vision", "CLIP_VISION")}),
        Node("mixer", "FaceSnapAttributeMixer", col, links={"facesnap_model": ("facesnap", "facesnap_model"),
                                                            "face_features": ("encode", "face_features")}),
    ]


def apply_identity(landmark_image: tuple, col: int = 5) -> Node:
    return Node("apply_identity", "FaceSnapApplyIdentity", col, links={
        "positive": ("positive", "CONDITIONING"), "negative": ("negative", "CONDITIONING"),
        "facesnap_model": ("facesnap", "facesnap_model"), "identity": ("mixer", "identity"),
        "landmark_image": landmark_image})


def predictor(drive: tuple | None, col: int = 3, output: str = "control_image", **options) -> list:
    """The Landmark Predictor on a 1024x1024 canvas (the latent's size), and a preview of one of its images."""
    links = {"model": ("morphable_model", "3dmm"), "reference": ("reference_crop", "faces")}
    if drive:
        links["drive"] = drive
    widgets = {"pose_source": "drive" if drive else "manual", "frame": "canvas", "width": 1024, "height": 1024}
    return [
        Node("predictor", "FaceSnapLandmarkPredictor", col, links=links, widgets={**widgets, **options}),
        Node("preview", "PreviewImage", col, links={"images": ("predictor", output)},
             title="3D render" if output == "render" else "Predicted landmarks"),
    ]


def morphable_model(col: int = 2) -> Node:
    return Node("morphable_model", "FaceSnap3DMMLoader", col, widgets={"model": "ICT-FaceKit"})


def with_drive_photo() -> list:
    """The head of every drive-photo workflow: checkpoint and prompts, the analyzer, reference and drive photos and
    their crops, the 3DMM."""
    return [*sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
            photo("drive", "drive.jpg", "Drive photo (pose, expression)"),
            crop("reference_crop", ("reference", "IMAGE")), crop("drive_crop", ("drive", "IMAGE")), morphable_model()]


def note_text(title: str, body: str, models: str = MODELS_NOTE) -> str:
    return f"## {title}\n{body}\n\n{models}"


def instantid_nodes(keypoints: tuple, col: int = 4) -> list:
    """InstantID Loader, Encode (reference faces) and Apply, fed ``keypoints`` (an IMAGE output)."""
    return [
        Node("instantid", "FaceSnapInstantIDLoader", col, widgets={
            "instantid_file": "ip-adapter.bin", "controlnet_name": "instantid/diffusion_pytorch_model.safetensors"}),
        Node("encode", "FaceSnapInstantIDEncode", col, links={"instantid": ("instantid", "instantid"),
                                                              "faces": ("reference_crop", "faces")}),
        Node("apply", "FaceSnapApplyInstantID", col, links={
            "model": ("checkpoint", "MODEL"), "positive": ("positive", "CONDITIONING"),
            "negative": ("negative", "CONDITIONING"), "instantid": ("instantid", "instantid"),
            "identity": ("encode", "identity"), "keypoints_image": keypoints}),
    ]


def instantid_tail(col: int = 5, conditioning: str = "apply") -> list:
    """Sampling at InstantID's settings; ``conditioning`` is the node whose positive/negative the KSampler takes."""
    tail = sdxl_tail(col, ("apply", "model"), (conditioning, "positive"), (conditioning, "negative"))
    tail[0].widgets.update(width=1016, height=1016)
    tail[1].widgets.update(cfg=4.5)
    tail[3].widgets.update(filename_prefix="instantid")
    return tail


def keypoints(key: str, col: int, size: int = 1016, **links) -> list:
    return [Node(key, "FaceSnapDrawKeypoints", col, links=links,
                 widgets={"frame": "crop", "width": size, "height": size}),
            Node(f"{key}_preview", "PreviewImage", col, links={"images": (key, "keypoints_image")}, title="Keypoints")]


def describe_instantid() -> list:
    identity_group = ["instantid", "encode", "apply"]
    pose = ["predictor", "preview", "keypoints", "keypoints_preview"]
    predictor_canvas = {"width": 1016, "height": 1016}
    return [
        Workflow("instantid_portrait", [
            note("note", 0, note_text("InstantID portrait from one photo", "InstantID's public SDXL weights: the "
                                      "reference's ArcFace embedding becomes 16 identity tokens (Resampler) that join "
                                      "every UNet cross-attention and drive IdentityNet, which follows the reference's "
                                      "5 face keypoints.", INSTANTID_NOTE), height=340),
            *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
            crop("reference_crop", ("reference", "IMAGE")),
            *keypoints("keypoints", 3, faces=("reference_crop", "faces")),
            *instantid_nodes(("keypoints", "keypoints_image")), *instantid_tail(),
        ], groups={"InstantID": identity_group}),
        Workflow("instantid_pose_from_drive", [
            note("note", 0, note_text("InstantID, posed like a drive photo", "The Landmark Predictor keeps the "
                                      "reference's face shape and takes the pose and expression from the drive photo; "
                                      "its landmarks give IdentityNet's 5 keypoints, so the drive person's face "
                                      "proportions do not leak in (FaceSnap's answer to InstantID's copied "
                                      "keypoints).", INSTANTID_NOTE), height=360),
            *with_drive_photo(), *predictor(("drive_crop", "faces"), **predictor_canvas),
            *keypoints("keypoints", 3, landmarks=("predictor", "landmarks")),
            *instantid_nodes(("keypoints", "keypoints_image")), *instantid_tail(),
        ], groups={"InstantID": identity_group, "Pose": pose}),
        Workflow("instantid_manual_pose", [
            note("note", 0, note_text("InstantID with manual yaw, pitch and roll", "No drive photo: set the head "
                                      "angles in degrees on the Landmark Predictor; the reference's face, turned, "
                                      "gives IdentityNet's keypoints.", INSTANTID_NOTE), height=320),
            *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
            crop("reference_crop", ("reference", "IMAGE")), morphable_model(),
            *predictor(None, yaw=30.0, pitch=-5.0, roll=0.0, **predictor_canvas),
            *keypoints("keypoints", 3, landmarks=("predictor", "landmarks")),
            *instantid_nodes(("keypoints", "keypoints_image")), *instantid_tail(),
        ], groups={"InstantID": identity_group, "Pose": pose}),
    ]


OPENPOSE_CONTROLNET = "xinsir-controlnet-openpose-sdxl-1.0.safetensors"
OPENPOSE_STYLE = "openpose_face_head_xinsir"  # the head keypoints and the stick width xinsir's card asks for
OPENPOSE_NOTE = INSTANTID_NOTE.replace("\n\nTips", f"""
- `models/controlnet/{OPENPOSE_CONTROLNET}`: an SDXL OpenPose ControlNet, here xinsir/controlnet-openpose-sdxl-1.0
  (its `diffusion_pytorch_model.safetensors`, renamed; Apache-2.0); thibaud/controlnet-openpose-sdxl-1.0 is an
  alternative (licence: see the README).

Not measured: how these ControlNets follow face-only drawings (the pack had no weights to try). If the OpenPose
ControlNet fights IdentityNet, lower its strength.

Tips""")


def openpose_controlnet(image: tuple, col: int = 5) -> list:
    """A stock OpenPose ControlNet on InstantID's conditioning, fed ``image`` (the Predictor's OpenPose drawing)."""
    return [
        Node("openpose_controlnet", "ControlNetLoader", col, widgets={"control_net_name": OPENPOSE_CONTROLNET}),
        Node("openpose", "ControlNetApplyAdvanced", col, links={
            "positive": ("apply", "positive"), "negative": ("apply", "negative"),
            "control_net": ("openpose_controlnet", "CONTROL_NET"), "image": image},
            widgets={"strength": 0.6, "start_percent": 0.0, "end_percent": 1.0}, title="Apply OpenPose ControlNet"),
    ]


def describe_openpose() -> list:
    """InstantID identity + a stock OpenPose ControlNet reading the Landmark Predictor's dense landmarks."""
    groups = {"InstantID": ["instantid", "encode", "apply"], "Pose": ["predictor", "preview", "keypoints",
                                                                      "keypoints_preview"],
              "OpenPose": ["openpose_controlnet", "openpose"]}
    canvas = {"width": 1016, "height": 1016, "style": OPENPOSE_STYLE}

    def posed(drive: tuple | None, **pose) -> list:
        nodes = [*predictor(drive, **canvas, **pose), *keypoints("keypoints", 3, landmarks=("predictor", "landmarks")),
                 *instantid_nodes(("keypoints", "keypoints_image")),
                 *openpose_controlnet(("predictor", "control_image")), *instantid_tail(6, conditioning="openpose")]
        nodes[1].title = "OpenPose face drawing"
        return nodes

    return [
        Workflow("instantid_openpose_expression", [
            note("note", 0, note_text("InstantID + OpenPose ControlNet: expression from a drive photo", "InstantID "
                                      "carries the identity (IP-attention, and IdentityNet on 5 keypoints). The "
                                      "Landmark Predictor keeps the reference's face shape with the drive photo's "
                                      "pose and expression, and draws all 70 face points (plus head keypoints) the "
                                      "way OpenPose preprocessors do, for a stock OpenPose ControlNet: the dense "
                                      "expression that 5 keypoints cannot carry.", OPENPOSE_NOTE), height=440),
            *with_drive_photo(), *posed(("drive_crop", "faces")),
        ], groups=groups),
        Workflow("openpose_face_manual_pose", [
            note("note", 0, note_text("OpenPose face drawing with manual yaw, pitch and roll", "No drive photo: set "
                                      "the head angles on the Landmark Predictor. The reference's face, turned, is "
                                      "drawn the OpenPose way for a stock OpenPose ControlNet and gives IdentityNet's "
                                      "5 keypoints; InstantID carries the identity (FaceSnap weights do not exist "
                                      "yet).", OPENPOSE_NOTE), height=440),
            *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
            crop("reference_crop", ("reference", "IMAGE")), morphable_model(),
            *posed(None, yaw=30.0, pitch=-5.0, roll=0.0),
        ], groups=groups),
    ]


PULID_FILE = "pulid_v1.1.safetensors"
PULID_V1_FILE = "ip-adapter_pulid_sdxl_fp16.safetensors"
PULID_MODELS = """- `models/checkpoints/sd_xl_base_1.0.safetensors`: any SDXL 1.0 checkpoint
- `models/insightface/models/antelopev2/`: the five antelopev2 .onnx files (ArcFace and keypoints)
- `models/clip/EVA02_CLIP_L_336_psz14_s6B.pt`: EVA02-CLIP-L-14-336 (QuanSun/EVA-CLIP on Hugging Face)
- `models/facexlib/parsing_bisenet.pth`: facexlib's face parser (its GitHub release v0.2.0)
"""


def pulid_note(extra: str = "") -> str:
    return f"""### Models
{PULID_MODELS}- `models/pulid/{PULID_FILE}`: PuLID v1.1 for SDXL (guozinan/PuLID); v1 files load in the same node
{extra}
Not run with the real weights: the settings are the official v1.1 demo's (ID scale 0.8, 20 zero tokens, ortho_v2,
CFG 7, 25 steps).
"""


ECOMID_NOTE = f"""### Models
{PULID_MODELS}- `models/pulid/{PULID_V1_FILE}`: PuLID v1 for SDXL (huchenlei/ipadapter_pulid), as EcomID's README asks
- `models/instantid/ip-adapter.bin`: InstantID's file, for its Resampler (InstantX/InstantID)
- `models/controlnet/ecomid/diffusion_pytorch_model.safetensors`: EcomID's IdentityNet (alimama-creative/SDXL-EcomID)

Not run with the real weights: the settings are EcomID's published example's (ID attention 0.5, IdentityNet 0.8,
25 steps of dpm_2 / karras at CFG 3.5; its README recommends CFG 6).
"""


def pulid_nodes(col: int = 4, pulid_file: str = PULID_FILE) -> list:
    """EVA-CLIP, the face parser and a PuLID file; PuLID Encode on the reference faces."""
    return [
        Node("eva_clip", "FaceSnapEVACLIPLoader", col, widgets={"eva_clip_file": "EVA02_CLIP_L_336_psz14_s6B.pt"}),
        Node("face_parser", "FaceSnapFaceParserLoader", col, widgets={"parser_file": "parsing_bisenet.pth"}),
        Node("pulid", "FaceSnapPuLIDLoader", col, widgets={"pulid_file": pulid_file}),
        Node("encode", "FaceSnapPuLIDEncode", col, links={
            "pulid": ("pulid", "pulid"), "eva_clip": ("eva_clip", "eva_clip"),
            "face_parser": ("face_parser", "face_parser"), "faces": ("reference_crop", "faces")}),
        Node("apply", "FaceSnapApplyPuLID", col, links={"model": ("checkpoint", "MODEL"), "pulid": ("pulid", "pulid"),
                                                      "identity": ("encode", "identity")}),
    ]


def pulid_tail(col: int, positive: tuple, negative: tuple) -> list:
    tail = sdxl_tail(col, ("apply", "model"), positive, negative)
    tail[1].widgets.update(steps=25, cfg=7.0)
    tail[3].widgets.update(filename_prefix="pulid")
    return tail


def ecomid_nodes(keypoints_image: tuple, col: int = 4) -> list:
    """EcomID's loader (with EVA-CLIP and the face parser), Encode and Apply (Advanced, the published example's
    settings), fed ``keypoints_image``."""
    return [
        Node("eva_clip", "FaceSnapEVACLIPLoader", col, widgets={"eva_clip_file": "EVA02_CLIP_L_336_psz14_s6B.pt"}),
        Node("face_parser", "FaceSnapFaceParserLoader", col, widgets={"parser_file": "parsing_bisenet.pth"}),
        Node("ecomid", "FaceSnapEcomIDLoader", col, widgets={
            "instantid_file": "ip-adapter.bin", "pulid_file": PULID_V1_FILE,
            "controlnet_name": "ecomid/diffusion_pytorch_model.safetensors"}),
        Node("encode", "FaceSnapEcomIDEncode", col, links={
            "ecomid": ("ecomid", "ecomid"), "eva_clip": ("eva_clip", "eva_clip"),
            "face_parser": ("face_parser", "face_parser"), "faces": ("reference_crop", "faces")},
            widgets={"uncond_noise": 0.0}),
        Node("apply", "FaceSnapApplyEcomIDAdvanced", col + 1, links={
            "model": ("checkpoint", "MODEL"), "positive": ("positive", "CONDITIONING"),
            "negative": ("negative", "CONDITIONING"), "ecomid": ("ecomid", "ecomid"),
            "identity": ("encode", "identity"), "keypoints_image": keypoints_image},
            widgets={"ip_weight": 0.5, "cn_strength": 0.8}),
    ]


def ecomid_tail(col: int = 6) -> list:
    tail = sdxl_tail(col, ("apply", "model"), ("apply", "positive"), ("apply", "negative"))
    tail[1].widgets.update(steps=25, cfg=3.5, sampler_name="dpm_2", scheduler="karras")
    tail[3].widgets.update(filename_prefix="ecomid")
    return tail


def describe_pulid() -> list:
    pulid_group = ["eva_clip", "face_parser", "pulid", "encode", "apply"]
    ecomid_group = ["eva_clip", "face_parser", "ecomid", "encode", "apply"]
    text = {"positive": ("positive", "CONDITIONING"), "negative": ("negative", "CONDITIONING")}
    canvas = {"width": 1024, "height": 1024}
    pose = ["predictor", "preview"]
    return [
        Workflow("pulid_portrait", [
            note("note", 0, note_text("PuLID portrait from one photo", "PuLID v1.1 for SDXL: the reference's ArcFace "
                                      "embedding and EVA-CLIP's features of the aligned, background-free face become "
                                      "32 identity tokens that PuLID's ID attention adds to every UNet "
                                      "cross-attention. The prompt decides pose, style and scene.", pulid_note()),
                 height=400),
            *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
            crop("reference_crop", ("reference", "IMAGE")), *pulid_nodes(3), *pulid_tail(5, **text),
        ], groups={"PuLID": pulid_group}),
        Workflow("pulid_pose_from_drive", [
            note("note", 0, note_text("PuLID, posed like a drive photo (OpenPose ControlNet)", "PuLID has no pose "
                                      "control of its own. The Landmark Predictor keeps the reference's face shape "
                                      "with the drive photo's pose and expression and draws it the way OpenPose "
                                      "preprocessors do, for a stock SDXL OpenPose ControlNet.",
                                      pulid_note(f"- `models/controlnet/{OPENPOSE_CONTROLNET}`: an SDXL OpenPose "
                                                 "ControlNet (xinsir/controlnet-openpose-sdxl-1.0, renamed)\n")),
                 height=480),
            *with_drive_photo(), *predictor(("drive_crop", "faces"), **canvas, style=OPENPOSE_STYLE),
            *pulid_nodes(4),
            Node("openpose_controlnet", "ControlNetLoader", 5, widgets={"control_net_name": OPENPOSE_CONTROLNET}),
            Node("openpose", "ControlNetApplyAdvanced", 5, links={
                **text, "control_net": ("openpose_controlnet", "CONTROL_NET"), "image": ("predictor", "control_image")},
                widgets={"strength": 0.6, "start_percent": 0.0, "end_percent": 1.0}, title="Apply OpenPose ControlNet"),
            *pulid_tail(6, ("openpose", "positive"), ("openpose", "negative")),
        ], groups={"PuLID": pulid_group, "Pose": pose, "OpenPose": ["openpose_controlnet", "openpose"]}),
        Workflow("ecomid_portrait", [
            note("note", 0, note_text("EcomID portrait from one photo", "EcomID: PuLID v1's ID attention in the UNet, "
                                      "and its IdentityNet, which reads InstantID's 16 ArcFace tokens and follows the "
                                      "reference's 5 face keypoints.", ECOMID_NOTE), height=440),
            *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
            crop("reference_crop", ("reference", "IMAGE")),
            *keypoints("keypoints", 3, 1024, faces=("reference_crop", "faces")),
            *ecomid_nodes(("keypoints", "keypoints_image")), *ecomid_tail(),
        ], groups={"EcomID": ecomid_group}),
        Workflow("ecomid_pose_from_drive", [
            note("note", 0, note_text("EcomID, posed like a drive photo", "The Landmark Predictor keeps the "
                                      "reference's face shape and takes the pose and expression from the drive "
                                      "photo; its landmarks give IdentityNet's 5 keypoints.", ECOMID_NOTE),
                 height=440),
            *with_drive_photo(), *predictor(("drive_crop", "faces"), **canvas),
            *keypoints("keypoints", 3, 1024, landmarks=("predictor", "landmarks")),
            *ecomid_nodes(("keypoints", "keypoints_image")), *ecomid_tail(),
        ], groups={"EcomID": ecomid_group, "Pose": pose + ["keypoints", "keypoints_preview"]}),
    ]


def describe():
    applied = {"model": ("apply", "model"), "positive": ("apply", "positive"), "negative": ("apply", "negative")}
    identity_group = ["clip_vision", "facesnap", "apply"]
    workflows = []

    workflows.append(Workflow("facesnap_portrait", [
        note("note", 0, note_text("Portrait from one photo", "Identity and pose come from the reference photo; "
                                  "the prompt decides everything else."), height=300),
        *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
        crop("reference_crop", ("reference", "IMAGE")),
        Node("landmarks", "FaceSnapDrawLandmarks", 3, links={"faces": ("reference_crop", "faces")},
             widgets={"frame": "crop", "width": 1024, "height": 1024}),
        Node("preview", "PreviewImage", 3, links={"images": ("landmarks", "control_image")}, title="Landmarks"),
        *facesnap_loaders(), apply_facesnap(("landmarks", "control_image"), ("reference_crop", "faces")),
        *sdxl_tail(5, **applied),
    ], groups={"Identity": identity_group}))

    workflows.append(Workflow("facesnap_pose_from_drive", [
        note("note", 0, note_text("Pose and expression from a drive photo", "The Landmark Predictor keeps the "
                                  "reference's face shape and takes only pose and expression from the drive photo, "
                                  "so the drive person's features do not leak into the portrait."), height=300),
        *with_drive_photo(), *predictor(("drive_crop", "faces")),
        *facesnap_loaders(), apply_facesnap(("predictor", "control_image"), ("reference_crop", "faces")),
        *sdxl_tail(5, **applied),
    ], groups={"Identity": identity_group, "Landmark Predictor": ["predictor", "preview"]}))

    workflows.append(Workflow("facesnap_manual_pose", [
        note("note", 0, note_text("Manual yaw, pitch and roll", "No drive photo: set the head angles in degrees on "
                                  "the Landmark Predictor (yaw turns left/right, pitch nods, roll tilts)."),
             height=300),
        *sdxl_head(), analyzer(), photo("reference", "reference.png", "Reference photo"),
        crop("reference_crop", ("reference", "IMAGE")), morphable_model(),
        *predictor(None, yaw=30.0, pitch=-5.0, roll=0.0),
        *facesnap_loaders(), apply_facesnap(("predictor", "control_image"), ("reference_crop", "faces")),
        *sdxl_tail(5, **applied),
    ], groups={"Identity": identity_group, "Landmark Predictor": ["predictor", "preview"]}))

    workflows.append(Workflow("facesnap_diffpc_render", [
        note("note", 0, note_text("Diff-PC style: 3D render control and ID-Injector", "The predicted 3D face is "
                                  "rendered in grey and fed to FFRNet instead of the landmark drawing, as in Diff-PC, "
                                  "and the ID-Injector adds the identity in the UNet decoder. It needs FaceSnap "
                                  "weights with ID-Injector heads; weights trained on landmark drawings follow the "
                                  "render only loosely."), height=320),
        *with_drive_photo(),
        *predictor(("drive_crop", "faces"), output="render"),
        *facesnap_loaders(), *identity_nodes(),
        Node("injector", "DiffPCIDInjector", 5, links={"model": ("checkpoint", "MODEL"),
                                                       "facesnap_model": ("facesnap", "facesnap_model")}),
        apply_identity(("predictor", "render")),
        *sdxl_tail(6, ("injector", "model"), ("apply_identity", "positive"), ("apply_identity", "negative")),
    ], groups={"Identity": ["clip_vision", "facesnap", "encode", "mixer"],
               "Landmark Predictor": ["predictor", "preview"]}))

    references = ["reference.png", "reference_2.png", "reference_3.png"]
    several = [
        note("note", 0, note_text("Several photos of one person", "The Facial Attribute Mixer fuses 1 to 8 reference "
                                  "faces into one identity, which is also saved to "
                                  "models/facesnap_identities/person.safetensors: next time FaceSnap Load Identity "
                                  "brings the person back without the photos. The pose comes from the first photo. "
                                  "FaceSnap weights without ID-Injector heads: bypass Diff-PC ID-Injector."),
             height=340),
        *sdxl_head(), analyzer(col=2),
        *(photo(f"reference_{i}", name, f"Reference photo {i + 1}") for i, name in enumerate(references)),
        Node("batch_1", "ImageBatch", 2,
             links={"image1": ("reference_0", "IMAGE"), "image2": ("reference_1", "IMAGE")}),
        Node("batch_2", "ImageBatch", 2, links={"image1": ("batch_1", "IMAGE"), "image2": ("reference_2", "IMAGE")}),
        crop("reference_crop", ("batch_2", "IMAGE"), title="Reference faces"),
        crop("pose_crop", ("reference_0", "IMAGE"), col=3, title="Pose from photo 1"),
        Node("landmarks", "FaceSnapDrawLandmarks", 3, links={"faces": ("pose_crop", "faces")},
             widgets={"frame": "crop", "width": 1024, "height": 1024}),
        *facesnap_loaders(), *identity_nodes(),
        Node("save_identity", "FaceSnapSaveIdentity", 4, links={"identity": ("mixer", "identity")},
             widgets={"name": "person"}),
        Node("injector", "DiffPCIDInjector", 5, links={"model": ("checkpoint", "MODEL"),
                                                       "facesnap_model": ("facesnap", "facesnap_model")}),
        apply_identity(("landmarks", "control_image")),
        *sdxl_tail(6, ("injector", "model"), ("apply_identity", "positive"), ("apply_identity", "negative")),
    ]
    workflows.append(Workflow("facesnap_multi_reference", several, groups={
        "One person": [f"reference_{i}" for i in range(3)],
        "Identity": ["clip_vision", "facesnap", "encode", "mixer", "save_identity"]}))
    return workflows + describe_instantid() + describe_openpose() + describe_pulid()


def object_info_with_stand_ins():
    """/object_info of the pinned ComfyUI with this pack, while the workflows' model files exist (as stand-ins).
    Only nodes.py's core nodes are loaded (no comfy_extras), which is all the workflows may use."""
    import nodes

    from comfyui_facesnap.devkit.comfy_host import ComfyHost
    from comfyui_facesnap.devkit.ui_workflow import object_info
    from comfyui_facesnap.devkit.workflow_files import stand_in_models

    work = pathlib.Path(tempfile.mkdtemp(prefix="facesnap-build-"))
    ComfyHost(PACK_ROOT, work)
    with stand_in_models(work / "models"):
        return object_info(nodes.NODE_CLASS_MAPPINGS)


def main() -> int:
    pack_import.boot_comfyui(cpu=True)
    info = object_info_with_stand_ins()
    for workflow in describe():
        path = WORKFLOWS_DIR / f"{workflow.name}.json"
        path.write_text(json.dumps(build(workflow, info), indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
