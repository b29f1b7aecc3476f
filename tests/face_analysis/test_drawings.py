"""The registry of control drawings (drawings.py): each drawing is declared once, the style inputs, their tooltips and
docs/nodes.md come from it, and every drawing goes through one rendering path."""

import pathlib

import cv2
import numpy as np
import pytest

from comfyui_facesnap.models.face_analysis.drawings import DRAWINGS, FACESNAP72
from comfyui_facesnap.models.face_analysis.landmark_views import render_landmarks
from comfyui_facesnap.models.face_analysis.landmarks72 import LandmarkSet
from face_points import mean_face

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "nodes.md"


def style_input(node):
    return next(spec for spec in node.define_schema().inputs if spec.id == "style")


@pytest.mark.comfy
def test_style_inputs_offer_every_drawing_with_its_summary(comfy_host):
    from comfyui_facesnap.nodes.face_nodes import FaceSnapDrawLandmarks
    from comfyui_facesnap.nodes.predictor_nodes import FaceSnapLandmarkPredictor

    for node in (FaceSnapDrawLandmarks, FaceSnapLandmarkPredictor):
        style = style_input(node)
        assert style.options == list(DRAWINGS) and style.default == FACESNAP72 == "facesnap72"
        for drawing in DRAWINGS.values():
            assert f"{drawing.name}: {drawing.summary}" in style.tooltip


def test_the_node_docs_list_every_drawing():
    text = DOCS.read_text()
    for drawing in DRAWINGS.values():
        assert f"| `{drawing.name}` | {drawing.point_set.name} | {drawing.uses} | {drawing.summary} |" in text


@pytest.mark.comfy
def test_draw_keypoints_is_filed_with_the_drawing_nodes(comfy_host):
    from comfyui_facesnap.nodes import face_nodes, instantid_nodes

    assert face_nodes.FaceSnapDrawKeypoints in face_nodes.NODES
    assert face_nodes.FaceSnapDrawKeypoints.define_schema().category == "FaceSnap/Face"
    assert not any(node.define_schema().node_id == "FaceSnapDrawKeypoints" for node in instantid_nodes.NODES)


@pytest.mark.comfy
def test_node_classes_are_named_after_their_ids(comfy_host):
    from comfyui_facesnap.nodes import all_nodes

    assert [n.__name__ for n in all_nodes()] == [n.define_schema().node_id for n in all_nodes()]


@pytest.mark.parametrize("style", list(DRAWINGS))
def test_every_drawing_renders_over_the_photo_through_one_path(style):
    """Control image and overlay of a LandmarkSet scaled to another size: the overlay is the same drawing over the
    photo (area-averaged when shrunk, bilinear when enlarged), for every drawing alike."""
    points = mean_face(200, 200)[None]
    photo = np.random.default_rng(3).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    landmarks = LandmarkSet(points, [(200, 200)], [photo])
    for height, width, interpolation in ((120, 100, cv2.INTER_AREA), (320, 256, cv2.INTER_LINEAR)):
        (control,), (overlay,) = render_landmarks(landmarks, width, height, style)
        assert control.shape == overlay.shape == (height, width, 3) and control.any()
        drawn = control.any(axis=2)
        background = cv2.resize(photo, (width, height), interpolation=interpolation)
        np.testing.assert_array_equal(overlay[drawn], control[drawn])
        np.testing.assert_array_equal(overlay[~drawn], background[~drawn])
