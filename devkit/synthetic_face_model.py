"""A procedural face model in the converted ICT-FaceKit format (``models.face3d.morphable_model.load_ict_npz``).

The tests run the 3DMM code on it when the real conversion (``../shared/3dmm``) is not there. It is built like the
real one: a neutral face mesh (a curved polar grid bounded by the jaw line and forehead, with nose, lips and eye
sockets), 100 smooth identity modes and the 57 ICT expression blendshapes under their ARKit names, stored as
float16 deltas. The 68 iBUG landmarks sit on the vertices ICT-FaceKit's README names (``ICT_LMK68``): the grid
vertex nearest each landmark of a proportioned 2D template is moved onto it and renumbered to that index; the jaw
landmarks lie on the outline, where the silhouette starts when the face turns.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ..models.face3d.ict_download import ICT_EXPRESSIONS
from ..models.face3d.morphable_model import ICT_LMK68, ICT_NARROW_FACE_VERTICES

RINGS, SPOKES = 45, 149  # 1 + 45 * 149 = 6706 vertices, as many as ICT-FaceKit's narrow face
# Proportions of an average face (close to the 68-point mean shape that ships with insightface), in units of the
# outer-eye-corner distance, x to the subject's left, y up. The outline is centred between the ears.
CENTRE_Y = 0.41
HALF_WIDTH, CHIN_DEPTH, FOREHEAD_HEIGHT = 0.82, 1.16, 0.75
EYE_X, EYE_Y = 0.35, 0.435  # eye centres at (+-EYE_X, EYE_Y)
BRIDGE_Y, NOSE_TIP_Y, NOSE_BASE_Y = 0.50, 0.21, -0.03
MOUTH_Y, MOUTH_HALF_WIDTH = -0.29, 0.275  # mouth corners
LIP_SPLIT_Y = -0.27  # where the lips meet
RAW_UNIT = 10.0  # the stored mesh is in "centimetres" like ICT-FaceKit; the loader normalises it
IDENTITY_MODES = 100


# ---- neutral surface -------------------------------------------------------------------------------------------------
def _outline(theta: np.ndarray) -> np.ndarray:
    """Points on the face outline at polar angle ``theta`` around (0, CENTRE_Y): the jaw below, forehead above."""
    height = np.where(np.sin(theta) < 0, CHIN_DEPTH, FOREHEAD_HEIGHT)
    return np.stack([HALF_WIDTH * np.cos(theta), CENTRE_Y + height * np.sin(theta)], -1)


def _polar(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angle, radius as a fraction of the outline) of 2D points."""
    dx, dy = xy[..., 0] / HALF_WIDTH, xy[..., 1] - CENTRE_Y
    dy = dy / np.where(dy < 0, CHIN_DEPTH, FOREHEAD_HEIGHT)
    return np.arctan2(dy, dx), np.hypot(dx, dy)


def _gauss(xy: np.ndarray, centre, sigma) -> np.ndarray:
    d = (xy - np.asarray(centre, np.float64)) / np.asarray(sigma, np.float64)
    return np.exp(-0.5 * (d ** 2).sum(-1))


def depth(xy: np.ndarray) -> np.ndarray:
    """z (towards the camera) of the neutral face at 2D points: a dome that falls steeply at the outline, deepest
    at the ears, plus nose, lips, chin and eye sockets."""
    theta, r = _polar(xy)
    lower = np.sin(theta) < 0
    rim = -0.75 * np.cos(theta) ** 2 + np.where(lower, 0.05, -0.10) * np.sin(theta) ** 2
    z = rim + (0.20 - rim) * np.sqrt(np.clip(1 - r ** 2, 0, 1))
    x, y = xy[..., 0], xy[..., 1]
    along = np.clip((BRIDGE_Y - y) / (BRIDGE_Y - NOSE_TIP_Y), 0, 1)  # the ridge grows from the bridge to the tip
    ridge = np.where(y > NOSE_TIP_Y, along, np.clip(1 - (NOSE_TIP_Y - y) / (NOSE_TIP_Y - NOSE_BASE_Y), 0, 1))
    z = z + 0.24 * ridge ** 1.5 * np.exp(-0.5 * (x / (0.05 + 0.06 * ridge)) ** 2)
    z = z + 0.09 * _gauss(xy, (0, LIP_SPLIT_Y), (0.22, 0.09)) + 0.06 * _gauss(xy, (0, -0.60), (0.18, 0.12))
    for side in (-1, 1):
        z = z - 0.07 * _gauss(xy, (side * EYE_X, EYE_Y + 0.005), (0.12, 0.07))
    return z


def _mesh() -> tuple[np.ndarray, np.ndarray]:
    """Vertices (1 + RINGS * SPOKES, 2) of the polar grid and its triangles, counter-clockwise seen from the front."""
    theta = -np.pi / 2 + 2 * np.pi * np.arange(SPOKES) / SPOKES  # spoke 0 points at the chin; mirror-symmetric set
    radius = np.arange(1, RINGS + 1) / RINGS
    centre = np.array([[0.0, CENTRE_Y]])
    outline = _outline(theta) - centre
    xy = np.concatenate([centre, (centre + radius[:, None, None] * outline[None]).reshape(-1, 2)])
    ring = lambda i, j: 1 + i * SPOKES + j % SPOKES  # noqa: E731
    tris = [[0, ring(0, j), ring(0, j + 1)] for j in range(SPOKES)]
    for i in range(RINGS - 1):
        for j in range(SPOKES):
            a, b, c, d = ring(i, j), ring(i + 1, j), ring(i + 1, j + 1), ring(i, j + 1)
            tris += [[a, b, c], [a, c, d]] if np.cos(theta[j]) >= 0 else [[a, b, d], [b, c, d]]  # mirrored split
    return xy, np.array(tris, np.int64)


# ---- the 68 landmarks ------------------------------------------------------------------------------------------------
def _bezier(p0, p1, p2, t):
    t = np.asarray(t, np.float64)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0])


def landmark_template() -> np.ndarray:
    """(68, 2) iBUG-68 points of an average frontal face; x to the subject's left, y up."""
    jaw = _outline(np.pi + np.pi * np.arange(17) / 16)  # 0 = subject's right ear ... 8 = chin ... 16
    right_brow = _bezier((-0.615, 0.59), (-0.44, 0.69), (-0.21, 0.62), np.linspace(0, 1, 5))  # 17 (outer) .. 21
    nose_ridge = np.stack([np.zeros(4), np.linspace(0.44, NOSE_TIP_Y, 4)], 1)  # 27 .. 30 (tip)
    steps = np.arange(-2, 3)
    nostrils = np.stack([0.09 * steps, NOSE_BASE_Y + 0.008 * np.abs(steps)], 1)  # 31 .. 35
    eye = np.array([[-0.15, -0.005], [-0.055, 0.045], [0.05, 0.05], [0.15, -0.005], [0.055, -0.04], [-0.055, -0.04]])
    right_eye = eye + np.array([-EYE_X, EYE_Y])  # 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid
    left_eye = _mirror(right_eye)[[3, 2, 1, 0, 5, 4]]  # 42 inner corner .. 45 outer corner .. 47
    corner = np.array([[-MOUTH_HALF_WIDTH, MOUTH_Y]])
    # upper lip 49-53 with its bow, lower lip 55-59, inner lips 61-63 and 65-67: (x, height above the corners)
    upper = np.array([[-0.17, 0.07], [-0.09, 0.11], [0.0, 0.09], [0.09, 0.11], [0.17, 0.07]])
    lower = np.array([[0.18, -0.06], [0.095, -0.08], [0.0, -0.085], [-0.095, -0.08], [-0.18, -0.06]])
    inner_upper = np.array([[-0.09, 0.028], [0.0, 0.03], [0.09, 0.028]])
    inner_lower = np.array([[0.09, 0.012], [0.0, 0.012], [-0.09, 0.012]])
    on_mouth = lambda pts: pts + [0.0, MOUTH_Y]  # noqa: E731
    mouth = np.concatenate([corner, on_mouth(upper), _mirror(corner), on_mouth(lower),
                            corner * [0.82, 1.0], on_mouth(inner_upper), _mirror(corner) * [0.82, 1.0],
                            on_mouth(inner_lower)])  # 48 .. 67
    return np.concatenate([jaw, right_brow, _mirror(right_brow)[::-1], nose_ridge, nostrils, right_eye, left_eye,
                           mouth])


def _place_landmarks(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move the grid vertex nearest each template landmark onto it. The jaw points take the nearest outline vertex
    as it is: moving it along the outline would leave a neighbour close enough to join its contour slice.
    Returns the moved vertices and the vertex id of each landmark."""
    xy = xy.copy()
    template = landmark_template()
    outline = np.arange(1 + (RINGS - 1) * SPOKES, len(xy))
    used: set[int] = set()
    ids = []
    for k, point in enumerate(template):
        pool = outline if k < 17 else np.arange(len(xy) - SPOKES)
        order = pool[np.argsort(((xy[pool] - point) ** 2).sum(1))]
        vid = int(next(v for v in order if v not in used))
        used.add(vid)
        ids.append(vid)
        if k >= 17:
            xy[vid] = point
    return xy, np.array(ids)


# ---- identity and expression deltas ------------------------------------------------------------------------------
def identity_deltas(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(100, V, 3) shape modes for N(0, 1) weights, as a PCA basis is: orthogonal, largest first. They are the
    principal directions of many smooth random changes (mostly mirror-symmetric Gaussian bumps of all sizes, plus
    the face width against the eyes), with a variance that falls off like ICT-FaceKit's."""
    xy = points[:, :2]
    fields = [np.stack([xy[:, 0] * (np.abs(xy[:, 0]) / HALF_WIDTH) ** 2, 0 * xy[:, 0], 0 * xy[:, 0]], 1) * 3.0]
    for k in range(4 * IDENTITY_MODES):
        sigma = rng.uniform(0.12, 0.6)
        centre, move = rng.uniform([0.0, -0.7], [0.75, 1.0]), rng.normal(size=3) * [1.0, 1.0, 0.7]
        field = _gauss(xy, centre, sigma)[:, None] * move
        if k % 4:  # most variation is symmetric
            field = field + _gauss(xy, centre * [-1, 1], sigma)[:, None] * move * [-1, 1, 1]
        fields.append(field * sigma)
    _, _, directions = np.linalg.svd(np.stack(fields).reshape(len(fields), -1), full_matrices=False)
    scale = 0.05 * (np.arange(IDENTITY_MODES) + 1.0) ** -0.75 * np.sqrt(len(points))  # rms per vertex
    return directions[:IDENTITY_MODES].reshape(IDENTITY_MODES, len(points), 3) * scale[:, None, None]


def _lip_split(xy: np.ndarray) -> np.ndarray:
    """1 below the line where the lips meet (and across the lower face), 0 above: the jaw's share of a vertex."""
    x, y = xy[:, 0], xy[:, 1]
    width = 0.004 + 0.25 * np.maximum(np.abs(x) - MOUTH_HALF_WIDTH, 0)  # sharp between the lips, soft elsewhere
    return 1 / (1 + np.exp(np.clip((y - LIP_SPLIT_Y) / width, -60, 60)))


# name -> (centre (x, y) on the subject's left, sigma, displacement (dx, dy, dz), region)
_CORNER = (MOUTH_HALF_WIDTH, MOUTH_Y)
_EYE, _UPPER_LID, _LOWER_LID = (EYE_X, EYE_Y), (EYE_X, EYE_Y + 0.025), (EYE_X, EYE_Y - 0.035)
_BLENDSHAPES = {
    "browDown": ((0.40, 0.64), 0.12, (0.0, -0.075, 0.0), None),
    "browInnerUp": ((0.20, 0.63), 0.08, (0.0, 0.06, 0.0), None),
    "browOuterUp": ((0.58, 0.60), 0.10, (0.0, 0.095, 0.0), None),
    "cheekPuff": ((0.42, -0.18), 0.13, (0.06, 0.0, 0.15), None),
    "cheekRaiser": ((0.40, 0.05), 0.15, (0.0, 0.035, 0.0), None),
    "cheekSquint": ((0.62, 0.25), 0.12, (0.0, 0.03, 0.0), None),
    "eyeBlink": (_UPPER_LID, (0.10, 0.04), (0.0, -0.09, 0.0), "upper_lid"),
    "eyeSquint": (_LOWER_LID, (0.10, 0.04), (0.0, 0.025, 0.0), "lower_lid"),
    "eyeWide": (_UPPER_LID, (0.10, 0.04), (0.0, 0.035, 0.0), "upper_lid"),
    "eyeLookDown": (_EYE, 0.03, (0.0, -0.01, 0.0), None),
    "eyeLookUp": (_EYE, 0.03, (0.0, 0.01, 0.0), None),
    "eyeLookIn": (_EYE, 0.03, (-0.01, 0.0, 0.0), None),
    "eyeLookOut": (_EYE, 0.03, (0.01, 0.0, 0.0), None),
    "PupilDilate": (_EYE, 0.02, (0.0, 0.0, 0.005), None),
    "mouthDimple": (_CORNER, 0.07, (0.05, 0.0, -0.06), None),
    "mouthFrown": (_CORNER, 0.08, (0.0, -0.06, 0.0), None),
    "mouthLowerDown": ((0.14, MOUTH_Y - 0.07), 0.07, (0.0, -0.05, 0.0), "lower_lip"),
    "mouthPress": ((0.12, MOUTH_Y - 0.12), 0.10, (0.0, 0.045, 0.0), "lower_lip"),
    "mouthSmile": (_CORNER, 0.09, (0.07, 0.16, -0.03), None),
    "mouthStretch": (_CORNER, 0.09, (0.10, -0.05, 0.0), None),
    "mouthUpperUp": ((0.14, MOUTH_Y + 0.09), 0.07, (0.0, 0.095, 0.0), "upper_lip"),
    "noseSneer": ((0.12, NOSE_BASE_Y + 0.05), 0.07, (0.0, 0.10, 0.0), None),
    "mouthLeft": ((0.0, MOUTH_Y), 0.18, (0.20, 0.0, 0.0), None),
    "mouthRight": ((0.0, MOUTH_Y), 0.18, (-0.20, 0.0, 0.0), None),
    "mouthRollLower": ((0.0, MOUTH_Y - 0.08), 0.10, (0.0, 0.10, -0.10), "lower_lip"),
    "mouthRollUpper": ((0.0, MOUTH_Y + 0.09), 0.10, (0.0, -0.09, -0.09), "upper_lip"),
    "mouthShrugLower": ((0.0, MOUTH_Y - 0.2), 0.20, (0.0, 0.10, 0.0), "lower_lip"),
    "mouthShrugUpper": ((0.0, MOUTH_Y + 0.08), 0.10, (0.0, 0.065, 0.0), "upper_lip"),
    "mouthClose": ((0.0, MOUTH_Y - 0.05), (0.25, 0.10), (0.0, 0.42, 0.18), "lower_lip"),
}


def expression_delta(name: str, points: np.ndarray) -> np.ndarray:
    """(V, 3) displacement of one ICT expression (weight 1)."""
    xy = points[:, :2]
    below = _lip_split(xy)
    side = 1.0 if name.endswith("_L") else -1.0 if name.endswith("_R") else 0.0
    base = name[:-2] if side else name
    if base.startswith("jaw"):  # the lower face turns about the jaw hinge, or shifts
        hinge = np.array([0.0, 0.30, -0.70])
        if base == "jawOpen":
            angle = 0.30  # opens: the chin goes down and back
            rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
            return below[:, None] * ((points - hinge) @ rot.T + hinge - points)
        shift = {"jawForward": (0.0, 0.0, 0.12), "jawLeft": (0.10, 0.0, 0.0), "jawRight": (-0.10, 0.0, 0.0)}[base]
        return below[:, None] * np.array(shift)
    centre, sigma, move, region = _BLENDSHAPES[base]
    mirror = np.array([side or 1.0, 1.0, 1.0])
    weight = _gauss(xy, np.array(centre) * mirror[:2], sigma)
    if region == "lower_lip":
        weight = weight * below
    elif region == "upper_lip":
        weight = weight * (1 - below)
    elif region in ("upper_lid", "lower_lid"):
        above_eye = 1 / (1 + np.exp(np.clip(-(xy[:, 1] - EYE_Y) / 0.004, -60, 60)))
        weight = weight * (above_eye if region == "upper_lid" else 1 - above_eye)
    return weight[:, None] * (np.array(move) * mirror)


# mouthPucker and mouthFunnel gather the lips towards the middle (share of x) and push them forward (z)
_GATHER = {"mouthPucker": (0.45, 0.08), "mouthFunnel": (0.30, 0.12)}


def gather_delta(name: str, points: np.ndarray) -> np.ndarray:
    pull, forward = _GATHER[name]
    weight = _gauss(points[:, :2], (0.0, LIP_SPLIT_Y), 0.14)
    return weight[:, None] * np.stack([-pull * points[:, 0], np.zeros(len(points)), np.full(len(points), forward)], 1)


# ---- the file ------------------------------------------------------------------------------------------------------
def synthetic_face_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of a converted ICT-FaceKit npz, for the procedural face."""
    xy, tris = _mesh()
    xy, landmark_ids = _place_landmarks(xy)
    points = np.concatenate([xy, depth(xy)[:, None]], 1)
    rng = np.random.default_rng(seed)
    ids = identity_deltas(points, rng)
    exps = np.stack([gather_delta(n, points) if n in _GATHER else expression_delta(n, points) for n in ICT_EXPRESSIONS])
    # renumber so that landmark k is vertex ICT_LMK68[k], as in the upstream topology
    order = np.full(len(points), -1)
    order[ICT_LMK68] = landmark_ids
    rest = np.setdiff1d(np.arange(len(points)), landmark_ids)
    order[order < 0] = rest
    new_index = np.empty(len(points), np.int64)
    new_index[order] = np.arange(len(points))
    assert len(points) == ICT_NARROW_FACE_VERTICES
    return {
        "neutral": (points[order] * RAW_UNIT).astype(np.float32),
        "tris": new_index[tris].astype(np.int32),
        "id_basis": (ids[:, order] * RAW_UNIT).astype(np.float16),
        "exp_basis": (exps[:, order] * RAW_UNIT).astype(np.float16),
        "exp_names": np.array(ICT_EXPRESSIONS),
        "lmk68": np.array(ICT_LMK68),
    }


def write_synthetic_face_model(path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the procedural face as ``path`` (e.g. ``models/3dmm/ict_face_narrow.npz``)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **synthetic_face_arrays(seed))
    return path
