"""FaceSnap's Landmark Predictor: the reference's face shape with the drive's (or a chosen) pose and expression.

Reference photos and drive photos are fitted in one batch (references of one person share identity); the face
[shape_src, pose_drv, expr_drv] is then projected into the drive photo's frame, or centred on a target canvas, and
returned as 72-point landmarks plus the posed mesh in pixel coordinates for the Diff-PC render.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError, NoFaceError
from ..face_analysis.align import box_to_crop_matrix
from ..face_analysis.drawings import FACESNAP72
from ..face_analysis.landmark_views import faces_to_landmarks, render_landmarks
from ..face_analysis.landmarks72 import LandmarkSet
from ..face_analysis.record import FaceSet
from .face_fitting import FitOptions, FitResult, euler_to_matrix, fit_landmarks, matrix_to_euler, project
from .flame_articulation import JAW_JOINT
from .morphable_model import MorphableModel
from .rasterizer import render_shaded

log = logging.getLogger(__name__)

# Beyond these the 68-point jaw contour of a 2D detector and the model's front-only face mesh stop being meaningful.
ANGLE_LIMITS = {"yaw": 75.0, "pitch": 45.0, "roll": 60.0}
CANVAS_FACE_SCALE = 0.25  # outer-eye-corner distance as a fraction of the canvas's shorter side


@dataclass
class PredictOptions:
    keep_source_expression: bool = False
    expression_strength: float = 1.0


@dataclass
class Prediction:
    landmarks: LandmarkSet  # (M, 72, 2) in the drive frame or on the canvas
    vertices: torch.Tensor  # (M, V, 3): x, y pixels, z depth in pixels (larger = closer to the camera)
    angles: torch.Tensor  # (M, 3) yaw, pitch, roll in degrees actually used
    warnings: list[str]


def fit_references_and_drives(model: MorphableModel, references, reference_groups, drives=None,
                              neutral_reference: bool = False, options: FitOptions | None = None,
                              references_3d=None, drives_3d=None) -> tuple[FitResult, FitResult | None]:
    """Fit N reference faces (same group id = same person) and M drive faces in one batch."""
    refs = torch.as_tensor(references, dtype=torch.float32)[:, :68]
    groups = torch.as_tensor(reference_groups, dtype=torch.long)
    if len(refs) == 0:
        raise InvalidInputError("no reference face was given",
                                "connect a FaceSnap Face Crop output with at least one face")
    parts, neutral = [refs], [torch.full((len(refs),), neutral_reference)]
    part_3d = [references_3d] if references_3d is not None else None
    if drives is not None:
        drv = torch.as_tensor(drives, dtype=torch.float32)[:, :68]
        parts.append(drv)
        neutral.append(torch.zeros(len(drv), dtype=torch.bool))
        groups = torch.cat([groups, int(groups.max()) + 1 + torch.arange(len(drv))])
        if part_3d is not None:
            part_3d = None if drives_3d is None else part_3d + [drives_3d]
    lmk3d = None if part_3d is None else torch.cat([torch.as_tensor(p, dtype=torch.float32)[:, :68] for p in part_3d])
    fit = fit_landmarks(model, torch.cat(parts), groups=groups, neutral=torch.cat(neutral), options=options,
                        landmarks3d=lmk3d)
    n = len(refs)
    return fit.select(slice(0, n)), (fit.select(slice(n, None)) if drives is not None else None)


def fit_references_and_drive(model: MorphableModel, references, drives, neutral_reference: bool = False,
                             options: FitOptions | None = None) -> tuple[FitResult, FitResult]:
    """Benchmark helper: P pairs, each with R reference photos of its own person. references (P, R, 68, 2),
    drives (P, 68, 2). Returns the first reference fit per pair (identity shared by all R) and the drive fits."""
    refs = torch.as_tensor(references, dtype=torch.float32)
    pairs, per = refs.shape[:2]
    ref_fit, drv_fit = fit_references_and_drives(model, refs.reshape(pairs * per, *refs.shape[2:]),
                                                 torch.arange(pairs).repeat_interleave(per), drives,
                                                 neutral_reference, options)
    return ref_fit.select(slice(0, None, per)), drv_fit


def clamp_angles(angles: torch.Tensor, labels: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Clamp (M, 3) yaw/pitch/roll to ``ANGLE_LIMITS`` and say what was clamped (``labels`` name the M faces)."""
    limits = torch.tensor(list(ANGLE_LIMITS.values()))
    clamped = torch.maximum(torch.minimum(angles, limits), -limits)
    warnings = []
    for i, j in zip(*torch.nonzero(clamped != angles, as_tuple=True), strict=True):
        name = list(ANGLE_LIMITS)[int(j)]
        label = labels[int(i)] if labels is not None else f"face {int(i)}"
        warnings.append(f"{label}: {name} {float(angles[i, j]):.0f}° clamped to {float(clamped[i, j]):.0f}° "
                        f"(the landmark model is reliable up to ±{ANGLE_LIMITS[name]:.0f}°)")
    for w in warnings:
        log.warning("FaceSnap landmark predictor: %s", w)
    return clamped, warnings


def _canvas_placement(model, alpha, beta, rotation, height, width, joint_pose=None):
    """Scale and translation that centre the face's 72 landmarks on a (height, width) canvas."""
    batch = alpha.shape[0]
    scale = torch.full((batch,), CANVAS_FACE_SCALE * min(height, width))
    pts = project(model.landmarks72(alpha, beta, rotation, joint_pose), rotation, scale, torch.zeros(batch, 2))
    centre = 0.5 * (pts.amin(1) + pts.amax(1))
    return scale, torch.tensor([width / 2.0, height / 2.0]) - centre


def _expression_joint_pose(model: MorphableModel, fit: FitResult, count: int, strength: float) -> torch.Tensor | None:
    """The jaw rotation of an articulated model's fit (part of the expression), or None when there is none."""
    if model.articulation is None or fit.joint_pose is None:
        return None
    return model.articulation.jaw_only(fit.joint_pose[:, JAW_JOINT].expand(count, -1) * strength)


def predict(model: MorphableModel, source: FitResult, drive: FitResult | None, options: PredictOptions,
            manual_angles=None, drive_sizes: list[tuple[int, int]] | None = None,
            canvas_size: tuple[int, int] | None = None, backgrounds=None,
            labels: list[str] | None = None) -> Prediction:
    """Combine [shape_src, pose_drv, expr_drv] for every drive face (or every manual pose).

    ``source`` holds the reference fits; identity comes from the first (all references share it), the source
    expression from the first as well; for an articulated model (FLAME) a fit's jaw rotation (``joint_pose``, e.g.
    regressed by DECA) goes with its expression. ``manual_angles`` (M, 3) yaw/pitch/roll replaces the drive's
    rotation; with no drive the face is placed on ``canvas_size``. ``drive_sizes`` are the (height, width) of the
    drive images; ``labels`` name the predicted faces in warnings.
    """
    if drive is None and manual_angles is None:
        raise InvalidInputError("neither a drive face nor a manual pose was given",
                                "connect drive faces, or switch the pose source to manual")
    count = len(drive.alpha) if drive is not None else len(torch.as_tensor(manual_angles).reshape(-1, 3))
    alpha = source.alpha[:1].expand(count, -1)
    expression_fit = source.select(slice(0, 1)) if drive is None or options.keep_source_expression else drive
    beta = expression_fit.beta.expand(count, -1) * options.expression_strength
    joint_pose = _expression_joint_pose(model, expression_fit, count, options.expression_strength)
    if manual_angles is not None:
        angles = torch.as_tensor(manual_angles, dtype=torch.float32).reshape(-1, 3).expand(count, -1)
    else:
        angles = matrix_to_euler(drive.rotation)
    angles, warnings = clamp_angles(angles, labels)
    rotation = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    if drive is not None and manual_angles is None and not warnings:
        rotation = drive.rotation  # exact, no round trip through Euler angles

    if canvas_size is not None or drive is None:
        height, width = canvas_size if canvas_size is not None else (512, 512)
        scale, translation = _canvas_placement(model, alpha, beta, rotation, height, width, joint_pose)
        sizes = [(height, width)] * count
        backgrounds = None
    else:
        scale, translation = drive.scale, drive.translation
        if drive_sizes is None:
            raise InvalidInputError("the drive image sizes are needed to project into the drive frame",
                                    "pass drive_sizes or a canvas_size")
        sizes = list(drive_sizes)

    points = project(model.landmarks72(alpha, beta, rotation, joint_pose), rotation, scale, translation)
    mesh = model.vertices(alpha, beta, joint_pose)
    rotated = mesh @ rotation.transpose(1, 2)
    verts = torch.cat([project(mesh, rotation, scale, translation), scale.view(-1, 1, 1) * rotated[..., 2:3]], -1)
    landmarks = LandmarkSet(points.detach().numpy().astype(np.float32), sizes, backgrounds)
    return Prediction(landmarks, verts, angles, warnings)


# ---- from detected faces to the node's outputs --------------------------------------------------------------------
FRAMES = ("drive crop", "drive image", "canvas")
POSE_SOURCES = ("drive", "manual")


@dataclass
class PredictorSettings:
    """The Landmark Predictor node's widgets. ``canvas_size`` is (height, width)."""

    pose_source: str = "drive"
    manual_angles: tuple[float, float, float] = (0.0, 0.0, 0.0)  # yaw, pitch, roll in degrees
    keep_reference_expression: bool = False
    expression_strength: float = 1.0
    neutral_reference: bool = False
    frame: str = "drive crop"
    canvas_size: tuple[int, int] = (1024, 1024)


def _finite_rows(points: np.ndarray) -> np.ndarray:
    return np.isfinite(points).all(axis=(1, 2))


def _subset(faces: FaceSet, rows) -> FaceSet:
    rows = [int(i) for i in rows]
    return FaceSet(records=[faces.records[i] for i in rows], images=[faces.images[i] for i in rows],
                   crop_boxes=[faces.crop_boxes[i] for i in rows] if faces.crop_boxes else [],
                   crop_size=faces.crop_size)


def _regressed_fits(model: MorphableModel, reference: FaceSet, drive: FaceSet | None, frame: str):
    """Reference and drive parameters from the model's face regressor (DECA); references share their mean shape."""
    from .deca_encoder import regress_faces

    ref_fit = regress_faces(model, model.face_regressor, list(reference.images),
                            np.stack([r.landmarks[:68] for r in reference.records]))
    ref_fit.alpha = ref_fit.alpha.mean(0, keepdim=True).expand_as(ref_fit.alpha)
    if drive is None:
        return ref_fit, None
    in_crop = frame == "drive crop" and drive.crop_boxes and drive.crop_size > 0
    matrices = [box_to_crop_matrix(box, drive.crop_size) for box in drive.crop_boxes] if in_crop else None
    return ref_fit, regress_faces(model, model.face_regressor, list(drive.images),
                                  np.stack([r.landmarks[:68] for r in drive.records]), matrices)


def _fits(model: MorphableModel, reference: FaceSet, drive: FaceSet | None, drive_points, settings: PredictorSettings):
    """Reference and drive fits: regressed when the model carries a face regressor (DECA), else landmark fitting."""
    if model.face_regressor is not None:
        return _regressed_fits(model, reference, drive, settings.frame)
    ref_points = torch.from_numpy(np.stack([r.landmarks for r in reference.records]))
    return fit_references_and_drives(model, ref_points, torch.zeros(len(ref_points), dtype=torch.long),
                                     None if drive_points is None else torch.from_numpy(drive_points),
                                     settings.neutral_reference, FitOptions())


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInputError(f"unknown {name} {value!r}", f"use one of {', '.join(choices)}")


def _merge(parts: list[tuple[list[int], Prediction]], count: int) -> Prediction:
    """Predictions for disjoint item lists -> one prediction in item order."""
    order = [None] * count
    for items, part in parts:
        for row, item in enumerate(items):
            order[item] = (part, row)
    landmarks = LandmarkSet(np.stack([p.landmarks.points[r] for p, r in order]),
                            [p.landmarks.canvas_sizes[r] for p, r in order],
                            [p.landmarks.backgrounds[r] for p, r in order])
    return Prediction(landmarks, torch.stack([p.vertices[r] for p, r in order]),
                      torch.stack([p.angles[r] for p, r in order]), [w for _, p in parts for w in p.warnings])


def predict_from_faces(model: MorphableModel, reference: FaceSet, drive: FaceSet | None,
                       settings: PredictorSettings) -> Prediction:
    """The Landmark Predictor: the reference's face shape with each drive face's pose and expression, or with the
    manual pose. A drive item without a face (Face Crop's "skip") takes the manual pose and the reference's
    expression, centred on that item's frame; ``warnings`` says which items did, and which were clamped."""
    _check_choice("pose source", settings.pose_source, POSE_SOURCES)
    _check_choice("frame", settings.frame, FRAMES)
    ref_rows = _finite_rows(np.stack([r.landmarks for r in reference.records])) if len(reference) else np.zeros(0, bool)
    if not ref_rows.any():
        raise NoFaceError("the reference has no face", "use a reference photo with a clearly visible face")
    warnings = [f"reference item {i} has no face and was left out" for i in np.nonzero(~ref_rows)[0]]
    reference = _subset(reference, np.nonzero(ref_rows)[0])
    options = PredictOptions(keep_source_expression=settings.keep_reference_expression,
                             expression_strength=settings.expression_strength)
    manual = torch.tensor([settings.manual_angles], dtype=torch.float32)
    canvas = tuple(settings.canvas_size)
    if settings.pose_source == "manual":
        ref_fit, _ = _fits(model, reference, None, None, settings)
        result = predict(model, ref_fit, None, options, manual_angles=manual, canvas_size=canvas,
                         labels=["manual pose"])
        result.warnings[:0] = warnings
        return result
    if drive is None:
        raise InvalidInputError("pose source is 'drive' but no drive faces are connected",
                                "connect drive faces, or set pose source to manual")
    drive_set = faces_to_landmarks(drive, "crop" if settings.frame == "drive crop" else "image")
    on_canvas = settings.frame == "canvas"
    valid = _finite_rows(drive_set.points)
    with_face, without_face = np.nonzero(valid)[0].tolist(), np.nonzero(~valid)[0].tolist()
    parts = []
    if with_face:
        ref_fit, drv_fit = _fits(model, reference, _subset(drive, with_face), drive_set.points[with_face], settings)
        parts.append((with_face, predict(
            model, ref_fit, drv_fit, options, drive_sizes=[drive_set.canvas_sizes[i] for i in with_face],
            canvas_size=canvas if on_canvas else None, backgrounds=[drive_set.backgrounds[i] for i in with_face],
            labels=[f"drive item {i}" for i in with_face])))
    else:
        ref_fit, _ = _fits(model, reference, None, None, settings)
    for item in without_face:
        size = canvas if on_canvas else drive_set.canvas_sizes[item]
        part = predict(model, ref_fit, None, options, manual_angles=manual, canvas_size=size,
                       labels=[f"drive item {item}"])
        if not on_canvas:
            part.landmarks.backgrounds = [drive_set.backgrounds[item]]
        parts.append(([item], part))
        yaw, pitch, roll = settings.manual_angles
        warnings.append(f"drive item {item} has no face: the manual pose (yaw {yaw:.0f}°, pitch {pitch:.0f}°, roll "
                        f"{roll:.0f}°) and the reference's expression were used")
    result = _merge(parts, len(drive_set))
    result.warnings[:0] = warnings
    sizes = set(result.landmarks.canvas_sizes)
    if len(sizes) > 1:
        raise InvalidInputError(f"the drive images have different sizes {sorted(sizes)}",
                                "use frame = drive crop or canvas so every output has one size")
    return result


def draw_prediction(model: MorphableModel, prediction: Prediction,
                    style: str = FACESNAP72) -> tuple[list[np.ndarray], list[torch.Tensor], list[np.ndarray]]:
    """Control images (the landmarks drawn in ``style`` on black, see drawings.py), monochrome 3D renders (H, W) in
    [0, 1], and overlays (the same drawing over the drive photo, or over the render where there is no photo), all
    at the first item's canvas size."""
    landmarks = prediction.landmarks
    out_h, out_w = landmarks.canvas_sizes[0]
    renders = [render_shaded(verts, model.triangles, out_h, out_w) for verts in prediction.vertices]
    backgrounds = [(r.numpy()[..., None] * 255).astype(np.uint8).repeat(3, 2) if photo is None else photo
                   for r, photo in zip(renders, landmarks.backgrounds, strict=True)]
    with_backgrounds = LandmarkSet(landmarks.points, landmarks.canvas_sizes, backgrounds)
    controls, overlays = render_landmarks(with_backgrounds, style=style)
    return controls, renders, overlays
