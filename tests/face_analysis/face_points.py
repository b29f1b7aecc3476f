"""Landmark sets on a canvas for the drawing tests: the mean face, and random points around the canvas borders."""

import numpy as np

from comfyui_facesnap.models.face_analysis.landmarks72 import from_ibug68


def mean_face(height, width, scale=0.55, center=(0.5, 0.45)):
    """insightface's 68-point mean shape in the 72-point layout, placed on a (height, width) canvas."""
    from insightface.data import get_object

    shape = np.asarray(get_object("meanshape_68.pkl"), np.float64)[:, :2]
    shape = (shape - shape.mean(axis=0)) / np.ptp(shape, axis=0).max()
    size = scale * min(height, width)
    return from_ibug68(shape * size + np.array([center[0] * width, center[1] * height])).astype(np.float64)


def random_points(rng, height, width, spread=1.3):
    """72 points mostly inside the canvas, some outside on every side, some within a pixel of the borders."""
    pts = rng.uniform(-0.15 * spread, 1 + 0.15 * spread, (72, 2)) * np.array([width, height])
    pts[:6] = [[0.4, 5.0], [0.999, 5.5], [1.0, 6.0], [width - 0.001, 3.5], [width + 2.5, 4.0], [-0.5, 7.0]]
    pts[6:9] = [[5.0, 0.2], [6.0, height + 1.9], [7.0, height - 0.5]]
    return pts
