"""Per-image metrics and per-mode summaries of an evaluation run.

Faces are found with the pack's face analyzer (largest face per image). Missing models leave their metrics out,
with the reason kept in ``Scorers.notes``; a generated image without a face gets no face metric and is counted.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.errors import NoFaceError
from ..models.face_analysis.align import crop_square, square_box
from ..models.face_analysis.record import FaceRecord
from .clip_scores import ClipScorer, clip_score
from .face_geometry import ANGLE_NAMES, FaceParams, expression_error, fit_faces, pose_error, shape_error
from .face_similarity import identity_feature, likeness, metric_name
from .fid import FidScore
from .generation import Generation
from .workflow_modes import PoseControl

FACE_CROP_MARGIN = 0.2  # around the detection box, as a fraction of the face size
FACE_CROP_SIZE = 224


@dataclass
class Scorers:
    analyzer: object  # a models.face_analysis analyzer (insightface or dlib backend)
    clip: ClipScorer | None = None
    fid_extractor: torch.nn.Module | None = None
    morphable: object | None = None  # models.face3d MorphableModel
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed

    @property
    def facesim_name(self) -> str:
        return metric_name(self.analyzer.name)


@dataclass
class Person:
    photos: list[np.ndarray]
    faces: list[FaceRecord]
    features: list[np.ndarray]
    clip: torch.Tensor | None = None  # (N, D) CLIP features of the face crops
    params: list[FaceParams] | None = None  # 3DMM fits with one shared identity


def read_rgb(path: pathlib.Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise NoFaceError(f"cannot read the image {path}", "use a PNG, JPEG or WebP file")
    return np.ascontiguousarray(bgr[..., ::-1])


def face_crop(image: np.ndarray, record: FaceRecord) -> np.ndarray:
    return crop_square(image, square_box(record.bbox, FACE_CROP_MARGIN), FACE_CROP_SIZE)


def largest_face(analyzer, image: np.ndarray) -> FaceRecord | None:
    faces = analyzer.detect(image)
    return faces[0] if faces else None


def analyse_people(people: dict[str, Sequence[pathlib.Path]], scorers: Scorers) -> dict[str, Person]:
    result = {}
    for name, paths in people.items():
        photos, faces = [], []
        for path in paths:
            photo = read_rgb(path)
            face = largest_face(scorers.analyzer, photo)
            if face is None:
                raise NoFaceError(f"no face found in the reference photo {path} ({scorers.analyzer.name} analyzer)",
                                  "use reference photos with a clearly visible face")
            photos.append(photo)
            faces.append(face)
        person = Person(photos, faces, [identity_feature(f) for f in faces])
        if scorers.clip is not None:
            person.clip = scorers.clip.image_features([face_crop(p, f) for p, f in zip(photos, faces)])
        if scorers.morphable is not None:
            person.params = fit_faces(scorers.morphable, faces, shared_identity=True)
        result[name] = person
    return result


def analyse_drive(path: pathlib.Path | None, scorers: Scorers) -> FaceParams | None:
    if path is None or scorers.morphable is None:
        return None
    face = largest_face(scorers.analyzer, read_rgb(path))
    if face is None:
        raise NoFaceError(f"no face found in the drive photo {path}", "use a drive photo with a clearly visible face")
    return fit_faces(scorers.morphable, [face])[0]


def _control_target(control: PoseControl, person: Person, drive: FaceParams | None):
    """(angles, expression params) the generated face should show, each None when the workflow sets none."""
    if control.kind == "reference" and person.params:
        return person.params[0].angles, person.params[0]
    if control.kind == "drive" and drive is not None:
        return drive.angles, drive
    if control.kind == "manual":
        return np.asarray(control.angles, np.float64), None
    return None, None


def score_images(out_dir: pathlib.Path, generations: Sequence[Generation], people: dict[str, Person],
                 controls: dict[str, PoseControl], drive: FaceParams | None, scorers: Scorers) -> list[dict]:
    """One row per generated image (the per-image CSV)."""
    images = [read_rgb(out_dir / g.image) for g in generations]
    faces = [largest_face(scorers.analyzer, image) for image in images]
    found = [i for i, f in enumerate(faces) if f is not None]
    clip_t = clip_face = None
    if scorers.clip is not None:
        texts = scorers.clip.text_features([g.prompt for g in generations])
        clip_t = clip_score(scorers.clip.image_features(images), texts)
        if found:
            crops = scorers.clip.image_features([face_crop(images[i], faces[i]) for i in found])
            clip_face = {i: float((100.0 * crops[k] @ people[generations[i].person].clip.T).mean())
                         for k, i in enumerate(found)}
    params = {}
    if scorers.morphable is not None and found:
        params = dict(zip(found, fit_faces(scorers.morphable, [faces[i] for i in found])))
    rows = []
    for i, gen in enumerate(generations):
        person, face = people[gen.person], faces[i]
        row = {"mode": gen.mode, "person": gen.person, "prompt_index": gen.prompt_index, "seed": gen.seed,
               "prompt": gen.prompt, "image": gen.image, "seconds": gen.seconds, "timing": gen.timing,
               "peak_vram_gb": None if gen.peak_vram_bytes is None else gen.peak_vram_bytes / 2**30,
               "face_found": face is not None, "CLIP-T": None if clip_t is None else float(clip_t[i]),
               "CLIP-face": (clip_face or {}).get(i), scorers.facesim_name: None, "Pose": None, "Expr": None,
               "Shape": None, **{name: None for name in ANGLE_NAMES}}
        if face is not None:
            row[scorers.facesim_name] = 100.0 * likeness(identity_feature(face), person.features)
        if i in params:
            fitted = params[i]
            row.update(zip(ANGLE_NAMES, (float(a) for a in fitted.angles)))
            target_angles, target_expression = _control_target(controls[gen.mode], person, drive)
            if target_angles is not None:
                row["Pose"] = pose_error(fitted, target_angles)
            if target_expression is not None:
                row["Expr"] = expression_error(fitted, target_expression)
            if person.params:
                row["Shape"] = shape_error(fitted, person.params[0])
        rows.append(row)
    return rows


def fid_by_mode(out_dir: pathlib.Path, generations: Sequence[Generation], people: dict[str, Person],
                extractor: torch.nn.Module) -> dict[str, float | None]:
    """FID of each mode's images against all reference photos (None with fewer than 2 images on a side)."""
    photos = [photo for person in people.values() for photo in person.photos]
    if len(photos) < 2:
        return {}
    fid = FidScore(extractor)
    fid.add(photos, real=True)
    result = {}
    for mode in dict.fromkeys(g.mode for g in generations):
        images = [read_rgb(out_dir / g.image) for g in generations if g.mode == mode]
        if len(images) < 2:
            result[mode] = None
            continue
        fid.reset_generated()
        fid.add(images, real=False)
        result[mode] = fid.compute()
    return result


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: Sequence[dict], fid: dict[str, float | None], controls: dict[str, PoseControl],
              facesim_name: str) -> dict[str, dict]:
    """Per mode: the Table 1 figures (means over images with a face where a face is needed), FID, median seconds
    per image, the highest sampled VRAM, and the Diff-PC errors."""
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        seconds = [r["seconds"] for r in mine if r["seconds"] is not None]
        vram = [r["peak_vram_gb"] for r in mine if r["peak_vram_gb"] is not None]
        summary[mode] = {
            "images": len(mine), "faces_found": sum(r["face_found"] for r in mine),
            "CLIP-T": _mean(r["CLIP-T"] for r in mine), "CLIP-face": _mean(r["CLIP-face"] for r in mine),
            facesim_name: _mean(r[facesim_name] for r in mine), "FID": fid.get(mode),
            "seconds_per_image": float(np.median(seconds)) if seconds else None,
            "timing": sorted({r["timing"] for r in mine}),
            "peak_vram_gb": max(vram) if vram else None,
            "Pose": _mean(r["Pose"] for r in mine), "Expr": _mean(r["Expr"] for r in mine),
            "Shape": _mean(r["Shape"] for r in mine), "control": controls[mode].kind,
        }
    return summary
