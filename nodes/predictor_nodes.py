"""3DMM nodes: load a morphable face model, and predict landmarks with the reference's face shape (FaceSnap §2.1)
plus the monochrome 3D face render Diff-PC uses as its control (Diff-PC §4.2)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from comfy_api.latest import io

from ..models.errors import InvalidInputError, ModelFileError, NoFaceError
from ..models.face_analysis.align import box_to_crop_matrix
from ..models.face_analysis.landmark_views import faces_to_landmarks
from ..models.face3d.face_fitting import FitOptions
from ..models.face3d.ict_download import ICT_DOWNLOAD_BYTES, download_ict_facekit
from ..models.face3d.landmark_predictor import PredictOptions, fit_references_and_drives, predict
from ..models.face_analysis.landmarks72 import draw_control_image
from ..models.face3d.morphable_model import ICT_FILE_NAME, ict_fetch_hint, load_ict_npz
from ..models.face3d.rasterizer import render_shaded
from .errors import node_error, reports_errors
from .image_tensors import to_image_tensor
from .model_paths import folder_candidates
from .socket_types import Faces, Landmarks, MorphableModel

CATEGORY = "FaceSnap/3DMM"
MODEL_KINDS = ("ICT-FaceKit", "FLAME")
FRAMES = ("drive crop", "drive image", "canvas")
POSE_SOURCES = ("drive", "manual")
_MODEL_CACHE: dict[tuple, object] = {}


def find_model_file(name: str, hint: str) -> str:
    """The first ``name`` in the 3dmm model folders, or a ModelFileError naming the default location."""
    candidates = folder_candidates("3dmm")
    for folder in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    expected = os.path.join(candidates[0], name)
    others = f" (also searched: {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
    raise ModelFileError(f"{name} was not found at {expected}{others}", hint)


def download_ict_model(path: str) -> None:
    """Download and convert ICT-FaceKit into ``path``, with a progress bar on the console and on the node."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(ICT_DOWNLOAD_BYTES)
    download_ict_facekit(path, on_progress=bar.update_absolute)


def load_cached(kind: str, ict_file: str, flame_file: str, flame_landmarks: str, download_if_missing: bool = False,
                deca_file: str = ""):
    use_deca = deca_file.strip() not in ("", "none")
    if use_deca and kind != "FLAME":
        raise InvalidInputError(f"deca_file is set ({deca_file}) but DECA regresses FLAME parameters, not {kind}",
                                "set model to FLAME, or clear deca_file to fit landmarks")
    model = _load_model(kind, ict_file, flame_file, flame_landmarks, download_if_missing)
    if not use_deca:
        return model
    from ..models.face3d.deca_encoder import DECA_HINT, load_deca_encoder

    path = find_model_file(deca_file.strip(), DECA_HINT)
    key = (id(model), path, os.path.getmtime(path))  # the base model stays cached, so its id is never reused
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = dataclasses.replace(model, face_regressor=load_deca_encoder(path))
    return _MODEL_CACHE[key]


def _load_model(kind: str, ict_file: str, flame_file: str, flame_landmarks: str, download_if_missing: bool):
    if kind == "ICT-FaceKit":
        default_path = os.path.join(folder_candidates("3dmm")[0], ict_file)
        try:
            paths = (find_model_file(ict_file, ict_fetch_hint(default_path)),)
        except ModelFileError:
            if not download_if_missing:
                raise
            download_ict_model(default_path)
            paths = (default_path,)
    else:
        from ..models.face3d.flame_loader import EMBEDDING_HINT, FLAME_HINT

        paths = (find_model_file(flame_file, FLAME_HINT), find_model_file(flame_landmarks, EMBEDDING_HINT))
    key = (kind, *paths, *(os.path.getmtime(p) for p in paths))
    if key not in _MODEL_CACHE:
        if kind == "ICT-FaceKit":
            _MODEL_CACHE[key] = load_ict_npz(paths[0])
        else:
            from ..models.face3d.flame_loader import flame_morphable_model

            _MODEL_CACHE[key] = flame_morphable_model(*paths)
    return _MODEL_CACHE[key]


class MorphableModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnap3DMMLoader",
            display_name="FaceSnap 3DMM Loader",
            category=CATEGORY,
            description="Loads a 3D morphable face model from ComfyUI/models/3dmm. ICT-FaceKit (MIT licence): "
                        f"{ICT_FILE_NAME}, downloaded (about 405 MB) and converted once from the "
                        "ICT-VGL/ICT-FaceKit repository when missing, or by hand with scripts/convert_ict_facekit.py. "
                        "FLAME (user-supplied, licence restricts use): "
                        "generic_model.pkl plus DECA's landmark_embedding.npy, read without running pickled code; "
                        "optionally DECA's deca_model.tar to regress FLAME parameters from the face image.",
            inputs=[
                io.Combo.Input("model", options=list(MODEL_KINDS), default="ICT-FaceKit",
                               tooltip="ICT-FaceKit: 100 identity modes, 53 ARKit expressions, free for any use. "
                                       "FLAME: the model behind DECA/SMIRK; you must download it yourself."),
                io.String.Input("ict_file", default=ICT_FILE_NAME,
                                tooltip="File name of the converted ICT-FaceKit model inside models/3dmm."),
                io.String.Input("flame_file", default="generic_model.pkl",
                                tooltip="FLAME 2020/2023 model file inside models/3dmm (only for model = FLAME)."),
                io.String.Input("flame_landmarks", default="landmark_embedding.npy",
                                tooltip="DECA/SMIRK landmark embedding inside models/3dmm (only for model = FLAME)."),
                io.Boolean.Input("download_if_missing", default=True, optional=True,
                                 tooltip="ICT-FaceKit only: when ict_file is not in models/3dmm, download the "
                                         "upstream model from GitHub once (about 405 MB, with a progress bar) and "
                                         "convert it there. Off: report the missing file instead."),
                io.String.Input("deca_file", default="", optional=True,
                                tooltip="FLAME only, optional: DECA's deca_model.tar inside models/3dmm (MPI "
                                        "non-commercial licence). When set, the predictor regresses shape, expression, "
                                        "jaw and head pose from each face image with DECA's encoder instead of "
                                        "fitting landmarks. Empty: fit landmarks."),
            ],
            outputs=[MorphableModel.Output(display_name="3dmm")],
        )

    @classmethod
    @reports_errors
    def execute(cls, model: str, ict_file: str, flame_file: str, flame_landmarks: str,
                download_if_missing: bool = True, deca_file: str = "") -> io.NodeOutput:
        return io.NodeOutput(load_cached(model, ict_file, flame_file, flame_landmarks, download_if_missing, deca_file))


def _valid_rows(points: np.ndarray) -> np.ndarray:
    return np.isfinite(points).all(axis=(1, 2))


def _regressed_fits(model, reference, reference_rows: np.ndarray, drive, frame: str):
    """Reference and drive parameters from the model's face regressor (DECA); references share their mean shape."""
    from ..models.face3d.deca_encoder import regress_faces

    rows = np.nonzero(reference_rows)[0]
    ref_fit = regress_faces(model, model.face_regressor, [reference.images[i] for i in rows],
                            np.stack([reference.records[i].landmarks[:68] for i in rows]))
    ref_fit.alpha = ref_fit.alpha.mean(0, keepdim=True).expand_as(ref_fit.alpha)
    if drive is None:
        return ref_fit, None
    in_crop = frame == "drive crop" and drive.crop_boxes and drive.crop_size > 0
    matrices = [box_to_crop_matrix(box, drive.crop_size) for box in drive.crop_boxes] if in_crop else None
    return ref_fit, regress_faces(model, model.face_regressor, list(drive.images),
                                  np.stack([r.landmarks[:68] for r in drive.records]), matrices)


def _gray_to_rgb(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(images).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


class LandmarkPredictor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapLandmarkPredictor",
            display_name="FaceSnap Landmark Predictor",
            category=CATEGORY,
            description="Fits the 3D face model to the reference faces (one person; several photos sharpen the face "
                        "shape) and to each drive face, then combines the reference's face shape with the drive's "
                        "pose and expression (or a pose you choose). Outputs the 72-point landmarks, their FFRNet "
                        "control image, the monochrome 3D face render (Diff-PC control) and an overlay preview.",
            inputs=[
                MorphableModel.Input("model", tooltip="A face model from FaceSnap 3DMM Loader."),
                Faces.Input("reference", tooltip="Faces of the person whose face shape to keep (FaceSnap Face Crop). "
                                                 "All of them are treated as the same person."),
                Faces.Input("drive", optional=True,
                            tooltip="Faces that give the pose and expression; one prediction per face. Optional "
                                    "when pose source is manual."),
                io.Combo.Input("pose_source", options=list(POSE_SOURCES), default="drive",
                               tooltip="drive: pose from each drive face. manual: the yaw/pitch/roll below (also used "
                                       "when the drive image has no face)."),
                io.Float.Input("yaw", default=0.0, min=-90.0, max=90.0, step=1.0,
                               tooltip="Manual pose: degrees, positive turns the nose to the image right. "
                                       "Clamped to ±75° with a warning."),
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
                             tooltip="Canvas width for frame = canvas."),
                io.Int.Input("height", default=1024, min=64, max=4096, step=8,
                             tooltip="Canvas height for frame = canvas."),
            ],
            outputs=[
                Landmarks.Output(display_name="landmarks"),
                io.Image.Output(display_name="control_image"),
                io.Image.Output(display_name="render"),
                io.Image.Output(display_name="overlay"),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, model, reference, pose_source: str, yaw: float, pitch: float, roll: float,
                keep_reference_expression: bool, expression_strength: float, neutral_reference: bool, frame: str,
                width: int, height: int, drive=None) -> io.NodeOutput:
        node_id = cls.define_schema().node_id
        ref_points = np.stack([r.landmarks for r in reference.records]) if len(reference) else np.zeros((0, 72, 2))
        ref_rows = _valid_rows(ref_points)
        ref_points = ref_points[ref_rows]
        if len(ref_points) == 0:
            raise NoFaceError("the reference has no face", "use a reference photo with a clearly visible face")
        drive_set, manual = None, None
        if pose_source == "drive":
            if drive is None:
                raise node_error(node_id, "pose source is 'drive' but no drive faces are connected",
                                 "connect drive faces, or set pose source to manual")
            drive_set = faces_to_landmarks(drive, "crop" if frame == "drive crop" else "image")
            valid = _valid_rows(drive_set.points)
            if not valid.any():
                raise NoFaceError("no face was found in the drive image(s)",
                                  "use a drive photo with a visible face, or set pose source to manual")
            if not valid.all():
                missing = [int(i) for i in np.nonzero(~valid)[0]]
                raise NoFaceError(f"drive item(s) {missing} have no face",
                                  "remove those images, or set pose source to manual to use the yaw/pitch/roll")
        else:
            manual = torch.tensor([[yaw, pitch, roll]], dtype=torch.float32)

        if model.face_regressor is not None:
            ref_fit, drv_fit = _regressed_fits(model, reference, ref_rows, None if drive_set is None else drive, frame)
        else:
            ref_fit, drv_fit = fit_references_and_drives(
                model, torch.from_numpy(ref_points), torch.zeros(len(ref_points), dtype=torch.long),
                None if drive_set is None else torch.from_numpy(drive_set.points), neutral_reference, FitOptions())
        options = PredictOptions(keep_source_expression=keep_reference_expression,
                                 expression_strength=expression_strength)
        on_canvas = frame == "canvas" or drive_set is None
        result = predict(model, ref_fit, drv_fit, options, manual_angles=manual,
                         drive_sizes=None if drive_set is None else drive_set.canvas_sizes,
                         canvas_size=(height, width) if on_canvas else None,
                         backgrounds=None if drive_set is None else drive_set.backgrounds)
        landmarks = result.landmarks
        sizes = set(landmarks.canvas_sizes)
        if len(sizes) > 1:
            raise node_error(node_id, f"the drive images have different sizes {sorted(sizes)}",
                             "use frame = drive crop or canvas so every output has one size")
        out_h, out_w = landmarks.canvas_sizes[0]
        renders = [render_shaded(v, model.triangles, out_h, out_w) for v in result.vertices]
        controls, overlays = [], []
        for points, render, background in zip(landmarks.points, renders, landmarks.backgrounds):
            controls.append(draw_control_image(points, out_h, out_w))
            base = background if background is not None else (render.numpy()[..., None] * 255).astype(np.uint8).repeat(3, 2)
            overlays.append(draw_control_image(points, out_h, out_w, canvas=base))
        return io.NodeOutput(landmarks, to_image_tensor(controls), _gray_to_rgb(renders), to_image_tensor(overlays))


NODES = [MorphableModelLoader, LandmarkPredictor]
