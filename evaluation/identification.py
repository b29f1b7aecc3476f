"""Identification: is each generated face closest to held-out photos of its own person, among all the people?

The metrics are fixed feature extractors that no trained model here ever optimised against:

* ``DlibDescriptor``: dlib's 128-D face-recognition descriptor (ResNet, ``face-recognition-models``), computed at
  *known* 68-point landmark positions (the landmarks a sample was drawn with) on an image upscaled to 256², so that
  tiny or rough generated faces are aligned the same way as real ones, without a detector that could miss them.
* ``mean_colour_in_landmarks``: the mean RGB (in [0, 1]) inside the convex hull of the 68 landmarks. It measures
  the colour and lighting of the face region, nothing about facial features; it is the metric for people who differ
  only in colour (the learning benchmark's synthetic set), where dlib's descriptor sees no difference.

The rule: a probe is assigned the identity whose gallery features have the smallest *mean* Euclidean distance to its
own (``identify``). Top-1 accuracy is compared with chance 1/K for K people by an exact one-sided binomial test and a
Wilson 95 % interval (which treat the probes as independent; probes of one person share its conditioning, so they
are not) and by a gallery-relabelling test over all K! assignments of names to galleries, which needs no
independence: it asks whether the true assignment scores better than the others.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

DESCRIPTOR_SIDE = 256  # images are resized (bicubic) to this side before dlib aligns its 150² chip
SIGNIFICANCE = 0.05


class DlibDescriptor:
    """dlib's 128-D descriptor of the face at given 68 iBUG landmarks (x, y in the image's pixels)."""

    name = "dlib 128-D descriptor at the drawn landmarks"

    def __init__(self):
        import dlib

        from ..models.face_analysis.dlib_backend import DLIB_FILES, dlib_model_dir

        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(dlib_model_dir() / DLIB_FILES["descriptor"]))

    def __call__(self, rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        import cv2

        height, width = rgb.shape[:2]
        big = cv2.resize(np.asarray(rgb, np.uint8), (DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), interpolation=cv2.INTER_CUBIC)
        points = np.asarray(landmarks68, np.float64)[:68] * [DESCRIPTOR_SIDE / width, DESCRIPTOR_SIDE / height]
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        rect = self._dlib.rectangle(int(x1), int(y1), int(math.ceil(x2)), int(math.ceil(y2)))
        shape = self._dlib.full_object_detection(rect, [self._dlib.point(int(round(x)), int(round(y)))
                                                        for x, y in points])
        return np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(big), shape, 0), np.float64)


def mean_colour_in_landmarks(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """Mean RGB in [0, 1] inside the convex hull of the 68 landmarks (pixel coordinates of ``rgb``)."""
    import cv2

    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(np.asarray(landmarks68)[:68]).astype(np.int32)), 1)
    if not mask.any():
        raise ValueError("the landmarks enclose no pixel")
    return np.asarray(rgb, np.float64)[mask.astype(bool)].mean(0) / 255.0


def _mean_distances(probes: np.ndarray, gallery: np.ndarray, labels: np.ndarray, names: list,
                    skip_self: bool) -> np.ndarray:
    distances = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=-1)
    if skip_self:
        np.fill_diagonal(distances, np.nan)
    return np.stack([np.nanmean(distances[:, labels == name], axis=1) for name in names], axis=1)


def identify(probes: np.ndarray, gallery: np.ndarray, gallery_labels: Sequence, leave_one_out: bool = False) -> list:
    """The identity of each probe: smallest mean Euclidean distance to that identity's gallery features.

    ``leave_one_out``: probe i is gallery item i (or a version of it, e.g. after a VAE round trip) and is compared
    with the other gallery items only (the metric's own ceiling: how well it identifies real held-out photos)."""
    probes, gallery = np.atleast_2d(np.asarray(probes, np.float64)), np.atleast_2d(np.asarray(gallery, np.float64))
    labels = np.asarray(list(gallery_labels), dtype=object)
    if leave_one_out and probes.shape != gallery.shape:
        raise ValueError("leave_one_out needs one probe per gallery item")
    names = sorted(set(labels.tolist()))
    if leave_one_out and min(int((labels == name).sum()) for name in names) < 2:
        raise ValueError("leave_one_out needs at least two gallery items per identity")
    scores = _mean_distances(probes, gallery, labels, names, leave_one_out)
    return [names[i] for i in scores.argmin(axis=1)]


def binomial_p_value(correct: int, n: int, chance: float) -> float:
    """Exact one-sided P(X >= correct) for X ~ Binomial(n, chance)."""
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, {n}], not {correct}")
    return float(min(1.0, sum(math.comb(n, k) * chance**k * (1 - chance) ** (n - k) for k in range(correct, n + 1))))


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default)."""
    if n <= 0:
        raise ValueError("the interval needs at least one trial")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def relabelling_p_value(truth: Sequence, predicted: Sequence, names: Sequence) -> float:
    """Fraction of the K! assignments of identity names to galleries that score at least the true assignment's
    accuracy (the true one included), so it is never below 1/K!."""
    truth, predicted = list(truth), list(predicted)
    names = list(names)
    if len(names) > 8:
        raise ValueError("the relabelling test enumerates K! assignments; K must be at most 8")
    observed = sum(t == p for t, p in zip(truth, predicted, strict=True))
    at_least = 0
    for perm in itertools.permutations(names):
        rename = dict(zip(names, perm, strict=True))
        at_least += sum(t == rename[p] for t, p in zip(truth, predicted, strict=True)) >= observed
    return at_least / math.factorial(len(names))


def identification_summary(truth: Sequence, predicted: Sequence, names: Sequence) -> dict:
    """Top-1 accuracy against chance, with both tests, the interval and each identity's own accuracy.

    ``above_chance``: both p-values below 0.05 (defined before any run of the learning benchmark)."""
    truth, predicted, names = list(truth), list(predicted), sorted(names)
    n = len(truth)
    if n == 0 or len(predicted) != n:
        raise ValueError("truth and predicted must be equally long and not empty")
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    chance = 1.0 / len(names)
    p_binomial = binomial_p_value(correct, n, chance)
    p_relabel = relabelling_p_value(truth, predicted, names)
    per_identity = {}
    for name in names:
        own = [p for t, p in zip(truth, predicted, strict=True) if t == name]
        per_identity[str(name)] = round(sum(p == name for p in own) / len(own), 4) if own else None
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": round(correct / n, 4), "correct": correct, "samples": n, "chance": round(chance, 4),
        "p_binomial": p_binomial, "wilson95": [round(low, 4), round(high, 4)], "p_relabelling": round(p_relabel, 4),
        "per_identity": per_identity,
        "above_chance": bool(p_binomial < SIGNIFICANCE and p_relabel < SIGNIFICANCE),
    }
