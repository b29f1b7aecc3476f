"""Face analysis nodes: load an analyzer, crop faces, and draw control images (drawings.py) from faces or landmarks."""

from __future__ import annotations

from comfy_api.latest import io

from ..models.face_analysis import BACKENDS, analyzer_files, load_analyzer
from ..models.face_analysis.dlib_backend import DETECTORS
from ..models.face_analysis.drawings import FACESNAP72, KPS5, STYLES, drawing, style_tooltip
from ..models.face_analysis.insightface_backend import PROVIDERS
from ..models.face_analysis.landmark_views import FRAMES, drawing_points, output_size, render
from ..models.face_analysis.select import NO_FACE_POLICIES, SELECTIONS, cut_crops, plan_crops
from .errors import node_error, reports_errors
from .image_tensors import MEMORY_LIMIT_NOTE, ensure_memory, image_bytes, to_image_tensor, to_rgb_uint8
from .model_cache import LoadedModels, file_identity
from .model_paths import folder_candidates
from .reports import show_report
from .socket_types import FaceAnalyzer, Faces, Landmarks

CATEGORY = "FaceSnap/Face"
_ANALYZERS = LoadedModels("face analyzers")


def _roots(backend: str) -> tuple[str, ...]:
    return tuple(folder_candidates("insightface")) if backend == "insightface" else ()


def cached_analyzer(backend: str, provider: str, detector: str):
    """The analyzer for these settings, shared while ComfyUI holds it (see nodes/model_cache.py)."""
    roots = _roots(backend)
    settings = (backend, provider if backend == "insightface" else "CPU", detector if backend == "dlib" else "", roots)
    return _ANALYZERS.get(settings, analyzer_files(backend, roots, detector),
                          lambda: load_analyzer(backend, insightface_root=list(roots), provider=provider,
                                                detector=detector))


class FaceSnapFaceAnalyzerLoader(io.ComfyNode):
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
    def fingerprint_inputs(cls, backend="dlib", provider="CPU", dlib_detector="hog", **_):
        """ComfyUI runs the node again when this changes: so edited or replaced model files are loaded again."""
        return tuple(file_identity(f) for f in analyzer_files(backend, _roots(backend), dlib_detector))

    @classmethod
    @reports_errors
    def execute(cls, backend: str, provider: str, dlib_detector: str) -> io.NodeOutput:
        return io.NodeOutput(cached_analyzer(backend, provider, dlib_detector))


class FaceSnapFaceCrop(io.ComfyNode):
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
                             tooltip=f"Side of the square crops in pixels. {MEMORY_LIMIT_NOTE}"),
                io.Float.Input("margin", default=0.5, min=0.0, max=4.0, step=0.05,
                               tooltip="Space added on each side of the face box, as a fraction of the face size."),
                io.Combo.Input("if_no_face", options=list(NO_FACE_POLICIES), default="error",
                               tooltip="error: stop and name the faceless image. skip: pass that image through "
                                       "whole, resized, with no face recorded."),
            ],
            outputs=[io.Image.Output(display_name="crops"), Faces.Output(display_name="faces"),
                     io.String.Output(display_name="report",
                                      tooltip="The images passed through without a face (if no face = skip); also "
                                              "shown on the node. Empty when every image had its face.")],
        )

    @classmethod
    @reports_errors
    def execute(cls, analyzer, image, selection: str, index: int, size: int, margin: float,
                if_no_face: str) -> io.NodeOutput:
        plan = plan_crops(analyzer, to_rgb_uint8(image), selection, index, size, margin, if_no_face)
        ensure_memory(image_bytes(len(plan), size, size), f"{len(plan)} crop(s) of {size} x {size} pixels",
                      "size, or choose fewer faces (selection)")
        crops, faces = cut_crops(plan)
        return io.NodeOutput(to_image_tensor(crops), faces, show_report(plan.warnings))


def _source_inputs() -> list:
    """The inputs Draw Landmarks and Draw Keypoints share: where the points come from and the canvas size."""
    return [
        Faces.Input("faces", optional=True, tooltip="Faces from FaceSnap Face Crop (give this or landmarks)."),
        Landmarks.Input("landmarks", optional=True,
                        tooltip="72-point landmarks, e.g. from FaceSnap Landmark Predictor (used when no faces are "
                                "connected)."),
        io.Combo.Input("frame", options=list(FRAMES), default="crop", optional=True,
                       tooltip="For faces: draw in the crop's frame (crop-sized canvas) or in the source image's "
                               "frame (image-sized canvas)."),
        io.Int.Input("width", default=0, min=0, max=8192, step=8, optional=True,
                     tooltip="Canvas width; 0 = the crop or source size. Set width and height together (the "
                             f"output's size, or at least its aspect ratio). {MEMORY_LIMIT_NOTE}"),
        io.Int.Input("height", default=0, min=0, max=8192, step=8, optional=True,
                     tooltip="Canvas height; 0 = the crop or source size. Set width and height together."),
    ]


def draw(node_id: str, style: str, faces=None, landmarks=None, frame: str = "crop", width: int = 0,
         height: int = 0, images: str = "control image(s)") -> io.NodeOutput:
    """Control images (called ``images`` in messages) and overlays of the drawing ``style``, from faces or else
    landmarks."""
    if faces is None and landmarks is None:
        raise node_error(node_id, "nothing to draw: neither faces nor landmarks is connected",
                         "connect the faces output of FaceSnap Face Crop, or a landmarks output")
    chosen = drawing(style)
    view = drawing_points(chosen, faces, landmarks, frame)
    out_h, out_w = output_size(view, width, height)
    ensure_memory(image_bytes(len(view.points), out_h, out_w, outputs=2),
                  f"{len(view.points)} {images} and overlay(s) of {out_w} x {out_h}",
                  "width and height (0 keeps the crop or source size), or the size or number of faces upstream")
    controls, overlays = render(view, chosen, width, height)
    return io.NodeOutput(to_image_tensor(controls), to_image_tensor(overlays))


class FaceSnapDrawLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapDrawLandmarks",
            display_name="FaceSnap Draw Landmarks",
            category=CATEGORY,
            description="Draws landmarks as a control image (pixel-exact and deterministic) and as a preview over "
                        "the photo, in one of the pack's control drawings (style): FFRNet's 72-point drawing, the "
                        "OpenPose or DWPose face drawings that those ControlNets read, or InstantID's 5 keypoints. "
                        "Works on batches; all outputs take the first item's canvas size (or width x height), "
                        "points are scaled to it and drawn at that size.",
            inputs=[*_source_inputs(),
                    io.Combo.Input("style", options=list(STYLES), default=FACESNAP72, optional=True,
                                   tooltip=style_tooltip())],
            outputs=[io.Image.Output(display_name="control_image"), io.Image.Output(display_name="overlay")],
        )

    @classmethod
    @reports_errors
    def execute(cls, faces=None, landmarks=None, frame: str = "crop", width: int = 0, height: int = 0,
                style: str = FACESNAP72) -> io.NodeOutput:
        return draw("FaceSnapDrawLandmarks", style, faces, landmarks, frame, width, height)


class FaceSnapDrawKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapDrawKeypoints",
            display_name="FaceSnap Draw Keypoints (InstantID)",
            category=CATEGORY,
            description="Draws InstantID's 5-keypoint control image exactly as InstantID's draw_kps (eyes, nose "
                        "tip, mouth corners on black; what InstantID's and EcomID's IdentityNet read), and a preview "
                        "over the photo: FaceSnap Draw Landmarks with style = instantid_kps5. From faces "
                        "(insightface's own keypoints; dlib's from its 68 points) or from 72-point landmarks, e.g. "
                        "the Landmark Predictor's (a drive photo's pose or manual angles).",
            inputs=_source_inputs(),
            outputs=[io.Image.Output(display_name="keypoints_image"), io.Image.Output(display_name="overlay")],
        )

    @classmethod
    @reports_errors
    def execute(cls, faces=None, landmarks=None, frame: str = "crop", width: int = 0, height: int = 0) -> io.NodeOutput:
        return draw("FaceSnapDrawKeypoints", KPS5, faces, landmarks, frame, width, height, "keypoint image(s)")


NODES = [FaceSnapFaceAnalyzerLoader, FaceSnapFaceCrop, FaceSnapDrawLandmarks, FaceSnapDrawKeypoints]
