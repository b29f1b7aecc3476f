"""The 3DMM nodes in ComfyUI: the example workflow through the executor on real photos, and bad input."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.comfy

WORKFLOW = pathlib.Path(__file__).resolve().parents[2] / "workflows" / "facesnap_landmark_predictor.json"


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, default_face_model_path, tmp_path_factory):
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    for name in ("t1.jpg", "mask_black.jpg"):
        shutil.copy(insightface_images / name, comfy_host.input_dir / name)
    models = tmp_path_factory.mktemp("3dmm")
    (models / "ict_face_narrow.npz").symlink_to(default_face_model_path)
    with model_folders_restored() as folder_paths:
        folder_paths.add_model_folder_path("3dmm", str(models))
        yield comfy_host


@pytest.fixture(scope="module")
def prompt(host):
    from comfyui_facesnap.devkit.ui_workflow import object_info
    from comfyui_facesnap.devkit.workflow_format import ui_to_api

    return ui_to_api(json.loads(WORKFLOW.read_text()), object_info(host.node_classes))


def nodes_module():
    from comfyui_facesnap.nodes import predictor_nodes

    return predictor_nodes


@pytest.fixture(scope="module")
def t1_faces(insightface_images):
    """The six faces of t1.jpg (dlib), left to right, as single-face FaceSets."""
    import cv2

    from comfyui_facesnap.models.face_analysis import FaceSet, load_analyzer

    image = cv2.imread(str(insightface_images / "t1.jpg"))[:, :, ::-1].copy()
    records = sorted(load_analyzer("dlib").detect(image), key=lambda r: r.center_x)
    assert len(records) == 6
    return [FaceSet(records=[r], images=[image]) for r in records]


@pytest.fixture(scope="module")
def ict(host):
    return nodes_module().FaceSnap3DMMLoader.execute("ICT-FaceKit", "ict_face_narrow.npz", "generic_model.pkl",
                                                       "landmark_embedding.npy")[0]


def run_predictor(ict, reference, drive=None, **overrides):
    options = dict(pose_source="drive" if drive is not None else "manual", yaw=0.0, pitch=0.0, roll=0.0,
                   keep_reference_expression=False, expression_strength=1.0, neutral_reference=False,
                   frame="drive image", width=256, height=256)
    options.update(overrides)
    return nodes_module().FaceSnapLandmarkPredictor.execute(ict, reference, drive=drive, **options)


def test_workflow_runs_through_the_executor(host, prompt):
    from PIL import Image

    executor = host.run(prompt)
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    images = executor.history_result["outputs"][save_id]["images"]
    assert len(images) == 1
    control = np.asarray(Image.open(host.output_dir / images[0]["subfolder"] / images[0]["filename"]).convert("RGB"))
    assert control.shape == (512, 512, 3)
    assert 0.005 < (control.max(-1) > 0).mean() < 0.2
    previews = [k for k, v in prompt.items() if v["class_type"] == "PreviewImage"]
    assert all(executor.history_result["outputs"][k]["images"] for k in previews)


def _fit_ratio_and_angles(ict, points):
    """Face width / outer-eye-corner distance of the fitted neutral frontal shape, and the fitted yaw/pitch/roll."""
    from comfyui_facesnap.models.face3d.face_fitting import fit_landmarks, matrix_to_euler

    fit = fit_landmarks(ict, torch.as_tensor(points))
    frontal = ict.landmarks68(fit.alpha, torch.zeros_like(fit.beta), torch.eye(3).expand(len(points), 3, 3))
    ratio = ((frontal[:, 0, :2] - frontal[:, 16, :2]).norm(dim=-1)
             / (frontal[:, 36, :2] - frontal[:, 45, :2]).norm(dim=-1))
    return ratio, matrix_to_euler(fit.rotation)


def test_real_photos_keep_reference_proportions_and_drive_pose(ict, t1_faces):
    """Reference and drive are different people of t1.jpg: the prediction has the reference's face proportions and
    the drive's head pose."""
    for ref_index, drive_index in ((2, 3), (5, 1)):
        reference, drive = t1_faces[ref_index], t1_faces[drive_index]
        landmarks = run_predictor(ict, reference, drive)[0]
        ratios, angles = _fit_ratio_and_angles(ict, np.concatenate([reference.records[0].landmarks[None],
                                                                    drive.records[0].landmarks[None],
                                                                    landmarks.points]))
        ref_ratio, drive_ratio, pred_ratio = ratios.tolist()
        assert abs(pred_ratio - ref_ratio) < 0.25 * abs(drive_ratio - ref_ratio) + 0.01, ratios
        assert (angles[2] - angles[1]).abs().max() < 4.0, angles
        # and it sits where the drive face is
        drive_centre = drive.records[0].landmarks[:68].mean(0)
        drive_width = np.ptp(drive.records[0].landmarks[:, 0])
        assert np.linalg.norm(landmarks.points[0, :68].mean(0) - drive_centre) < 0.1 * drive_width


def test_outputs_and_manual_pose_on_canvas(ict, t1_faces):
    landmarks, control, render, overlay, _ = run_predictor(ict, t1_faces[2], None, pose_source="manual", yaw=30.0,
                                                        pitch=-10.0, frame="canvas", width=320, height=256)
    assert landmarks.canvas_sizes == [(256, 320)]
    assert control.shape == render.shape == overlay.shape == (1, 256, 320, 3)
    assert 0.05 < (render[0, ..., 0] > 0).float().mean() < 0.8
    assert torch.equal(render[..., 0], render[..., 2])  # monochrome
    _, angles = _fit_ratio_and_angles(ict, landmarks.points)
    assert abs(angles[0, 0] - 30.0) < 4.0 and abs(angles[0, 1] + 10.0) < 4.0


def test_extreme_manual_angle_is_clamped_with_a_warning(ict, t1_faces, caplog):
    landmarks = run_predictor(ict, t1_faces[2], None, pose_source="manual", yaw=89.0, frame="canvas")[0]
    assert "clamped" in caplog.text
    _, angles = _fit_ratio_and_angles(ict, landmarks.points)
    assert angles[0, 0] < 80.0


def test_drive_without_face_uses_the_manual_pose(ict, t1_faces, insightface_images):
    import cv2

    from comfyui_facesnap.models.face_analysis import FaceSet, load_analyzer
    from comfyui_facesnap.models.face_analysis.select import cut_crops, plan_crops
    from comfyui_facesnap.nodes.errors import FaceSnapNodeError

    blank = cv2.imread(str(insightface_images / "mask_black.jpg"))[:, :, ::-1].copy()
    _, no_face = cut_crops(plan_crops(load_analyzer("dlib"), [blank], on_no_face="skip"))
    landmarks, control, _, _, report = run_predictor(ict, t1_faces[2], no_face, frame="drive crop", yaw=25.0)
    assert np.isfinite(landmarks.points).all() and landmarks.canvas_sizes == [(512, 512)]
    assert report.startswith("drive item 0 has no face: the manual pose (yaw 25°")
    _, angles = _fit_ratio_and_angles(ict, landmarks.points)
    assert abs(angles[0, 0] - 25.0) < 4.0
    result = run_predictor(ict, t1_faces[2], no_face, pose_source="manual", frame="canvas")
    assert np.isfinite(result[0].points).all()
    with pytest.raises(FaceSnapNodeError, match="reference has no face"):
        run_predictor(ict, FaceSet(records=[], images=[]), t1_faces[3])


def test_missing_model_file_names_the_path(host):
    import folder_paths

    from comfyui_facesnap.nodes.errors import FaceSnapNodeError

    with pytest.raises(FaceSnapNodeError) as err:
        nodes_module().FaceSnap3DMMLoader.execute("ICT-FaceKit", "not_there.npz", "generic_model.pkl",
                                                    "landmark_embedding.npy", download_if_missing=False)
    expected = str(pathlib.Path(folder_paths.get_folder_paths("3dmm")[0]) / "not_there.npz")
    assert "FaceSnap3DMMLoader" in str(err.value) and expected in str(err.value)
    assert "ICT-VGL/ICT-FaceKit" in str(err.value) and "convert_ict_facekit.py" in str(err.value)
    with pytest.raises(FaceSnapNodeError, match="flame_file generic_model.pkl was not found"):
        nodes_module().FaceSnap3DMMLoader.execute("FLAME", "", "generic_model.pkl", "landmark_embedding.npy")
