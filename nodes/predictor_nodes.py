"""3DMM nodes: load a morphable face model, and predict landmarks with the reference's face shape (FaceSnap §2.1)
plus the monochrome 3D face render Diff-PC uses as its control (Diff-PC §4.2)."""

from __future__ import annotations

import dataclasses
import os

from comfy_api.latest import io

from ..models.errors import InvalidInputError, ModelFileError
from ..models.face3d.ict_download import ICT_DOWNLOAD_BYTES, download_ict_facekit
from ..models.face3d.landmark_predictor import (
    FRAMES,
    POSE_SOURCES,
    PredictorSettings,
    draw_prediction,
    predict_from_faces,
)
from ..models.face3d.morphable_model import ICT_FILE_NAME, ict_fetch_hint, load_ict_npz
from ..models.face_analysis.drawings import FACESNAP72, STYLES, style_tooltip
from .errors import reports_errors
from .image_tensors import MEMORY_LIMIT_NOTE, ensure_memory, gray_to_image_tensor, image_bytes, to_image_tensor
from .model_cache import LoadedModels, file_identity
from .model_paths import default_folder, file_options, resolve_model_file, unsafe_name_reason
from .reports import show_report
from .socket_types import Faces, Landmarks, MorphableModel

CATEGORY = "FaceSnap/3DMM"
MODEL_KINDS = ("ICT-FaceKit", "FLAME")
FLAME_FILE, EMBEDDING_FILE, NO_DECA = "generic_model.pkl", "landmark_embedding.npy", "none"
# input -> extensions its dropdown lists from the 3dmm folders
FILE_INPUTS = {"ict_file": (".npz",), "flame_file": (".pkl",), "flame_landmarks": (".npy",), "deca_file": (".tar",)}
RENDER_BYTES_PER_PIXEL = 4  # each render as float32 before it becomes an IMAGE
# The torch rasterizer's buffers for one render (depth, face ids, weights, candidate pixels): measured 1.47 GB peak
# for a 4096 x 4096 render of a face covering a third of the canvas.
RASTER_BYTES_PER_PIXEL = 88
_MODELS = LoadedModels("3D face models")


def _deca_name(deca_file: str) -> str | None:
    """The DECA file to load, or None. Workflows saved before deca_file was a dropdown hold "" for none."""
    return None if deca_file.strip() in ("", NO_DECA) else deca_file


def download_ict_model(path: str) -> None:
    """Download and convert ICT-FaceKit into ``path``, with a progress bar on the console and on the node."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(ICT_DOWNLOAD_BYTES)
    download_ict_facekit(path, on_progress=bar.update_absolute)


def _ict_path(ict_file: str, download_if_missing: bool) -> str:
    """The ICT-FaceKit file, downloaded first when it is the pack's default name, missing and downloads are on.
    The download goes only to ComfyUI's default 3dmm folder, under the fixed name ``ICT_FILE_NAME``."""
    target = os.path.join(default_folder("3dmm"), ICT_FILE_NAME)
    try:
        return resolve_model_file("ict_file", "3dmm", ict_file, ict_fetch_hint(target))
    except ModelFileError:
        if not (download_if_missing and ict_file == ICT_FILE_NAME):
            raise
    download_ict_model(target)
    return target


def model_files(kind: str, ict_file: str, flame_file: str, flame_landmarks: str, deca_file: str,
                download_if_missing: bool = False) -> list[str]:
    """The files these loader settings read, resolved inside the 3dmm model folders (downloading ICT-FaceKit first
    when allowed)."""
    from ..models.face3d.deca_encoder import DECA_HINT
    from ..models.face3d.flame_loader import EMBEDDING_HINT, FLAME_HINT

    deca = _deca_name(deca_file)
    if deca is not None and kind != "FLAME":
        raise InvalidInputError(f"deca_file is set ({deca_file}) but DECA regresses FLAME parameters, not {kind}",
                                "set model to FLAME, or set deca_file to none to fit landmarks")
    if kind == "ICT-FaceKit":
        files = [_ict_path(ict_file, download_if_missing)]
    else:
        files = [resolve_model_file("flame_file", "3dmm", flame_file, FLAME_HINT),
                 resolve_model_file("flame_landmarks", "3dmm", flame_landmarks, EMBEDDING_HINT)]
    if deca is not None:
        files.append(resolve_model_file("deca_file", "3dmm", deca, DECA_HINT))
    return files


def load_model(kind: str, ict_file: str, flame_file: str, flame_landmarks: str, download_if_missing: bool = False,
               deca_file: str = ""):
    """The morphable model for these loader settings, shared while ComfyUI holds it (see nodes/model_cache.py)."""
    files = model_files(kind, ict_file, flame_file, flame_landmarks, deca_file, download_if_missing)
    return _MODELS.get(kind, files, lambda: _read_model(kind, files))


def _read_model(kind: str, files: list[str]):
    if kind == "ICT-FaceKit":
        return load_ict_npz(files[0])
    from comfy.model_management import throw_exception_if_processing_interrupted as interrupt

    from ..models.face3d.flame_loader import flame_morphable_model

    model = flame_morphable_model(files[0], files[1], interrupt=interrupt)
    if len(files) == 3:
        from ..models.face3d.deca_encoder import load_deca_encoder

        model = dataclasses.replace(model, face_regressor=load_deca_encoder(files[2], interrupt=interrupt))
    return model


class FaceSnap3DMMLoader(io.ComfyNode):
    RESOLVED_INPUTS = tuple(FILE_INPUTS)  # checked by resolve_model_file, not against the dropdown

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnap3DMMLoader",
            display_name="FaceSnap 3DMM Loader",
            category=CATEGORY,
            description="Loads a 3D morphable face model from ComfyUI/models/3dmm (or the 3dmm paths of "
                        "extra_model_paths.yaml). ICT-FaceKit (MIT licence): "
                        f"{ICT_FILE_NAME}, downloaded (about 405 MB) and converted once from the "
                        "ICT-VGL/ICT-FaceKit repository when missing, or by hand with scripts/convert_ict_facekit.py. "
                        "FLAME (user-supplied, licence restricts use): "
                        "generic_model.pkl plus DECA's landmark_embedding.npy, read without running pickled code; "
                        "optionally DECA's deca_model.tar to regress FLAME parameters from the face image. "
                        "Only files in the 3dmm model folders can be chosen.",
            inputs=[
                io.Combo.Input("model", options=list(MODEL_KINDS), default="ICT-FaceKit",
                               tooltip="ICT-FaceKit: 100 identity modes, 53 ARKit expressions, free for any use. "
                                       "FLAME: the model behind DECA/SMIRK; you must download it yourself."),
                io.Combo.Input("ict_file", options=file_options("3dmm", FILE_INPUTS["ict_file"], (ICT_FILE_NAME,)),
                               default=ICT_FILE_NAME,
                               tooltip=f"The converted ICT-FaceKit model in models/3dmm. {ICT_FILE_NAME} is listed "
                                       "even before it exists: download_if_missing fetches it."),
                io.Combo.Input("flame_file", options=file_options("3dmm", FILE_INPUTS["flame_file"], (FLAME_FILE,)),
                               default=FLAME_FILE,
                               tooltip="FLAME 2020/2023 model file in models/3dmm (only for model = FLAME)."),
                io.Combo.Input("flame_landmarks", default=EMBEDDING_FILE,
                               options=file_options("3dmm", FILE_INPUTS["flame_landmarks"], (EMBEDDING_FILE,)),
                               tooltip="DECA/SMIRK landmark embedding in models/3dmm (only for model = FLAME)."),
                io.Boolean.Input("download_if_missing", default=True, optional=True,
                                 tooltip=f"ICT-FaceKit only: when {ICT_FILE_NAME} is not in models/3dmm, download the "
                                         "upstream model from GitHub once (about 405 MB, with a progress bar) and "
                                         "convert it there. Off: report the missing file instead."),
                io.Combo.Input("deca_file", options=file_options("3dmm", FILE_INPUTS["deca_file"], (NO_DECA,)),
                               default=NO_DECA, optional=True,
                               tooltip="FLAME only, optional: DECA's deca_model.tar in models/3dmm (MPI "
                                       "non-commercial licence). When set, the predictor regresses shape, expression, "
                                       "jaw and head pose from each face image with DECA's encoder instead of "
                                       "fitting landmarks. none: fit landmarks."),
            ],
            outputs=[MorphableModel.Output(display_name="3dmm")],
        )

    @classmethod
    def fingerprint_inputs(cls, model=None, ict_file="", flame_file="", flame_landmarks="", deca_file=NO_DECA,
                           **_):
        """ComfyUI runs the node again when this changes: so an edited or replaced model file is loaded again."""
        try:
            return tuple(file_identity(f) for f in model_files(model, ict_file, flame_file, flame_landmarks,
                                                                deca_file))
        except Exception as err:  # the node itself reports the problem when it runs
            return repr(err)

    @classmethod
    def validate_inputs(cls, ict_file=None, flame_file=None, flame_landmarks=None, deca_file=None):
        """Runs in ComfyUI's prompt validation instead of its dropdown check for these inputs (which would refuse a
        not yet downloaded or legacy value): refuses paths from their text alone. The files are resolved when the
        node runs, for the model kind chosen."""
        values = {"ict_file": ict_file, "flame_file": flame_file, "flame_landmarks": flame_landmarks,
                  "deca_file": None if deca_file is None or _deca_name(deca_file) is None else deca_file}
        for name, value in values.items():
            reason = unsafe_name_reason(value) if value else None  # empty: reported when the model needs it
            if reason is not None:
                return f"{name} {value!r} {reason}: choose a file of the 3dmm model folders from the dropdown"
        return True

    @classmethod
    @reports_errors
    def execute(cls, model: str, ict_file: str, flame_file: str, flame_landmarks: str,
                download_if_missing: bool = True, deca_file: str = NO_DECA) -> io.NodeOutput:
        return io.NodeOutput(load_model(model, ict_file, flame_file, flame_landmarks, download_if_missing, deca_file))


class FaceSnapLandmarkPredictor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapLandmarkPredictor",
            display_name="FaceSnap Landmark Predictor",
            category=CATEGORY,
            description="Fits the 3D face model to the reference faces (one person; several photos sharpen the face "
                        "shape) and to each drive face, then combines the reference's face shape with the drive's "
                        "pose and expression (or a pose you choose). Outputs the 72-point landmarks, their control "
                        "image (FFRNet's drawing, or another control drawing: style), the monochrome 3D face render "
                        "(Diff-PC control), an overlay preview and a report of what was adjusted (also shown on the "
                        "node).",
            inputs=[
                MorphableModel.Input("model", tooltip="A face model from FaceSnap 3DMM Loader."),
                Faces.Input("reference", tooltip="Faces of the person whose face shape to keep (FaceSnap Face Crop). "
                                                 "All of them are treated as the same person."),
                Faces.Input("drive", optional=True,
                            tooltip="Faces that give the pose and expression; one prediction per face. Optional "
                                    "when pose source is manual."),
                io.Combo.Input("pose_source", options=list(POSE_SOURCES), default="drive",
                               tooltip="drive: pose and expression from each drive face; a drive image without a "
                                       "face (Face Crop's 'skip') takes the manual yaw/pitch/roll below and the "
                                       "reference's expression, and the report says so. manual: the yaw/pitch/roll "
                                       "below for one prediction."),
                io.Float.Input("yaw", default=0.0, min=-90.0, max=90.0, step=1.0,
                               tooltip="Manual pose: degrees, positive turns the nose to the image right. "
                                       "Clamped to ±75° (the report says so)."),
                io.Float.Input("pitch", default=0.0, min=-90.0, max=90.0, step=1.0,
                               tooltip="Manual pose: degrees, positive tilts the face up. Clamped to ±45°."),
                io.Float.Input("roll", default=0.0, min=-90.0, max=90.0, step=1.0,
                               tooltip="Manual pose: degrees, positive tilts the head clockwise in the image. "
                                       "Clamped to ±60°."),
                io.Boolean.Input("keep_reference_expression", default=False,
                                 tooltip="Use the reference's expression instead of the drive's."),
                io.Float.Input("expression_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Scales the expression: 0 = neutral face, 1 = as detected."),
                io.Boolean.Input("neutral_reference", default=False,
                                 tooltip="The reference photos show a neutral face: explain them by face shape only. "
                                         "Gives a more faithful shape when true."),
                io.Combo.Input("frame", options=list(FRAMES), default="drive crop",
                               tooltip="drive crop / drive image: landmarks where the drive face is, in the crop's "
                                       "or the full photo's pixels. canvas: centred on a width x height canvas "
                                       "(always used for a manual pose without drive faces)."),
                io.Int.Input("width", default=1024, min=64, max=4096, step=8,
                             tooltip=f"Canvas width for frame = canvas. {MEMORY_LIMIT_NOTE}"),
                io.Int.Input("height", default=1024, min=64, max=4096, step=8,
                             tooltip="Canvas height for frame = canvas."),
                io.Combo.Input("style", options=list(STYLES), default=FACESNAP72, optional=True,
                               tooltip=f"How control_image and overlay are drawn. {style_tooltip()}"),
            ],
            outputs=[
                Landmarks.Output(display_name="landmarks"),
                io.Image.Output(display_name="control_image"),
                io.Image.Output(display_name="render"),
                io.Image.Output(display_name="overlay"),
                io.String.Output(display_name="report",
                                 tooltip="What was adjusted: clamped angles, drive images without a face (which "
                                         "took the manual pose), references without a face. Empty when nothing."),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, reference, pose_source: str, yaw: float, pitch: float, roll: float,
                keep_reference_expression: bool, expression_strength: float, neutral_reference: bool, frame: str,
                width: int, height: int, drive=None, style: str = FACESNAP72) -> io.NodeOutput:
        settings = PredictorSettings(pose_source, (yaw, pitch, roll), keep_reference_expression, expression_strength,
                                     neutral_reference, frame, (height, width))
        prediction = predict_from_faces(model, reference, drive, settings)
        count, (out_h, out_w) = len(prediction.landmarks), prediction.landmarks.canvas_sizes[0]
        lower = "width and height (frame = canvas)" if frame == "canvas" else \
            "the number of drive faces, or use frame = drive crop with a smaller Face Crop size"
        ensure_memory(image_bytes(count, out_h, out_w, outputs=3) + count * out_h * out_w * RENDER_BYTES_PER_PIXEL
                      + out_h * out_w * RASTER_BYTES_PER_PIXEL, f"{count} prediction(s) of {out_w} x {out_h}", lower)
        controls, renders, overlays = draw_prediction(model, prediction, style)
        report = show_report(prediction.warnings)
        return io.NodeOutput(prediction.landmarks, to_image_tensor(controls), gray_to_image_tensor(renders),
                             to_image_tensor(overlays), report)


NODES = [FaceSnap3DMMLoader, FaceSnapLandmarkPredictor]
