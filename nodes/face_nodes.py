"""Face analysis nodes: load an analyzer, crop faces, draw 72-point landmark control images."""

from __future__ import annotations

from comfy_api.latest import io

from ..models.face_analysis import BACKENDS, load_analyzer
from ..models.face_analysis.dlib_backend import DETECTORS
from ..models.face_analysis.insightface_backend import PROVIDERS
from ..models.face_analysis.landmark_views import FRAMES, faces_to_landmarks, render_landmarks
from ..models.face_analysis.select import NO_FACE_POLICIES, SELECTIONS, crop_faces
from .errors import node_error, reports_errors
from .image_tensors import to_image_tensor, to_rgb_uint8
from .model_paths import folder_candidates
from .socket_types import FaceAnalyzer, Faces, Landmarks

CATEGORY = "FaceSnap/Face"
# Loaded analyzers, keyed by their settings, so a graph that runs again does not reload the models.
_ANALYZER_CACHE: dict[tuple, object] = {}


def cached_analyzer(backend: str, provider: str, detector: str):
    roots = tuple(folder_candidates("insightface")) if backend == "insightface" else ()
    key = (backend, provider if backend == "insightface" else "CPU", detector if backend == "dlib" else "", roots)
    if key not in _ANALYZER_CACHE:
        _ANALYZER_CACHE[key] = load_analyzer(backend, insightface_root=list(roots), provider=provider,
                                             detector=detector)
    return _ANALYZER_CACHE[key]


class FaceAnalyzerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapFaceAnalyzerLoader",
            display_name="FaceSnap Face Analyzer Loader",
            category=CATEGORY,
            description="Loads a face detector with landmarks and identity features. dlib needs no download; "
                        "insightface uses antelopev2 from models/insightface/models/antelopev2 (as InstantID). "
                        "Both models are licensed for non-commercial use only.",
            inputs=[
                io.Combo.Input("backend", options=list(BACKENDS), default="dlib",
                               tooltip="insightface: antelopev2 (SCRFD, ArcFace, 68 3D landmarks, pose). "
                                       "dlib: HOG/CNN detector, 68 landmarks, 128-D descriptor, no download."),
                io.Combo.Input("provider", options=list(PROVIDERS), default="CPU",
                               tooltip="Where insightface runs. CUDA falls back to CPU when onnxruntime-gpu is "
                                       "missing. dlib always runs on the CPU."),
                io.Combo.Input("dlib_detector", options=list(DETECTORS), default="hog",
                               tooltip="dlib only. hog: fast, frontal faces. cnn: MMOD CNN, finds turned faces, "
                                       "about 20x slower on a CPU."),
            ],
            outputs=[FaceAnalyzer.Output(display_name="analyzer")],
        )

    @classmethod
    @reports_errors
    def execute(cls, backend: str, provider: str, dlib_detector: str) -> io.NodeOutput:
        return io.NodeOutput(cached_analyzer(backend, provider, dlib_detector))


class FaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapFaceCrop",
            display_name="FaceSnap Face Crop",
            category=CATEGORY,
            description="Finds faces in each image of a batch and cuts square crops around them. Crops reaching past "
                        "the image border are padded with black. With 'if no face' = skip, a faceless image is "
                        "passed through whole (letterboxed) and its faces entry is an empty placeholder.",
            inputs=[
                FaceAnalyzer.Input("analyzer", tooltip="A face analyzer from FaceSnap Face Analyzer Loader."),
                io.Image.Input("image", tooltip="The photos (a batch is fine). Grayscale and RGBA are accepted."),
                io.Combo.Input("selection", options=list(SELECTIONS), default="largest",
                               tooltip="largest: the biggest face of each image. index: the face at 'index' by "
                                       "size (0 = largest). left_to_right: the face at 'index' counted from the "
                                       "left. all: every face, left to right (the batch grows)."),
                io.Int.Input("index", default=0, min=0, max=255,
                             tooltip="Which face, for the 'index' and 'left_to_right' selections."),
                io.Int.Input("size", default=512, min=64, max=4096, step=8,
                             tooltip="Side of the square crops in pixels."),
                io.Float.Input("margin", default=0.5, min=0.0, max=4.0, step=0.05,
                               tooltip="Space added on each side of the face box, as a fraction of the face size."),
                io.Combo.Input("if_no_face", options=list(NO_FACE_POLICIES), default="error",
                               tooltip="error: stop and name the faceless image. skip: pass that image through "
                                       "whole, resized, with no face recorded."),
            ],
            outputs=[io.Image.Output(display_name="crops"), Faces.Output(display_name="faces")],
        )

    @classmethod
    @reports_errors
    def execute(cls, analyzer, image, selection: str, index: int, size: int, margin: float,
                if_no_face: str) -> io.NodeOutput:
        crops, faces = crop_faces(analyzer, to_rgb_uint8(image), selection, index, size, margin, if_no_face)
        return io.NodeOutput(to_image_tensor(crops), faces)


class DrawLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapDrawLandmarks",
            display_name="FaceSnap Draw Landmarks",
            category=CATEGORY,
            description="Draws the pack's 72-point landmarks as the FFRNet control image (fixed colours on black, "
                        "pixel-exact and deterministic) and as a preview over the photo. Works on batches; all outputs "
                        "take the first item's canvas size (or width x height), points are scaled to it.",
            inputs=[
                Faces.Input("faces", optional=True, tooltip="Faces from FaceSnap Face Crop (give this or landmarks)."),
                Landmarks.Input("landmarks", optional=True,
                                tooltip="72-point landmarks, e.g. from a landmark predictor (used when no faces)."),
                io.Combo.Input("frame", options=list(FRAMES), default="crop", optional=True,
                               tooltip="For faces: draw in the crop's frame (crop-sized canvas) or in the source "
                                       "image's frame (image-sized canvas)."),
                io.Int.Input("width", default=0, min=0, max=8192, step=8, optional=True,
                             tooltip="Canvas width; 0 = the crop or source size. Set width and height together."),
                io.Int.Input("height", default=0, min=0, max=8192, step=8, optional=True,
                             tooltip="Canvas height; 0 = the crop or source size. Set width and height together."),
            ],
            outputs=[io.Image.Output(display_name="control_image"), io.Image.Output(display_name="overlay")],
        )

    @classmethod
    @reports_errors
    def execute(cls, faces=None, landmarks=None, frame: str = "crop", width: int = 0,
                height: int = 0) -> io.NodeOutput:
        if faces is None and landmarks is None:
            raise node_error(cls.define_schema().node_id, "nothing to draw: neither faces nor landmarks is connected",
                             "connect the faces output of FaceSnap Face Crop, or a landmarks output")
        landmark_set = faces_to_landmarks(faces, frame) if faces is not None else landmarks
        controls, overlays = render_landmarks(landmark_set, width, height)
        return io.NodeOutput(to_image_tensor(controls), to_image_tensor(overlays))


NODES = [FaceAnalyzerLoader, FaceCrop, DrawLandmarks]
