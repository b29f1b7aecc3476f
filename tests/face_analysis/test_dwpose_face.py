"""The ``dwpose_face`` drawing against the DWPose preprocessor's face drawing, pixel for pixel.

The reference (dwpose_reference.py) re-reads easy_dwpose, the preprocessor named on the card of
dimitribarbot/controlnet-dwpose-sdxl-1.0, independently of the module under test.
"""

import numpy as np
import pytest

from comfyui_facesnap.models.face_analysis.drawings import draw_landmarks
from dwpose_reference import detect_canvas, face_drawing, preprocessor_output
from face_points import mean_face, random_points

STYLE = "dwpose_face"


def assert_matches_dwpose(pts, height, width):
    drawn = draw_landmarks(pts, height, width, STYLE)
    np.testing.assert_array_equal(drawn, face_drawing(pts[:68], height, width))
    return drawn


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (7, 5), (64, 64), (512, 512), (768, 512), (333, 1021),
                                          (600, 333), (1216, 832)])
def test_face_points_match_dwpose_pixel_for_pixel(height, width):
    rng = np.random.default_rng(height * 7919 + width)
    for _ in range(3):
        assert_matches_dwpose(random_points(rng, height, width), height, width)
    assert_matches_dwpose(mean_face(height, width), height, width)


def test_coordinates_take_the_normalised_round_trip():
    """DWPose divides by the canvas size and multiplies back before truncating: at some whole-pixel coordinates
    that lands a pixel lower (x = 21 on a 333-wide canvas draws at column 20). Truncating the pixels directly, as
    the current A1111 and ComfyUI DWPose nodes do, would miss that."""
    height, width = 600, 333
    pts = np.full((72, 2), np.nan)
    pts[:8] = [[x, y] for x, y in zip([21, 29, 42, 49, 58, 84, 93, 98], [55, 79, 97, 110, 123, 158, 171, 194],
                                      strict=True)]
    assert [int(x / float(width) * width) for x in pts[:8, 0]] == list(pts[:8, 0].astype(int) - 1)
    drawn = assert_matches_dwpose(pts, height, width)
    for x, y in pts[:8].astype(int):
        assert drawn[y - 1, x - 4].all() and not drawn[y - 1, x + 3].any(), f"dot centred at ({x - 1}, {y - 1})"


def test_only_the_68_face_points_are_drawn():
    height, width = 256, 256
    pts = mean_face(height, width)
    moved = pts.copy()
    moved[68:] += 23.0  # pupils, glabella, forehead: not DWPose face points
    np.testing.assert_array_equal(draw_landmarks(moved, height, width, STYLE),
                                  draw_landmarks(pts, height, width, STYLE))
    moved[67] += 9.0
    assert (draw_landmarks(moved, height, width, STYLE) != draw_landmarks(pts, height, width, STYLE)).any()
    pupils = draw_landmarks(pts, height, width, "openpose_face") & ~draw_landmarks(pts, height, width, STYLE)
    assert pupils.any(), "openpose_face also draws the pupils; dwpose_face does not"


def test_undetected_points_are_skipped():
    height, width = 96, 128
    pts = mean_face(height, width)
    pts[3] = [np.nan, 40.0]
    pts[40] = [np.inf, -np.inf]
    pts[50] = [-1.0, -1.0]
    pts[61] = [2.0 ** 40, 2.0 ** 40]
    assert_matches_dwpose(pts, height, width)
    assert not draw_landmarks(np.full((72, 2), np.nan), height, width, STYLE).any()


@pytest.mark.parametrize("height,width", [(1024, 1024), (1216, 832), (768, 512), (832, 1216)])
def test_at_multiples_of_64_the_drawing_is_the_preprocessor_output(height, width):
    """With detect_resolution = the short side (the card's call for a square or portrait pose photo), DWPose draws
    at the photo's own size and its final resize changes nothing: the output is the pack's drawing."""
    assert detect_canvas(height, width, min(height, width)) == (height, width)
    pts = mean_face(height, width, scale=0.3)
    expected = preprocessor_output(pts[:68], height, width, min(height, width))
    np.testing.assert_array_equal(draw_landmarks(pts, height, width, STYLE), expected)
    assert set(np.unique(expected)) == {0, 255}


def test_elsewhere_the_preprocessor_resamples_its_drawing():
    """At 520 x 520 DWPose draws on a 512 canvas and resizes bilinearly: grey dot edges the pack does not draw
    (docs/how-it-works.md says so)."""
    pts = mean_face(520, 520)
    assert detect_canvas(520, 520, 520) == (512, 512)
    resampled = preprocessor_output(pts[:68], 520, 520, 520)
    assert len(np.unique(resampled)) > 2
    assert set(np.unique(draw_landmarks(pts, 520, 520, STYLE))) == {0, 255}
