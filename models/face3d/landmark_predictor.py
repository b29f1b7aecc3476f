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

from ..errors import InvalidInputError
from .face_fitting import FitOptions, FitResult, euler_to_matrix, fit_landmarks, matrix_to_euler, project
from .flame_articulation import JAW_JOINT
from ..face_analysis.landmarks72 import LandmarkSet
from .morphable_model import MorphableModel

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
        raise InvalidInputError("no reference face was given", "connect a FaceSnap Face Crop output with at least one face")
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


def clamp_angles(angles: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Clamp (M, 3) yaw/pitch/roll to ``ANGLE_LIMITS`` and say what was clamped."""
    limits = torch.tensor(list(ANGLE_LIMITS.values()))
    clamped = torch.maximum(torch.minimum(angles, limits), -limits)
    warnings = []
    for i, j in zip(*torch.nonzero(clamped != angles, as_tuple=True)):
        name = list(ANGLE_LIMITS)[int(j)]
        warnings.append(f"face {int(i)}: {name} {float(angles[i, j]):.0f}° clamped to {float(clamped[i, j]):.0f}° "
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
            canvas_size: tuple[int, int] | None = None, backgrounds=None) -> Prediction:
    """Combine [shape_src, pose_drv, expr_drv] for every drive face (or every manual pose).

    ``source`` holds the reference fits; identity comes from the first (all references share it), the source
    expression from the first as well; for an articulated model (FLAME) a fit's jaw rotation (``joint_pose``, e.g.
    regressed by DECA) goes with its expression. ``manual_angles`` (M, 3) yaw/pitch/roll replaces the drive's
    rotation; with no drive the face is placed on ``canvas_size``. ``drive_sizes`` are the (height, width) of the
    drive images.
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
    angles, warnings = clamp_angles(angles)
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
