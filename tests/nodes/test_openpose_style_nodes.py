"""The ``style`` input of Draw Landmarks and the Landmark Predictor, through ComfyUI's real executor.

The OpenPose styles must hand out exactly ``draw_openpose_face`` of the node's own landmarks (that function is
checked against controlnet_aux's convention in face_analysis/test_openpose_face.py), and the default must stay
FaceSnap's drawing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from comfyui_facesnap.devkit.comfy_host import cached_output

pytestmark = pytest.mark.comfy

OPENPOSE = {  # style -> draw_openpose_face options
    "openpose_face": dict(include_head=False),
    "openpose_face_head": dict(include_head=True),
    "openpose_face_head_xinsir": dict(include_head=True, xinsir_sticks=True),
}


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images):
    for name in ("Tom_Hanks_54745.png", "t1.jpg"):
        shutil.copy(insightface_images / name, comfy_host.input_dir / name)
    return comfy_host


@pytest.fixture(scope="module")
def predictor_host(host, default_face_model_path, tmp_path_factory):
    """The host with a face model in a 3dmm folder: the real ICT-FaceKit conversion when ../shared has it, else the
    procedural one (devkit/synthetic_face_model.py)."""
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    models = tmp_path_factory.mktemp("3dmm")
    (models / "ict_face_narrow.npz").symlink_to(default_face_model_path)
    with model_folders_restored() as folder_paths:
        folder_paths.add_model_folder_path("3dmm", str(models))
        yield host


def output(executor, node: str, index: int):
    return cached_output(executor, node, index)


def as_uint8(image) -> np.ndarray:
    """One IMAGE batch item back to the RGB uint8 the node drew (IMAGE = uint8 / 255)."""
    return (image.numpy() * 255.0).round().astype(np.uint8)


def faces_graph(image: str = "Tom_Hanks_54745.png", size: int = 256, selection: str = "largest") -> dict:
    return {
        "analyzer": {"class_type": "FaceSnapFaceAnalyzerLoader",
                     "inputs": {"backend": "dlib", "provider": "CPU", "dlib_detector": "hog"}},
        "photo": {"class_type": "LoadImage", "inputs": {"image": image}},
        "crop": {"class_type": "FaceSnapFaceCrop",
                 "inputs": {"analyzer": ["analyzer", 0], "image": ["photo", 0], "selection": selection, "index": 0,
                            "size": size, "margin": 0.5, "if_no_face": "error"}},
    }


def draw_graph(**draw_inputs) -> dict:
    g = faces_graph()
    g["draw"] = {"class_type": "FaceSnapDrawLandmarks", "inputs": {"faces": ["crop", 1], **draw_inputs}}
    g["preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["draw", 0]}}
    return g


@pytest.mark.parametrize("style", list(OPENPOSE))
def test_draw_landmarks_openpose_output_is_the_convention_pixel_for_pixel(host, style):
    from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks
    from comfyui_facesnap.models.face_analysis.openpose_face import draw_openpose_face

    width, height = 640, 512  # not the crop's 256 x 256: points are scaled, then drawn at this size
    executor = host.run(draw_graph(frame="crop", width=width, height=height, style=style))
    crop = faces_to_landmarks(output(executor, "crop", 1), "crop")
    points = crop.points[0] * np.array([width / 256.0, height / 256.0], np.float32)
    expected = draw_openpose_face(points, height, width, **OPENPOSE[style])
    control, overlay = (as_uint8(output(executor, "draw", i)[0]) for i in (0, 1))
    np.testing.assert_array_equal(control, expected)
    drawn = expected.any(axis=2)
    assert drawn.mean() > 0.005 and (expected[..., 0] == 255).sum() > 70 * 20, "a face was drawn"
    np.testing.assert_array_equal(overlay[drawn], expected[drawn])
    assert overlay[~drawn].any(axis=1).mean() > 0.3, "the overlay is drawn over the photo"


def test_draw_landmarks_style_defaults_to_the_facesnap_drawing(host):
    from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks
    from comfyui_facesnap.models.face_analysis.landmarks72 import draw_control_image

    executor = host.run(draw_graph())  # a workflow saved before the style input existed
    crop = faces_to_landmarks(output(executor, "crop", 1), "crop")
    np.testing.assert_array_equal(as_uint8(output(executor, "draw", 0)[0]),
                                  draw_control_image(crop.points[0], 256, 256))
    explicit = host.run(draw_graph(style="facesnap72"))
    np.testing.assert_array_equal(output(explicit, "draw", 0).numpy(), output(executor, "draw", 0).numpy())


def test_an_unknown_style_is_a_named_error(host):
    valid = host.validate(draw_graph(style="openpose_full"))
    if valid[3]:  # newer hosts (v0.8.0) check combo values themselves and refuse the prompt before the node runs
        message = str(valid[3])
        assert "value_not_in_list" in message and "style: 'openpose_full' not in" in message, message
    else:
        executor = host.run(draw_graph(style="openpose_full"), expect_success=False)
        message = host.error_message(executor)
        assert "[FaceSnapDrawLandmarks] style = 'openpose_full' is not one of its choices" in message, message
    assert "openpose_face_head" in message


def predictor_graph(style: str, drive: bool, **settings) -> dict:
    g = faces_graph("t1.jpg", size=192)
    g["3dmm"] = {"class_type": "FaceSnap3DMMLoader",
                 "inputs": {"model": "ICT-FaceKit", "ict_file": "ict_face_narrow.npz",
                            "flame_file": "generic_model.pkl", "flame_landmarks": "landmark_embedding.npy",
                            "download_if_missing": False}}
    inputs = {"model": ["3dmm", 0], "reference": ["crop", 1], "pose_source": "drive" if drive else "manual",
              "yaw": 25.0, "pitch": -10.0, "roll": 5.0, "keep_reference_expression": False,
              "expression_strength": 1.0, "neutral_reference": False, "frame": "canvas", "width": 512,
              "height": 384, "style": style, **settings}
    if drive:
        g["drive_crop"] = {**g["crop"], "inputs": {**g["crop"]["inputs"], "selection": "index", "index": 2}}
        inputs["drive"] = ["drive_crop", 1]
    g["predictor"] = {"class_type": "FaceSnapLandmarkPredictor", "inputs": inputs}
    g["preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["predictor", 1]}}
    return g


@pytest.mark.parametrize("style,drive,frame", [("openpose_face_head", False, "canvas"),
                                               ("openpose_face", True, "drive crop")],
                         ids=["manual-pose-on-canvas", "drive-crop"])
def test_predictor_openpose_control_image_is_the_convention_pixel_for_pixel(predictor_host, style, drive, frame):
    from comfyui_facesnap.models.face_analysis.openpose_face import draw_openpose_face

    executor = predictor_host.run(predictor_graph(style, drive, frame=frame))
    landmarks = output(executor, "predictor", 0)
    height, width = (384, 512) if frame == "canvas" else (192, 192)
    assert landmarks.canvas_sizes == [(height, width)]
    control, overlay = as_uint8(output(executor, "predictor", 1)[0]), as_uint8(output(executor, "predictor", 3)[0])
    np.testing.assert_array_equal(control, draw_openpose_face(landmarks.points[0], height, width, **OPENPOSE[style]))
    assert control.any(axis=2).mean() > 0.005
    drawn = control.any(axis=2)
    np.testing.assert_array_equal(overlay[drawn], control[drawn])
    if drive:  # over the drive face's crop
        np.testing.assert_array_equal(overlay, draw_openpose_face(landmarks.points[0], height, width,
                                                                  canvas=landmarks.backgrounds[0], **OPENPOSE[style]))


def test_draw_landmarks_dwpose_face_is_the_preprocessor_drawing_pixel_for_pixel(host):
    from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks
    from dwpose_reference import face_drawing

    width, height = 640, 512
    executor = host.run(draw_graph(frame="crop", width=width, height=height, style="dwpose_face"))
    crop = faces_to_landmarks(output(executor, "crop", 1), "crop")
    points = crop.points[0] * np.array([width / 256.0, height / 256.0], np.float32)
    expected = face_drawing(points[:68], height, width)
    control, overlay = (as_uint8(output(executor, "draw", i)[0]) for i in (0, 1))
    np.testing.assert_array_equal(control, expected)
    drawn = expected.any(axis=2)
    assert (expected[..., 0] == 255).sum() > 60 * 20, "a face was drawn"
    np.testing.assert_array_equal(overlay[drawn], expected[drawn])
    assert overlay[~drawn].any(axis=1).mean() > 0.3, "the overlay is drawn over the photo"


def test_predictor_dwpose_face_is_the_preprocessor_drawing_pixel_for_pixel(predictor_host):
    from dwpose_reference import face_drawing

    executor = predictor_host.run(predictor_graph("dwpose_face", False))
    landmarks = output(executor, "predictor", 0)
    control = as_uint8(output(executor, "predictor", 1)[0])
    np.testing.assert_array_equal(control, face_drawing(landmarks.points[0][:68], 384, 512))
    assert control.any(axis=2).mean() > 0.005


def test_draw_landmarks_kps5_style_is_the_draw_keypoints_node(host):
    from comfyui_facesnap.models.face_analysis.align import box_to_crop_matrix, transform_points
    from comfyui_facesnap.models.face_analysis.keypoints5 import draw_kps

    g = draw_graph(frame="crop", width=384, height=320, style="instantid_kps5")
    g["kps"] = {"class_type": "FaceSnapDrawKeypoints",
                "inputs": {"faces": ["crop", 1], "frame": "crop", "width": 384, "height": 320}}
    g["kps_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["kps", 1]}}
    executor = host.run(g)
    for index in (0, 1):
        np.testing.assert_array_equal(output(executor, "draw", index).numpy(), output(executor, "kps", index).numpy())
    faces = output(executor, "crop", 1)
    kps = transform_points(faces.records[0].kps5, box_to_crop_matrix(faces.crop_boxes[0], faces.crop_size))
    expected = draw_kps(kps * np.array([384 / 256, 320 / 256], np.float32), 320, 384)
    np.testing.assert_array_equal(as_uint8(output(executor, "draw", 0)[0]), expected)
    assert expected.any()
