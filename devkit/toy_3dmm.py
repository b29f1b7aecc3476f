"""A toy morphable face model saved in the converted ICT-FaceKit format, for tests that must not need the real model.

The 68 landmark vertices (at ICT-FaceKit's landmark vertex ids) sit on insightface's own 3D mean shape; every other
vertex is parked far behind the face, where no jaw-contour search can pick it. Identity modes are smooth random
fields over the landmarks; five named expressions move the jaw, mouth corners, brows and eyelids. The file loads
through ``load_ict_npz`` unchanged, so the pack's fitting code and the evaluation CLI use it like the real model.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ..models.face3d.morphable_model import ICT_LMK68, ICT_NARROW_FACE_VERTICES

TOY_EXPRESSIONS = ("jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp", "eyeBlink_L")
PARKED_Z = -50.0  # model units behind the face: never a silhouette candidate


def mean_shape_3d() -> np.ndarray:
    """insightface's 68-point 3D mean shape in the model frame (x to the image right, y up, z to the camera)."""
    from insightface.data import get_object

    points = np.asarray(get_object("meanshape_68.pkl"), np.float32)
    return points * np.array([1.0, -1.0, 1.0], np.float32)


def _expression_fields(points: np.ndarray) -> np.ndarray:
    """(5, 68, 3) landmark displacements of TOY_EXPRESSIONS at full weight."""
    fields = np.zeros((len(TOY_EXPRESSIONS), 68, 3), np.float32)
    fields[0, [*range(3, 14), *range(55, 60), *range(64, 68)], 1] = -0.18  # jaw and lower lip drop
    fields[1, [48, 49, 59, 60], :2] = (-0.06, 0.05)  # image-left mouth corner out and up
    fields[2, [54, 53, 55, 64], :2] = (0.06, 0.05)
    fields[3, range(17, 27), 1] = 0.06
    fields[4, [37, 38], 1] = -0.05
    return fields


def _identity_fields(points: np.ndarray, modes: int, rng: np.random.Generator) -> np.ndarray:
    """(modes, 68, 3) smooth random deformations, about 2 % of the face width per unit weight."""
    fields = np.zeros((modes, 68, 3), np.float32)
    for k in range(modes):
        direction = rng.normal(size=(3, 3))
        phase = rng.uniform(0, 2 * np.pi, 3)
        frequency = rng.uniform(0.5, 2.0)
        fields[k] = 0.02 * np.sin(frequency * points @ direction + phase)
    return fields


def write_toy_ict_npz(path: str | pathlib.Path, identity_modes: int = 20, seed: int = 0) -> pathlib.Path:
    """Write the toy model to ``path`` (about 1 MB) in the layout ``convert_ict_facekit`` produces."""
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    points = mean_shape_3d()
    lmk = np.asarray(ICT_LMK68)
    neutral = np.zeros((ICT_NARROW_FACE_VERTICES, 3), np.float32)
    neutral[:, 2] = PARKED_Z
    neutral[lmk] = points
    tris = lmk[Delaunay(points[:, :2]).simplices].astype(np.int32)
    id_basis = np.zeros((identity_modes, *neutral.shape), np.float16)
    id_basis[:, lmk] = _identity_fields(points, identity_modes, rng)
    exp_basis = np.zeros((len(TOY_EXPRESSIONS), *neutral.shape), np.float16)
    exp_basis[:, lmk] = _expression_fields(points)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # np.savez_compressed would append .npz to a name without it
        np.savez_compressed(f, neutral=neutral, tris=tris, id_basis=id_basis, exp_basis=exp_basis,
                            exp_names=np.array(TOY_EXPRESSIONS), lmk68=lmk)
    return path


def toy_morphable_model(folder: str | pathlib.Path):
    """The toy model written into ``folder`` and loaded through the pack's ICT-FaceKit loader."""
    from ..models.face3d.morphable_model import load_ict_npz

    return load_ict_npz(write_toy_ict_npz(pathlib.Path(folder) / "toy_ict_face.npz"))
