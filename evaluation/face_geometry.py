"""Diff-PC's face-control and shape metrics through the pack's 3DMM fit (``models/face3d``).

Every face is fitted with ``fit_landmarks`` on its 68 detected landmarks (with insightface's 3D landmarks when every
face has them). The reference photos of one person share one identity in the fit.

* Pose: RMSE over (yaw, pitch, roll), in degrees, between the generated face and the intended control.
* Expr: RMSE between the expression weights of the generated face and of the control (ICT-FaceKit blendshape
  weights in [0, 1]).
* Shape: RMSE between the identity weights of the generated face and of the person's reference photos
  (N(0, 1) units).

Diff-PC fits SMIRK/FLAME parameters and prints x100; these figures come from the pack's own fit and units, so
they compare runs of this evaluation with each other, not with the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.face3d.face_fitting import fit_landmarks, matrix_to_euler
from ..models.face3d.morphable_model import MorphableModel
from ..models.face_analysis.record import FaceRecord

ANGLE_NAMES = ("yaw", "pitch", "roll")


@dataclass
class FaceParams:
    angles: np.ndarray  # (3,) yaw, pitch, roll in degrees (the pack's convention, as the Landmark Predictor's)
    alpha: np.ndarray  # (K,) identity weights
    beta: np.ndarray  # (E,) expression weights
    nme: float  # reprojection error of the fit / outer-eye-corner distance


def fit_faces(model: MorphableModel, records: Sequence[FaceRecord], shared_identity: bool = False) -> list[FaceParams]:
    """Fit every face at once; ``shared_identity``: all are photos of one person."""
    if not records:
        return []
    landmarks = np.stack([np.asarray(r.landmarks, np.float32)[:68] for r in records])
    with_3d = all(r.landmarks_3d is not None for r in records)
    landmarks_3d = np.stack([np.asarray(r.landmarks_3d, np.float32) for r in records]) if with_3d else None
    groups = torch.zeros(len(records), dtype=torch.long) if shared_identity else None
    fit = fit_landmarks(model, landmarks, groups=groups, landmarks3d=landmarks_3d)
    angles = matrix_to_euler(fit.rotation).numpy()
    return [FaceParams(angles[i], fit.alpha[i].numpy(), fit.beta[i].numpy(), float(fit.nme[i]))
            for i in range(len(records))]


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def pose_error(generated: FaceParams, target_angles) -> float:
    """RMSE over yaw, pitch and roll in degrees."""
    return rmse(generated.angles, target_angles)


def expression_error(generated: FaceParams, target: FaceParams) -> float:
    return rmse(generated.beta, target.beta)


def shape_error(generated: FaceParams, reference: FaceParams) -> float:
    return rmse(generated.alpha, reference.alpha)
