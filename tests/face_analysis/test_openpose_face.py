"""The ``openpose_face`` drawing against the OpenPose preprocessors' convention, pixel for pixel.

The reference below re-reads controlnet_aux 0.0.10's ``draw_poses`` / ``draw_bodypose`` / ``draw_facepose``
(open_pose/util.py; Fannovel16/comfyui_controlnet_aux draws the same) as a plain loop over normalised keypoints,
``None`` for an undetected one, written independently of the module under test.
"""

import math
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from comfyui_facesnap.models.face_analysis import openpose_face as op
from face_points import mean_face, random_points


class Keypoint(NamedTuple):
    x: float
    y: float


REF_EPS = 0.01
REF_LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13], [13, 14],
             [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
REF_COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
              [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
              [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]


def reference_drawing(face, body, height, width, stick_scale=1):
    """draw_poses(draw_body=body is not None, draw_hand=False, draw_face=True) for one person."""
    canvas = np.zeros((height, width, 3), np.uint8)
    if body is not None:
        for (a, b), color in zip(REF_LIMBS, REF_COLORS, strict=False):
            k1, k2 = body[a - 1], body[b - 1]
            if k1 is None or k2 is None:
                continue
            Y = np.array([k1.x, k2.x]) * float(width)
            X = np.array([k1.y, k2.y]) * float(height)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            polygon = cv2.ellipse2Poly((int(np.mean(Y)), int(np.mean(X))), (int(length / 2), 4 * stick_scale),
                                       int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
        for keypoint, color in zip(body, REF_COLORS, strict=False):
            if keypoint is not None:
                cv2.circle(canvas, (int(keypoint.x * width), int(keypoint.y * height)), 4, color, thickness=-1)
    for keypoint in face:
        if keypoint is None:
            continue
        x, y = int(keypoint.x * width), int(keypoint.y * height)
        if x > REF_EPS and y > REF_EPS:
            cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def as_keypoints(points, height, width):
    """Pixel points as a detector hands them over: normalised, None where not detected (NaN, inf, absurdly far)."""
    out = []
    for x, y in np.asarray(points, np.float64):
        ok = math.isfinite(x) and math.isfinite(y) and max(abs(x), abs(y)) <= 2.0 ** 24
        out.append(Keypoint(float(x) / float(width), float(y) / float(height)) if ok else None)
    return out


def assert_matches_convention(pts, height, width, include_head=False, include_pupils=True, xinsir_scale=None):
    """Draw with the module and with the reference on the same points; they must agree on every pixel."""
    face = as_keypoints(pts[:70] if include_pupils else pts[:68], height, width)
    body = as_keypoints(op.head_keypoints(pts), height, width) if include_head else None
    expected = reference_drawing(face, body, height, width, stick_scale=xinsir_scale or 1)
    drawn = op.draw_openpose_face(pts, height, width, include_head=include_head, include_pupils=include_pupils,
                                  xinsir_sticks=xinsir_scale is not None)
    np.testing.assert_array_equal(drawn, expected)
    return drawn


CANVASES = [(1, 1), (2, 3), (7, 5), (64, 64), (512, 512), (768, 512), (333, 1021), (2048, 1536)]


@pytest.mark.parametrize("height,width", CANVASES)
def test_face_points_match_the_preprocessors_pixel_for_pixel(height, width):
    rng = np.random.default_rng(height * 7919 + width)
    for _ in range(3):
        assert_matches_convention(random_points(rng, height, width), height, width)
    assert_matches_convention(mean_face(height, width), height, width)


def test_border_rules_truncate_and_drop_row_and_column_zero():
    height, width = 40, 50
    pts = np.full((72, 2), np.nan)
    pts[0] = [0.99, 20.0]     # int() -> column 0: dropped
    pts[1] = [20.0, 0.5]      # row 0: dropped
    pts[2] = [-0.5, 30.0]     # truncates toward zero to column 0: dropped
    pts[3] = [1.0, 10.0]      # column 1: drawn
    pts[4] = [10.7, 12.9]     # truncated, not rounded: centre (10, 12)
    pts[5] = [width + 2.9, 25.0]  # beyond the right edge: clipped circle still reaches the last column
    image = assert_matches_convention(pts, height, width)
    assert not image[16:25, :5].any() and not image[:5, 16:25].any() and not image[26:35, :5].any()
    assert (image[10, 1] == 255).all() and (image[10, 4] == 255).all() and not image[10, 5].any()
    assert (image[12, 10] == 255).all() and (image[12, 13] == 255).all() and not image[12, 14].any()
    assert (image[25, width - 1] == 255).all()


def test_invalid_points_are_undetected_not_errors():
    height, width = 96, 128
    pts = mean_face(height, width)
    pts[3] = [np.nan, 40.0]
    pts[40] = [np.inf, -np.inf]
    pts[50] = [-1.0, -1.0]          # the detectors' "not found" marker in pixels
    pts[60] = [1e30, 20.0]
    pts[61] = [2.0 ** 40, 2.0 ** 40]
    assert_matches_convention(pts, height, width)
    assert not op.draw_openpose_face(np.full((72, 2), np.nan), height, width).any()


def test_face_only_drawing_is_white_dots_on_black():
    height, width = 256, 256
    image = op.draw_openpose_face(mean_face(height, width), height, width)
    assert set(np.unique(image)) == {0, 255}
    assert (image.min(axis=2) == image.max(axis=2)).all()  # every pixel is black or white, no colour
    rows, cols = np.nonzero(image[..., 0])
    face = mean_face(height, width)
    assert rows.min() >= int(face[:70, 1].min()) - 3 and cols.max() <= int(face[:70, 0].max()) + 3


def test_72_to_70_mapping_keeps_indices_and_drops_glabella_and_forehead():
    height, width = 200, 200
    pts = mean_face(height, width)
    np.testing.assert_array_equal(op.openpose_face70(pts), pts[:70])
    # OpenPose-face 68 sits in the eye drawn by 36-41 (subject's right), 69 in 42-47.
    np.testing.assert_allclose(pts[68], pts[36:42].mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(pts[69], pts[42:48].mean(axis=0), atol=1e-4)
    moved = pts.copy()
    moved[70:] += 37.0
    np.testing.assert_array_equal(op.draw_openpose_face(moved, height, width),
                                  op.draw_openpose_face(pts, height, width))
    moved[68] += 9.0
    assert (op.draw_openpose_face(moved, height, width) != op.draw_openpose_face(pts, height, width)).any()


def test_without_pupils_matches_the_68_point_dwpose_drawing():
    height, width = 300, 240
    assert_matches_convention(mean_face(height, width), height, width, include_pupils=False)


@pytest.mark.parametrize("height,width", [(7, 5), (64, 64), (512, 512), (768, 1024), (1536, 1024)])
def test_head_keypoints_match_draw_bodypose(height, width):
    rng = np.random.default_rng(height + width)
    faces = [mean_face(height, width), mean_face(height, width, scale=1.6, center=(0.5, 0.9)),
             random_points(rng, height, width)]
    for pts in faces:
        assert_matches_convention(pts, height, width, include_head=True)


@pytest.mark.parametrize("height,width,scale", [(480, 480, 1), (512, 768, 2), (1024, 1024, 3), (3000, 2000, 5),
                                                (6000, 200, 7)])
def test_xinsir_stick_scaling_widens_limbs_like_the_comfyui_pack(height, width, scale):
    assert_matches_convention(mean_face(height, width, scale=0.3), height, width, include_head=True, xinsir_scale=scale)


def test_head_keypoint_positions_and_colours():
    height, width = 1024, 1024
    pts = mean_face(height, width, scale=0.35, center=(0.5, 0.35))
    body = op.head_keypoints(pts)
    idx = op.BODY_PART_INDEX
    np.testing.assert_array_equal(body[idx["nose"]], pts[30])
    np.testing.assert_array_equal(body[idx["right_eye"]], pts[68])
    np.testing.assert_array_equal(body[idx["left_eye"]], pts[69])
    across = pts[16] - pts[0]
    np.testing.assert_allclose(body[idx["right_ear"]], pts[0] - 0.1 * across)
    np.testing.assert_allclose(body[idx["left_ear"]], pts[16] + 0.1 * across)
    jaw_mid = (pts[0] + pts[16]) / 2
    neck = body[idx["neck"]]
    assert neck[0] == pytest.approx(jaw_mid[0]) and neck[1] > pts[8][1]
    assert neck[1] - jaw_mid[1] == pytest.approx(1.9 * np.linalg.norm(pts[8] - jaw_mid))
    others = [i for i in range(18) if i not in idx.values()]
    assert np.isnan(body[others]).all()

    image = op.draw_openpose_face(pts, height, width, include_head=True)
    expected_rgb = {"nose": (255, 0, 0), "neck": (255, 85, 0), "right_eye": (170, 0, 255),
                    "left_eye": (255, 0, 255), "right_ear": (255, 0, 170), "left_ear": (255, 0, 85)}
    for name, rgb in expected_rgb.items():
        x, y = (int(v) for v in body[idx[name]])
        # Nose and eyes carry a white face dot (radius 3) on top: their colour shows in the disc's outer ring.
        probe = (y, x + 4) if name in ("nose", "right_eye", "left_eye") else (y, x)
        assert tuple(image[probe]) == rgb, name
    neck_mid = ((body[idx["neck"]] + body[idx["nose"]]) / 2).astype(int)
    assert tuple(image[neck_mid[1], neck_mid[0]]) == (0, 0, 153)  # neck-nose limb: 0.6 x blue


def test_far_ear_is_hidden_when_the_head_turns():
    height, width = 512, 512
    pts = mean_face(height, width)
    across = pts[16] - pts[0]
    turned = pts.copy()
    turned[30] = pts[0] + 0.1 * across  # nose tip near the right jaw end: the head looks to its right
    body = op.head_keypoints(turned)
    assert np.isnan(body[op.BODY_PART_INDEX["right_ear"]]).all()
    assert np.isfinite(body[op.BODY_PART_INDEX["left_ear"]]).all()
    turned[30] = pts[0] + 0.9 * across
    body = op.head_keypoints(turned)
    assert np.isfinite(body[op.BODY_PART_INDEX["right_ear"]]).all()
    assert np.isnan(body[op.BODY_PART_INDEX["left_ear"]]).all()
    assert_matches_convention(turned, height, width, include_head=True)


def test_head_limbs_skip_missing_keypoints():
    height, width = 256, 256
    pts = mean_face(height, width)
    pts[30] = np.nan  # no nose: every head limb but eye-ear loses an end
    assert np.isnan(op.head_keypoints(pts)[op.BODY_PART_INDEX["nose"]]).all()
    assert_matches_convention(pts, height, width, include_head=True)


def test_draws_over_a_copy_of_a_canvas():
    height, width = 64, 80
    photo = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    before = photo.copy()
    pts = mean_face(height, width)
    drawn = op.draw_openpose_face(pts, height, width, canvas=photo)
    np.testing.assert_array_equal(photo, before)
    dots = op.draw_openpose_face(pts, height, width) == 255
    np.testing.assert_array_equal(drawn[dots], 255)
    np.testing.assert_array_equal(drawn[~dots.all(axis=2)], photo[~dots.all(axis=2)])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="72"):
        op.draw_openpose_face(np.zeros((68, 2)), 10, 10)
    with pytest.raises(ValueError, match="positive"):
        op.draw_openpose_face(np.zeros((72, 2)), 0, 10)
    with pytest.raises(ValueError, match="uint8"):
        op.draw_openpose_face(np.zeros((72, 2)), 10, 10, canvas=np.zeros((10, 10, 3), np.float32))


def test_preprocessor_size_follows_the_short_side_rule():
    assert op.preprocessor_size(1024, 768, 512) == (683, 512)
    assert op.preprocessor_size(512, 512, 512) == (512, 512)
    assert op.preprocessor_size(900, 1600, 1024) == (1024, 1820)


# --- the nodes' style switch (drawings.py) and the predictor's drawing step ---------------------------------
STYLE_OPTIONS = {"openpose_face": dict(include_head=False), "openpose_face_head": dict(include_head=True),
                 "openpose_face_head_xinsir": dict(include_head=True, xinsir_sticks=True)}


@pytest.mark.parametrize("style", list(STYLE_OPTIONS))
def test_each_openpose_style_is_the_convention_with_its_options(style):
    from comfyui_facesnap.models.face_analysis.drawings import STYLES, draw_landmarks

    height, width = 600, 520  # above 500 px, so the xinsir style's sticks are wider (x2)
    pts = mean_face(height, width, scale=0.3)
    assert style in STYLES and STYLES[0] == "facesnap72"
    np.testing.assert_array_equal(draw_landmarks(pts, height, width, style),
                                  op.draw_openpose_face(pts, height, width, **STYLE_OPTIONS[style]))
    scale = 2 if STYLE_OPTIONS[style].get("xinsir_sticks") else None
    assert_matches_convention(pts, height, width, include_head=STYLE_OPTIONS[style]["include_head"],
                              xinsir_scale=scale)


def test_facesnap72_style_is_the_ffrnet_drawing_and_unknown_styles_are_refused():
    from comfyui_facesnap.models.errors import InvalidInputError
    from comfyui_facesnap.models.face_analysis.drawings import draw_landmarks
    from comfyui_facesnap.models.face_analysis.landmarks72 import draw_control_image

    pts = mean_face(128, 128)
    np.testing.assert_array_equal(draw_landmarks(pts, 128, 128), draw_control_image(pts, 128, 128))
    with pytest.raises(InvalidInputError, match="openpose_face_head"):
        draw_landmarks(pts, 128, 128, "openpose")


def test_predictor_drawing_step_uses_the_style_for_control_and_overlay():
    from types import SimpleNamespace

    import torch

    from comfyui_facesnap.models.face3d.landmark_predictor import Prediction, draw_prediction
    from comfyui_facesnap.models.face_analysis.landmarks72 import LandmarkSet, draw_control_image

    height, width = 96, 128
    pts = mean_face(height, width)
    triangle = torch.tensor([[[20.0, 10.0, 5.0], [100.0, 20.0, 5.0], [60.0, 90.0, 5.0]]])
    photo = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    prediction = Prediction(LandmarkSet(pts[None], [(height, width)], [photo]), triangle, torch.zeros(1, 3), [])
    model = SimpleNamespace(triangles=torch.tensor([[0, 2, 1]]))
    controls, renders, overlays = draw_prediction(model, prediction, "openpose_face_head")
    np.testing.assert_array_equal(controls[0], op.draw_openpose_face(pts, height, width, include_head=True))
    np.testing.assert_array_equal(overlays[0], op.draw_openpose_face(pts, height, width, include_head=True,
                                                                     canvas=photo))
    assert float(renders[0].max()) > 0
    default = draw_prediction(model, prediction)
    np.testing.assert_array_equal(default[0][0], draw_control_image(pts, height, width))
