"""Small synthetic training shards: a drawn face per sample, one colour and one fixed random embedding per person.

Used by the training tests and by benchmarks/learning_evidence.py.
"""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np

from ..models.face_analysis.landmarks72 import draw_control_image, from_ibug68
from ..training.face_crops import CropConfig, make_crop
from ..training.shards import SHARD_PATTERN, ShardWriter, encode_image, encode_npy


def mean_face_68(center: tuple[float, float], size: float) -> np.ndarray:
    from insightface.data import get_object

    shape = np.asarray(get_object("meanshape_68.pkl"), np.float32)[:, :2]
    shape = (shape - shape.mean(0)) / np.ptp(shape[:, 0])
    return shape * size + np.asarray(center, np.float32)


def write_synthetic_shards(root: pathlib.Path, identities: int = 2, per_identity: int = 3, size: int = 256,
                           seed: int = 0, caption: str | None = None, arcface_norm: bool = True) -> pathlib.Path:
    """Each identity is a face-coloured ellipse with its own hue and a fixed random embedding.

    Captions name the person unless ``caption`` gives one shared caption (then only the identity features tell
    the people apart). ``arcface_norm``: store a raw-embedding norm per person (20, 23, ...), as prepare does;
    False writes shards as they were before prepare stored it."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    crop_cfg = CropConfig(size=size, min_short_side=64, face_crop_size=64)
    with ShardWriter(root / SHARD_PATTERN.format(0)) as writer:
        for person in range(identities):
            colour = rng.integers(60, 230, 3)
            embedding = rng.normal(size=512).astype(np.float32)
            embedding /= np.linalg.norm(embedding)
            for k in range(per_identity):
                photo = np.full((320, 320, 3), rng.integers(0, 255, 3), np.uint8)
                pts = from_ibug68(mean_face_68((160 + rng.uniform(-10, 10), 165), 110))
                cv2.ellipse(photo, (160, 160), (65, 85), 0, 0, 360, colour.tolist(), -1)
                bbox = np.concatenate([pts.min(0), pts.max(0)])
                kps5 = np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
                crop = make_crop(photo, bbox, pts, kps5, crop_cfg, rng)
                meta = {"caption": caption or f"person {person}", "identity": f"id{person}",
                        "landmarks": crop.landmarks.tolist(), "kps5": crop.kps5.tolist(),
                        "face_kps5": crop.face_kps5.tolist(), "bbox": crop.bbox.tolist()}
                if arcface_norm:
                    meta["arcface_norm"] = 20.0 + 3.0 * person
                writer.write(f"p{person}s{k}", {
                    "image.jpg": encode_image(crop.image, "jpg"), "face.jpg": encode_image(crop.face, "jpg"),
                    "mask.png": encode_image(crop.mask, "png"),
                    "control.png": encode_image(draw_control_image(crop.landmarks, size, size), "png"),
                    "json": json.dumps(meta).encode(), "arcface.npy": encode_npy(embedding),
                })
    return root
