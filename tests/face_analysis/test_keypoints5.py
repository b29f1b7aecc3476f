"""InstantID's five keypoints: the control image pixel for pixel, and the keypoints from every landmark source."""

import math

import numpy as np
import pytest

from comfyui_facesnap.devkit.synthetic_shards import mean_face_68
from comfyui_facesnap.models.face_analysis.align import ARCFACE_DST, arcface_matrix
from comfyui_facesnap.models.face_analysis.keypoints5 import (
    draw_kps,
    kps5_from_ibug68,
    kps5_from_landmarks72,
    kps5_from_record,
)
from comfyui_facesnap.models.face_analysis.landmarks72 import from_ibug68
from comfyui_facesnap.models.face_analysis.record import FaceRecord

cv2 = pytest.importorskip("cv2")


def reference_draw_kps(kps, height, width):
    """The procedure of InstantID's draw_kps (pipeline_stable_diffusion_xl_instantid.py), step by step: a float
    canvas, limbs (outer point -> nose) as ellipse polygons in the outer point's colour, the canvas times 0.6 cast
    to uint8, then a filled radius-10 circle per keypoint; numpy arithmetic in the keypoints' own dtype."""
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    kps = np.array(kps)
    canvas = np.zeros([height, width, 3])
    for a, b in [[0, 2], [1, 2], [3, 2], [4, 2]]:
        xs, ys = kps[[a, b]][:, 0], kps[[a, b]][:, 1]
        length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), 4), int(angle), 0, 360, 1)
        canvas = cv2.fillConvexPoly(canvas.copy(), polygon, colors[a])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i, (x, y) in enumerate(kps):
        canvas = cv2.circle(canvas.copy(), (int(x), int(y)), 10, colors[i], -1)
    return canvas


def _random_kps(rng, height, width, dtype):
    centre = rng.uniform([-0.1 * width, -0.1 * height], [1.1 * width, 1.1 * height])
    size = rng.uniform(8, 0.8 * max(height, width))
    template = (ARCFACE_DST - ARCFACE_DST.mean(0)) / 112.0
    angle = rng.uniform(-np.pi, np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    jitter = rng.normal(0, 0.05, (5, 2))
    return ((template + jitter) @ rotation.T * size + centre).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_draw_kps_matches_instantid_pixel_for_pixel(dtype):
    rng = np.random.default_rng(0)
    for case in range(80):
        height, width = [(1024, 1024), (768, 1344), (97, 61), (64, 64)][case % 4]
        kps = _random_kps(rng, height, width, dtype)
        np.testing.assert_array_equal(draw_kps(kps, height, width), reference_draw_kps(kps, height, width),
                                      err_msg=f"case {case}: {kps.tolist()}")


def test_draw_kps_keeps_float32_arithmetic():
    """insightface's keypoints are float32; in float32 this limb's centre truncates to x = 106, in float64 to 105."""
    kps = np.array([[85.13390350341797, 71.94419860839844], [170.0, 70.0], [126.8660888671875, 94.72694396972656],
                    [100.0, 140.0], [150.0, 140.0]], np.float32)
    assert not np.array_equal(reference_draw_kps(kps, 200, 200), reference_draw_kps(kps.astype(np.float64), 200, 200))
    np.testing.assert_array_equal(draw_kps(kps, 200, 200), reference_draw_kps(kps, 200, 200))


def test_draw_kps_colours_and_layers():
    kps = np.array([[40, 40], [88, 40], [64, 64], [44, 90], [84, 90]], np.float32)
    image = draw_kps(kps, 128, 128)
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    for (x, y), colour in zip(kps.astype(int), [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)],
                              strict=True):
        assert tuple(image[y, x]) == colour  # circles in full colour, on top
    assert tuple(image[52, 52]) == (153, 0, 0), "the limb from the image-left eye to the nose, at 0.6"
    assert tuple(image[77, 54]) == (153, 153, 0), "the limb from the image-left mouth corner"
    assert tuple(image[0, 0]) == (0, 0, 0)
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours <= {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
                       (153, 0, 0), (0, 153, 0), (153, 153, 0), (153, 0, 153)}
    assert not draw_kps(np.full((5, 2), np.nan), 32, 32).any()
    with pytest.raises(ValueError, match="5 keypoints"):
        draw_kps(np.zeros((4, 2)), 32, 32)
    with pytest.raises(ValueError, match="far outside"):
        draw_kps(kps * 1e9, 32, 32)
    np.testing.assert_array_equal(draw_kps(kps.astype(int), 128, 128), reference_draw_kps(kps.astype(int), 128, 128))


def test_keypoints_from_68_and_72_points():
    points68 = mean_face_68((160.0, 170.0), 120.0)
    points72 = from_ibug68(points68)
    kps = kps5_from_landmarks72(points72)
    expected = np.stack([points68[36:42].mean(0), points68[42:48].mean(0), points68[30], points68[48], points68[54]])
    np.testing.assert_array_equal(kps, expected)
    np.testing.assert_array_equal(kps5_from_ibug68(points68), kps)
    assert kps5_from_landmarks72(np.stack([points72, points72 + 1])).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="72"):
        kps5_from_landmarks72(points68)


def _template_residual(kps: np.ndarray) -> float:
    """Distance from insightface's ArcFace 5-point template after the best similarity fit, in eye distances."""
    matrix = arcface_matrix(kps)
    mapped = kps @ matrix[:, :2].T + matrix[:, 2]
    return float(np.abs(mapped - ARCFACE_DST).max() / np.linalg.norm(ARCFACE_DST[1] - ARCFACE_DST[0]))


def test_keypoints_follow_insightfaces_order():
    """Eyes, nose tip, mouth corners, image-left first: the mean face fits insightface's template; a mirrored or
    shuffled order does not (a similarity cannot mirror)."""
    kps = kps5_from_ibug68(mean_face_68((56.0, 56.0), 80.0))
    assert _template_residual(kps) < 0.2
    for order in ([1, 0, 2, 3, 4], [0, 1, 2, 4, 3], [0, 1, 3, 2, 4]):
        assert _template_residual(kps[order]) > 0.35


def test_keypoints_from_detector_records(insightface_images):
    pytest.importorskip("dlib")
    from comfyui_facesnap.models.face_analysis import load_analyzer

    image = np.ascontiguousarray(cv2.imread(str(insightface_images / "t1.jpg"))[..., ::-1])
    faces = load_analyzer("dlib").detect(image, with_embedding=False)
    assert len(faces) == 6
    for face in faces:
        np.testing.assert_array_equal(kps5_from_record(face), face.kps5)
        np.testing.assert_allclose(kps5_from_landmarks72(face.landmarks), face.kps5, atol=1e-4)
        (left_eye, right_eye, nose, left_mouth, right_mouth) = face.kps5
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    record = FaceRecord(bbox=np.zeros(4, np.float32), score=1.0, kps5=ARCFACE_DST.copy(),
                        landmarks=np.zeros((72, 2), np.float32), backend="insightface")
    np.testing.assert_array_equal(kps5_from_record(record), ARCFACE_DST)
