"""Linear 3D morphable face models (ICT-FaceKit, FLAME shape space) and their landmark embedding.

Every model is normalised on load into one frame: x to the subject's left (image right in a frontal photo), y up,
z towards the camera, origin at the centroid of the 68 landmarks, and one unit = the distance between the outer eye
corners (iBUG points 36 and 45). Identity weights follow N(0, 1); expression weights are blendshape weights in
[0, 1] (ICT) or PCA weights around 0 (FLAME, ``expression_range=None``).

Landmarks 17-67 are fixed on the surface. The jaw contour 0-16 is pose-dependent: a detector marks the face's
silhouette, which slides across the cheek as the head turns, so each contour point has a list of candidate vertices
on a slice through the cheek and the one furthest out in the image is used (see ``contour_slices``).
"""

from __future__ import annotations

import pathlib
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..common.file_checks import first_nonfinite
from ..common.file_errors import safe_reason
from ..errors import InvalidInputError, ModelFileError
from ..face_analysis.landmarks72 import extras_from_ibug68

if TYPE_CHECKING:
    from .deca_encoder import DecaEncoder
    from .flame_articulation import Articulation

ICT_UPSTREAM = "https://github.com/ICT-VGL/ICT-FaceKit (folder FaceXModel/)"
ICT_FILE_NAME = "ict_face_narrow.npz"
ICT_NARROW_FACE_VERTICES = 6706
# Multi-PIE / iBUG-68 vertices of the ICT topology (upstream README), with its jawline substitutes for points 0-16.
ICT_LMK68 = [
    1278, 1272, 12, 1834, 243, 781, 2199, 1447, 966, 3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360,
    1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213,
    6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
]
# Blendshapes that move no landmark (pupil size, gaze) are not fitted.
NON_LANDMARK_EXPRESSIONS = ("PupilDilate", "eyeLook")
JAW = slice(0, 17)


def ict_manual_hint(path: pathlib.Path | str) -> str:
    return (
        f"get ICT-FaceKit (MIT licence) from {ICT_UPSTREAM}, then convert it with "
        f"`python scripts/convert_ict_facekit.py <ICT-FaceKit>/FaceXModel {path}`, or copy an already converted "
        f"{ICT_FILE_NAME} to {path}"
    )


def ict_invalid_hint(path: pathlib.Path | str) -> str:
    """The fix for a file that is there but is not the converted model."""
    return (
        f"this must be the ICT-FaceKit face model as the pack converts it ({ICT_FILE_NAME}: an .npz archive of plain "
        f"arrays, about 4.7 MB). Remove {path}, then load {ICT_FILE_NAME} with download_if_missing on in FaceSnap "
        f"3DMM Loader (it downloads and converts ICT-FaceKit once); or by hand: {ict_manual_hint(path)}"
    )


def ict_fetch_hint(path: pathlib.Path | str) -> str:
    return (
        f"turn on download_if_missing in FaceSnap 3DMM Loader, or run `python scripts/convert_ict_facekit.py "
        f"--download {path}` (downloads about 405 MB once); or by hand: {ict_manual_hint(path)}"
    )


@dataclass
class MorphableModel:
    """A linear face model. Shapes are (V, 3) in the normalised frame described in the module docstring."""

    name: str
    neutral: torch.Tensor  # (V, 3) float32
    id_basis: torch.Tensor  # (K, V, 3) float32, per unit identity weight
    exp_basis: torch.Tensor  # (E, V, 3) float32, per unit expression weight
    exp_names: list[str]
    triangles: torch.Tensor  # (F, 3) long, counter-clockwise seen from the front
    lmk_vertices: torch.Tensor  # (68, 3) long: each iBUG landmark is a weighted sum of 3 vertices
    lmk_weights: torch.Tensor  # (68, 3) float32
    contour_candidates: list[torch.Tensor]  # 17 lists of vertex ids, static jaw vertex first
    expression_range: tuple[float, float] | None = (0.0, 1.0)  # blendshape bounds; None for PCA expressions
    articulation: Articulation | None = None  # FLAME's jaw/neck/eye joints; None for purely linear models
    face_regressor: DecaEncoder | None = None  # optional image -> parameters network used instead of landmark fitting

    def __post_init__(self):
        self._build_landmark_space()

    @property
    def num_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def num_exp(self) -> int:
        return self.exp_basis.shape[0]

    def vertices(self, alpha: torch.Tensor, beta: torch.Tensor, joint_pose: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K), (B, E) -> (B, V, 3). Fewer weights than modes use the leading modes.

        ``joint_pose`` (B, J, 3) axis-angle per joint poses the mesh when the model is articulated (FLAME).
        """
        verts = self.neutral.unsqueeze(0) + torch.einsum("bk,kvc->bvc", alpha, self.id_basis[: alpha.shape[1]])
        verts = verts + torch.einsum("be,evc->bvc", beta, self.exp_basis[: beta.shape[1]])
        if joint_pose is None:
            return verts
        if self.articulation is None:
            raise InvalidInputError(f"the {self.name} model has no joints to pose", "use FLAME for a jaw pose")
        return self.articulation.pose(verts, joint_pose)

    # ---- landmark space: only the few hundred vertices landmarks can land on -----------------------------------
    def _build_landmark_space(self) -> None:
        used = torch.cat([self.lmk_vertices.reshape(-1), *self.contour_candidates]).unique()
        remap = torch.full((self.neutral.shape[0],), -1, dtype=torch.long)
        remap[used] = torch.arange(len(used))
        self.lmk_space_vertices = used
        self.lmk_mean = self.neutral[used]
        self.lmk_id_basis = self.id_basis[:, used]
        self.lmk_exp_basis = self.exp_basis[:, used]
        self._static_index = remap[self.lmk_vertices]  # (68, 3) into the landmark space
        width = max(len(c) for c in self.contour_candidates)
        cand = torch.zeros(17, width, dtype=torch.long)
        valid = torch.zeros(17, width, dtype=torch.bool)
        for k, c in enumerate(self.contour_candidates):
            cand[k, : len(c)] = remap[c]
            valid[k, : len(c)] = True
        self._contour_index, self._contour_valid = cand, valid
        base = self.neutral[self.lmk_vertices[:, 0]]
        centre = torch.tensor([0.0, float(base[30, 1]), 0.0])
        outward = base[JAW] - centre
        outward[:, 2] = 0
        self._contour_outward = torch.nn.functional.normalize(outward, dim=1)  # (17, 3) in the model frame

    def landmark_space_points(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """(B, U, 3) positions of the landmark-space vertices."""
        pts = self.lmk_mean.unsqueeze(0) + torch.einsum("bk,kuc->buc", alpha, self.lmk_id_basis[: alpha.shape[1]])
        return pts + torch.einsum("be,euc->buc", beta, self.lmk_exp_basis[: beta.shape[1]])

    def landmark_index(self, space_points: torch.Tensor,
                       rotation: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (B, 68, 3) into the landmark space and weights (B, 68, 3) for a pose.

        With ``rotation`` (B, 3, 3), each jaw point takes the candidate furthest out along its outward direction
        in the image (the silhouette); without it the static jaw vertices are used.
        """
        batch = space_points.shape[0]
        index = self._static_index.unsqueeze(0).repeat(batch, 1, 1)
        weights = self.lmk_weights.unsqueeze(0).repeat(batch, 1, 1)
        if rotation is None:
            return index, weights
        cand = space_points[:, self._contour_index]  # (B, 17, C, 3)
        rotated = torch.einsum("bij,bkcj->bkci", rotation, cand)[..., :2]
        direction = torch.nn.functional.normalize(torch.einsum("bij,kj->bki", rotation, self._contour_outward)[..., :2],
                                                  dim=-1)
        score = (rotated * direction.unsqueeze(2)).sum(-1).masked_fill(~self._contour_valid, -torch.inf)
        best = self._contour_index.unsqueeze(0).expand(batch, -1, -1).gather(2, score.argmax(-1, keepdim=True))
        index[:, JAW] = best.expand(-1, -1, 3)
        weights[:, JAW] = torch.tensor([1.0, 0.0, 0.0])
        return index, weights

    @staticmethod
    def gather_landmarks(space_values: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Landmarks from per-vertex values: (B, U, ...) with index/weights (B, 68, 3) -> (B, 68, ...)."""
        batch = torch.arange(space_values.shape[0]).view(-1, 1, 1)
        picked = space_values[batch, index]  # (B, 68, 3, ...)
        w = weights.reshape(*weights.shape, *([1] * (picked.dim() - 3)))
        return (picked * w).sum(2)

    def landmarks68(self, alpha: torch.Tensor, beta: torch.Tensor, rotation: torch.Tensor | None = None,
                    joint_pose: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 68, 3) model-frame landmarks with the jaw contour chosen for ``rotation``, on the mesh posed by
        ``joint_pose`` (articulated models; skinning needs the whole mesh, so this path is slower)."""
        if joint_pose is None:
            pts = self.landmark_space_points(alpha, beta)
        else:
            pts = self.vertices(alpha, beta, joint_pose)[:, self.lmk_space_vertices]
        index, weights = self.landmark_index(pts, rotation)
        return self.gather_landmarks(pts, index, weights)

    def landmarks72(self, alpha: torch.Tensor, beta: torch.Tensor, rotation: torch.Tensor | None = None,
                    joint_pose: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 72, 3): the 68 points plus the pack's four extras, built in 3D so they follow the pose."""
        p68 = self.landmarks68(alpha, beta, rotation, joint_pose)
        extras = torch.from_numpy(extras_from_ibug68(p68.detach().cpu().numpy())).to(p68)
        return torch.cat([p68, extras], dim=1)


# ---- construction helpers ---------------------------------------------------------------------------------------
def contour_slices(neutral: np.ndarray, static_jaw: np.ndarray, nose_tip_y: float,
                   half_width: float = 0.035, max_candidates: int = 48) -> list[np.ndarray]:
    """Candidate vertices for each jaw point: a thin slice of the mesh through the point, parallel to the view axis,
    from the static vertex forwards over the cheek (where the silhouette moves when that side turns away)."""
    centre = np.array([0.0, nose_tip_y])
    slices = []
    for vid in static_jaw:
        p = neutral[vid]
        direction = p[:2] - centre
        radius = np.linalg.norm(direction)
        direction = direction / radius
        rel = neutral[:, :2] - centre
        along = rel @ direction
        across = np.abs(rel[:, 0] * direction[1] - rel[:, 1] * direction[0])
        ok = (across < half_width) & (along > 0.35 * radius) & (neutral[:, 2] >= p[2] - 0.02)
        ids = np.nonzero(ok)[0]
        ids = ids[ids != vid]
        if len(ids) > max_candidates - 1:
            ids = ids[np.linspace(0, len(ids) - 1, max_candidates - 1).round().astype(int)]
        slices.append(np.concatenate([[vid], ids]).astype(np.int64))
    return slices


def frame_normalisation(name: str, neutral: np.ndarray, lmk_vertices: np.ndarray,
                        lmk_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and unit of the shared frame for raw model vertices: normalised = (raw - centre) / unit."""
    lmk = (np.asarray(neutral, np.float32)[lmk_vertices] * lmk_weights[..., None]).sum(1)
    unit = float(np.linalg.norm(lmk[36] - lmk[45]))
    if not np.isfinite(unit) or unit <= 0:
        raise ModelFileError(f"the {name} model's landmark embedding is degenerate (eye corners coincide)",
                             "use an unmodified model file")
    return lmk.mean(0), unit


def normalised_model(name: str, neutral: np.ndarray, id_basis: np.ndarray, exp_basis: np.ndarray, exp_names: list[str],
                     triangles: np.ndarray, lmk_vertices: np.ndarray, lmk_weights: np.ndarray,
                     expression_range: tuple[float, float] | None = (0.0, 1.0)) -> MorphableModel:
    """Centre and scale raw model arrays into the shared frame and build the contour slices."""
    neutral = np.asarray(neutral, np.float32)
    centre, unit = frame_normalisation(name, neutral, lmk_vertices, lmk_weights)
    lmk = (neutral[lmk_vertices] * lmk_weights[..., None]).sum(1)
    neutral = (neutral - centre) / unit
    jaw_static = lmk_vertices[np.arange(17), np.argmax(lmk_weights[:17], axis=1)]
    nose_tip_y = float(((lmk[30] - centre) / unit)[1])
    slices = contour_slices(neutral, np.asarray(jaw_static), nose_tip_y)
    return MorphableModel(
        name=name,
        neutral=torch.from_numpy(neutral),
        id_basis=torch.from_numpy(np.asarray(id_basis, np.float32) / unit),
        exp_basis=torch.from_numpy(np.asarray(exp_basis, np.float32) / unit),
        exp_names=list(exp_names),
        triangles=torch.from_numpy(np.asarray(triangles, np.int64)),
        lmk_vertices=torch.from_numpy(np.asarray(lmk_vertices, np.int64)),
        lmk_weights=torch.from_numpy(np.asarray(lmk_weights, np.float32)),
        contour_candidates=[torch.from_numpy(s) for s in slices],
        expression_range=expression_range,
    )


# ---- ICT-FaceKit ------------------------------------------------------------------------------------------------
ICT_ARRAYS = {"neutral": 2, "tris": 2, "id_basis": 3, "exp_basis": 3, "exp_names": 1}


def load_ict_npz(path: str | pathlib.Path) -> MorphableModel:
    """Load a converted ICT-FaceKit npz (see ``convert_ict_facekit``). Raises ModelFileError naming the path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"the ICT-FaceKit face model was not found at {path}", ict_fetch_hint(path))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        what = "a Python pickle, which the pack never loads" if magic[:1] == b"\x80" else "not an .npz archive"
        raise ModelFileError(f"{path} is not a converted ICT-FaceKit model: it is {what}", ict_invalid_hint(path))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ICT_ARRAYS}
    except KeyError as err:
        raise ModelFileError(f"{path} is not a converted ICT-FaceKit model (it has no array {err})",
                             ict_invalid_hint(path)) from err
    except ValueError as err:  # numpy refuses object arrays (allow_pickle=False) or cannot parse an array
        what = "holds object arrays (pickled Python objects), which the pack never loads" if "allow_pickle" in \
            str(err) else f"holds an unreadable array ({safe_reason(err)})"
        raise ModelFileError(f"{path} is not a converted ICT-FaceKit model: it {what}", ict_invalid_hint(path)) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{path} is not a converted ICT-FaceKit model: it is damaged ({safe_reason(err)})",
                             ict_invalid_hint(path)) from err
    for key, ndim in ICT_ARRAYS.items():
        if arrays[key].ndim != ndim:
            raise ModelFileError(f"{path}: array '{key}' has {arrays[key].ndim} dimensions, expected {ndim}",
                                 ict_invalid_hint(path))
    neutral = arrays["neutral"]
    if neutral.shape[0] <= max(ICT_LMK68) or arrays["tris"].max() >= neutral.shape[0] or \
            arrays["id_basis"].shape[1:] != neutral.shape or arrays["exp_basis"].shape[1:] != neutral.shape:
        raise ModelFileError(f"{path}: array shapes do not match the ICT-FaceKit narrow face topology",
                             ict_invalid_hint(path))
    bad = first_nonfinite({k: arrays[k] for k in ("neutral", "id_basis", "exp_basis")})
    if bad is not None:
        raise ModelFileError(f"{path}: array {bad!r} holds NaN or infinite values (corrupt download?)",
                             ict_invalid_hint(path))
    names = [str(n) for n in arrays["exp_names"]]
    keep = [i for i, n in enumerate(names) if not n.startswith(NON_LANDMARK_EXPRESSIONS)]
    lmk = np.array(ICT_LMK68, np.int64)
    return normalised_model(
        "ICT-FaceKit", neutral, arrays["id_basis"], arrays["exp_basis"][keep], [names[i] for i in keep],
        arrays["tris"], np.stack([lmk, lmk, lmk], 1), np.tile(np.array([1.0, 0.0, 0.0], np.float32), (68, 1)),
    )


def _read_obj(path: pathlib.Path, with_faces: bool) -> tuple[np.ndarray, list[list[int]]]:
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append(line.split()[1:4])
            elif with_faces and line.startswith("f "):
                faces.append([int(t.split("/")[0]) - 1 for t in line.split()[1:]])
    return np.asarray(verts, np.float32), faces


def convert_ict_facekit(facexmodel_dir: str | pathlib.Path, out_path: str | pathlib.Path,
                        progress: bool = True) -> pathlib.Path:
    """Convert the upstream ICT-FaceKit ``FaceXModel/`` OBJs into the compact npz the pack loads, then verify it.

    Keeps the narrow face area (vertices 0-6705), triangulates its polygons and stores identity and expression
    shapes as float16 deltas from the neutral mesh (about 4.7 MB).
    """
    from tqdm import tqdm

    src = pathlib.Path(facexmodel_dir)
    neutral_obj = src / "generic_neutral_mesh.obj"
    if not neutral_obj.is_file():
        raise ModelFileError(f"{neutral_obj} not found",
                             f"point the converter at the FaceXModel folder of {ICT_UPSTREAM}")
    identities = sorted(src.glob("identity*.obj"))
    expressions = sorted(set(src.glob("*.obj")) - set(identities) - {neutral_obj})
    if len(identities) != 100 or len(expressions) < 50:
        raise ModelFileError(f"{src} holds {len(identities)} identity and {len(expressions)} expression OBJs "
                             "(expected 100 and 57)", f"download the complete FaceXModel folder of {ICT_UPSTREAM}")
    nv = ICT_NARROW_FACE_VERTICES
    neutral, polygons = _read_obj(neutral_obj, with_faces=True)
    tris = np.array([[f[0], f[i], f[i + 1]] for f in polygons if max(f) < nv for i in range(1, len(f) - 1)], np.int32)
    deltas = []
    for obj in tqdm(identities + expressions, desc="ICT-FaceKit OBJs", disable=not progress):
        verts, _ = _read_obj(obj, with_faces=False)
        if verts.shape != neutral.shape:
            raise ModelFileError(f"{obj} has {len(verts)} vertices, the neutral mesh has {len(neutral)}",
                                 f"re-download {obj.name} from {ICT_UPSTREAM}")
        deltas.append(verts[:nv] - neutral[:nv])
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".partial.npz")
    np.savez_compressed(
        tmp, neutral=neutral[:nv], tris=tris, id_basis=np.stack(deltas[:100]).astype(np.float16),
        exp_basis=np.stack(deltas[100:]).astype(np.float16), exp_names=np.array([p.stem for p in expressions]),
        lmk68=np.array(ICT_LMK68),
    )
    try:
        load_ict_npz(tmp)  # verification: the loader's checks must pass before the file takes its final name
    except ModelFileError:
        tmp.unlink()
        raise
    tmp.replace(out_path)
    return out_path
