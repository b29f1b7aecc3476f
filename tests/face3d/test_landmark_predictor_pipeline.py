"""The Landmark Predictor's logic as a plain numpy/torch module: validation, the choice between
landmark fitting and a face regressor, faceless drive items, canvas sizes and the drawn outputs, without ComfyUI."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError, NoFaceError
from comfyui_facesnap.models.face3d.landmark_predictor import PredictorSettings, draw_prediction, predict_from_faces
from comfyui_facesnap.models.face_analysis import FaceSet
from comfyui_facesnap.models.face_analysis.select import no_face_record

ROOT = pathlib.Path(__file__).resolve().parents[2]


def faces(rng, with_face: list[bool], crop_size: int = 128) -> FaceSet:
    from comfyui_facesnap.models.face_analysis.record import FaceRecord

    records, images, boxes = [], [], []
    for index, has_face in enumerate(with_face):
        lmk = rng.uniform([60, 80], [200, 240], (72, 2)).astype(np.float32)
        records.append(FaceRecord(bbox=np.array([60, 80, 200, 240], np.float32), score=1.0, kps5=lmk[:5],
                                  landmarks=lmk, backend="dlib", image_index=index) if has_face
                       else no_face_record(index, "dlib"))
        images.append(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))
        boxes.append(np.array([40.0, 60.0, 220.0, 240.0], np.float32))
    return FaceSet(records=records, images=images, crop_boxes=boxes, crop_size=crop_size)


def test_mixed_drive_batch_keeps_order_sizes_and_says_what_it_did(flame_model):  # noqa: F811
    rng = np.random.default_rng(0)
    reference, drive = faces(rng, [True, False]), faces(rng, [True, False, True])
    settings = PredictorSettings(manual_angles=(80.0, 0.0, 0.0), frame="drive crop")
    prediction = predict_from_faces(flame_model, reference, drive, settings)
    assert prediction.landmarks.points.shape == (3, 72, 2) and np.isfinite(prediction.landmarks.points).all()
    assert prediction.landmarks.canvas_sizes == [(128, 128)] * 3
    assert prediction.warnings[0] == "reference item 1 has no face and was left out"
    assert "drive item 1 has no face: the manual pose (yaw 80°" in prediction.warnings[1]
    assert any(w.startswith("drive item 1: yaw 80° clamped to 75°") for w in prediction.warnings)
    assert torch.allclose(prediction.angles[1], torch.tensor([75.0, 0.0, 0.0]))
    # the faceless item sits on its own crop (with the crop as the overlay's photo), centred
    assert prediction.landmarks.backgrounds[1].shape == (128, 128, 3)
    centre = 0.5 * (prediction.landmarks.points[1].min(0) + prediction.landmarks.points[1].max(0))
    assert np.abs(centre - 64).max() < 1.0
    controls, renders, overlays = draw_prediction(flame_model, prediction)
    assert [c.shape for c in controls] == [(128, 128, 3)] * 3 and [tuple(r.shape) for r in renders] == [(128, 128)] * 3
    assert all(o.shape == (128, 128, 3) for o in overlays) and renders[1].max() > 0


def test_manual_pose_on_canvas_and_refusals(flame_model):  # noqa: F811
    rng = np.random.default_rng(1)
    reference = faces(rng, [True])
    manual = PredictorSettings(pose_source="manual", canvas_size=(96, 160))
    prediction = predict_from_faces(flame_model, reference, faces(rng, [True]), manual)
    assert prediction.landmarks.canvas_sizes == [(96, 160)] and prediction.warnings == []
    with pytest.raises(NoFaceError, match="reference has no face"):
        predict_from_faces(flame_model, faces(rng, [False]), None, manual)
    with pytest.raises(InvalidInputError, match="no drive faces are connected"):
        predict_from_faces(flame_model, reference, None, PredictorSettings())
    with pytest.raises(InvalidInputError, match="unknown frame"):
        predict_from_faces(flame_model, reference, None, PredictorSettings(pose_source="manual", frame="crops"))
    mixed_sizes = faces(rng, [True, True])
    mixed_sizes.images[1] = mixed_sizes.images[1][:200]
    with pytest.raises(InvalidInputError, match="different sizes"):
        predict_from_faces(flame_model, reference, mixed_sizes, PredictorSettings(frame="drive image"))


def test_the_node_is_a_thin_adapter():
    """The predictor node calls the model module; it does no fitting, placement or drawing itself."""
    tree = ast.parse((ROOT / "nodes" / "predictor_nodes.py").read_text())
    called = {node.func.id if isinstance(node.func, ast.Name) else node.func.attr
              for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert {"predict_from_faces", "draw_prediction"} <= called
    assert not called & {"fit_references_and_drives", "predict", "render_shaded", "draw_control_image",
                         "faces_to_landmarks", "regress_faces"}
    source = (ROOT / "models" / "face3d" / "landmark_predictor.py").read_text()
    assert not [line for line in source.splitlines() if line.startswith(("import", "from")) and "comfy" in line]
