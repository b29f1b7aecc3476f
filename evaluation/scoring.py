"""Per-image metrics and per-mode summaries of an evaluation run.

Faces are found with the pack's face analyzer (largest face per image) and scored by every judge given (one FaceSim
column each, and a copy-paste score per judge where the person has held-out photos). Missing models leave their
metrics out, with the reason kept in ``Scorers.notes``; a generated image without a face gets no face metric and is
counted. CLIP-I is PuLID's: the CLIP image cosine between a mode's image and the plain-SDXL baseline's image of the
same person, prompt and seed (how much inserting the identity changed the picture), when the run has that baseline.
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
from .face_similarity import copy_paste, likeness
from .fid import FidScore
from .generation import Generation
from .workflow_modes import PoseControl

FACE_CROP_MARGIN = 0.2  # around the detection box, as a fraction of the face size
FACE_CROP_SIZE = 224
BASELINE_MODE = "sdxl"  # the plain-SDXL rows that CLIP-I compares each mode with


def copy_paste_name(metric: str) -> str:
    return metric.replace("FaceSim", "CopyPaste")


@dataclass
class Scorers:
    analyzer: object  # a models.face_analysis analyzer (insightface or dlib backend)
    judges: list = field(default_factory=list)  # models.face_analysis.recognisers judges, one FaceSim column each
    clip: ClipScorer | None = None
    fid_extractor: torch.nn.Module | None = None
    morphable: object | None = None  # models.face3d MorphableModel
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed

    @property
    def metrics(self) -> list[str]:
        return [judge.spec.metric for judge in self.judges]


@dataclass
class Person:
    photos: list[np.ndarray]
    faces: list[FaceRecord]
    features: dict[str, np.ndarray]  # metric -> (N, D) judge features of the reference photos
    held_out: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (M, D): photos the generator never saw
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


def _faces_of(paths: Sequence[pathlib.Path], scorers: Scorers, what: str) -> tuple[list, list]:
    photos, faces = [], []
    for path in paths:
        photo = read_rgb(path)
        face = largest_face(scorers.analyzer, photo)
        if face is None:
            raise NoFaceError(f"no face found in the {what} photo {path} ({scorers.analyzer.name} analyzer)",
                              f"use {what} photos with a clearly visible face")
        photos.append(photo)
        faces.append(face)
    return photos, faces


def judge_features(scorers: Scorers, photos: Sequence[np.ndarray],
                   faces: Sequence[FaceRecord]) -> dict[str, np.ndarray]:
    return {judge.spec.metric: judge.features(list(zip(photos, faces, strict=True))) for judge in scorers.judges}


def analyse_people(people: dict[str, Sequence[pathlib.Path]], scorers: Scorers,
                   held_out: dict[str, Sequence[pathlib.Path]] | None = None) -> dict[str, Person]:
    """Each person's reference photos (and held-out photos, for the copy-paste score) through every judge."""
    result = {}
    for name, paths in people.items():
        photos, faces = _faces_of(paths, scorers, "reference")
        person = Person(photos, faces, judge_features(scorers, photos, faces))
        if (held_out or {}).get(name):
            person.held_out = judge_features(scorers, *_faces_of(held_out[name], scorers, "held-out"))
        if scorers.clip is not None:
            person.clip = scorers.clip.image_features([face_crop(p, f) for p, f in zip(photos, faces, strict=True)])
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


def _clip_scores(scorers: Scorers, generations, images, faces, found, people) -> tuple:
    """(CLIP-T per image, CLIP-face per image with a face, CLIP-I per image with a baseline twin), or Nones."""
    if scorers.clip is None:
        return None, {}, {}
    features = scorers.clip.image_features(images)
    clip_t = clip_score(features, scorers.clip.text_features([g.prompt for g in generations]))
    clip_face = {}
    if found:
        crops = scorers.clip.image_features([face_crop(images[i], faces[i]) for i in found])
        clip_face = {i: float((100.0 * crops[k] @ people[generations[i].person].clip.T).mean())
                     for k, i in enumerate(found)}
    twins = {(g.person, g.prompt_index, g.seed): i for i, g in enumerate(generations) if g.mode == BASELINE_MODE}
    clip_i = {i: float(100.0 * features[i] @ features[twins[(g.person, g.prompt_index, g.seed)]])
              for i, g in enumerate(generations)
              if g.mode != BASELINE_MODE and (g.person, g.prompt_index, g.seed) in twins}
    return clip_t, clip_face, clip_i


def _face_rows(scorers: Scorers, images, faces, found, generations, people) -> dict[int, dict]:
    """FaceSim per judge (and copy-paste where the person has held-out photos) of each image with a face."""
    rows = {i: {} for i in found}
    for judge in scorers.judges:
        metric = judge.spec.metric
        features = judge.features([(images[i], faces[i]) for i in found]) if found else []
        for feature, i in zip(features, found, strict=True):
            person = people[generations[i].person]
            rows[i][metric] = 100.0 * likeness(feature, person.features[metric])
            if len(person.held_out.get(metric, ())):
                rows[i][copy_paste_name(metric)] = 100.0 * copy_paste(feature, person.features[metric],
                                                                      person.held_out[metric])
    return rows


def score_images(out_dir: pathlib.Path, generations: Sequence[Generation], people: dict[str, Person],
                 controls: dict[str, PoseControl], drive: FaceParams | None, scorers: Scorers) -> list[dict]:
    """One row per generated image (the per-image CSV)."""
    images = [read_rgb(out_dir / g.image) for g in generations]
    faces = [largest_face(scorers.analyzer, image) for image in images]
    found = [i for i, f in enumerate(faces) if f is not None]
    clip_t, clip_face, clip_i = _clip_scores(scorers, generations, images, faces, found, people)
    face_scores = _face_rows(scorers, images, faces, found, generations, people)
    params = {}
    if scorers.morphable is not None and found:
        params = dict(zip(found, fit_faces(scorers.morphable, [faces[i] for i in found]), strict=True))
    metrics = [*scorers.metrics, *map(copy_paste_name, scorers.metrics)]
    rows = []
    for i, gen in enumerate(generations):
        person, face = people[gen.person], faces[i]
        row = {"mode": gen.mode, "person": gen.person, "prompt_index": gen.prompt_index, "seed": gen.seed,
               "prompt": gen.prompt, "image": gen.image, "seconds": gen.seconds, "timing": gen.timing,
               "peak_vram_gb": None if gen.peak_vram_bytes is None else gen.peak_vram_bytes / 2**30,
               "server": gen.server, "face_found": face is not None,
               "CLIP-T": None if clip_t is None else float(clip_t[i]), "CLIP-face": clip_face.get(i),
               "CLIP-I": clip_i.get(i), **{m: None for m in metrics}, **face_scores.get(i, {}),
               "Pose": None, "Expr": None, "Shape": None, **{name: None for name in ANGLE_NAMES}}
        if i in params:
            fitted = params[i]
            row.update(zip(ANGLE_NAMES, (float(a) for a in fitted.angles), strict=True))
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
              metrics: Sequence[str]) -> dict[str, dict]:
    """Per mode: the Table 1 figures (means over images with a face where a face is needed), one FaceSim and one
    copy-paste score per judge, CLIP-I, FID, median seconds per image, the highest sampled VRAM, and the Diff-PC
    errors."""
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        seconds = [r["seconds"] for r in mine if r["seconds"] is not None]
        vram = [r["peak_vram_gb"] for r in mine if r["peak_vram_gb"] is not None]
        means = [*metrics, *map(copy_paste_name, metrics), "CLIP-T", "CLIP-face", "CLIP-I", "Pose", "Expr", "Shape"]
        summary[mode] = {
            "images": len(mine), "faces_found": sum(r["face_found"] for r in mine),
            **{name: _mean(r.get(name) for r in mine) for name in means}, "FID": fid.get(mode),
            "seconds_per_image": float(np.median(seconds)) if seconds else None,
            "timing": sorted({r["timing"] for r in mine}),
            "peak_vram_gb": max(vram) if vram else None,
            "servers": sorted({r["server"] for r in mine if r.get("server")}),
            "control": controls[mode].kind,
        }
    return summary
