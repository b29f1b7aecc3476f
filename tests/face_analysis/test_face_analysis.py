"""models.face_analysis on real photos (dlib) and on generated antelopev2 stand-ins (insightface), offline."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest

from comfyui_facesnap.devkit.onnx_antelopev2 import (
    BBOX_DISTANCE,
    FIRING_CELL,
    FIRING_STRIDE,
    antelopev2_folder,
    hide_insightface,
    make_antelopev2,
)
from comfyui_facesnap.models.errors import MissingDependencyError, ModelFileError, NoFaceError
from comfyui_facesnap.models.face_analysis import load_analyzer
from comfyui_facesnap.models.face_analysis.align import arcface_crop, crop_square, square_box
from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks, render_landmarks
from comfyui_facesnap.models.face_analysis.select import cut_crops, is_no_face, plan_crops, select_faces


def read_rgb(path) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="session")
def t1(insightface_images):
    return read_rgb(insightface_images / "t1.jpg")


@pytest.fixture(scope="session")
def dlib_analyzer():
    return load_analyzer("dlib")


@pytest.fixture(scope="session")
def t1_faces(dlib_analyzer, t1):
    return dlib_analyzer.detect(t1)


@pytest.fixture(scope="session")
def antelope_root(tmp_path_factory):
    return make_antelopev2(tmp_path_factory.mktemp("insightface"))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def insight_analyzer(antelope_root):
    return load_analyzer("insightface", insightface_root=antelope_root, provider="CPU")


def assert_sane_face(face, height, width):
    x1, y1, x2, y2 = face.bbox
    pad = 0.3 * max(x2 - x1, y2 - y1)
    pts = face.landmarks
    assert pts.shape == (72, 2) and np.isfinite(pts).all()
    assert (pts[:, 0] > x1 - pad).all() and (pts[:, 0] < x2 + pad).all()
    assert (pts[:68, 1] > y1 - pad).all() and (pts[:68, 1] < y2 + pad).all()
    right_pupil, left_pupil = pts[68], pts[69]
    mouth_y = pts[48:60, 1].mean()
    assert right_pupil[0] < left_pupil[0], "subject's right eye is on the image left"
    assert max(right_pupil[1], left_pupil[1]) < pts[30, 1] < mouth_y < pts[8, 1], "eyes, nose tip, mouth, chin"
    assert right_pupil[0] < pts[30, 0] < left_pupil[0]
    kps = face.kps5
    assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0] and kps[:2, 1].max() < kps[2, 1] < kps[3:, 1].min()
    assert 0 <= x1 < x2 <= width + pad and 0 <= y1 < y2 <= height + pad


# --- dlib on real photos ---------------------------------------------------------------------------------------

def test_dlib_finds_all_six_faces_of_t1(t1_faces, t1):
    assert len(t1_faces) == 6
    areas = [f.area for f in t1_faces]
    assert areas == sorted(areas, reverse=True)
    for face in t1_faces:
        assert face.backend == "dlib" and face.embedding is None
        assert face.descriptor.shape == (128,) and np.isfinite(face.descriptor).all()
        assert_sane_face(face, *t1.shape[:2])
    descriptors = np.stack([f.descriptor for f in t1_faces])
    distances = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)
    assert distances[~np.eye(6, dtype=bool)].min() > 0.4, "six different people"


def test_dlib_is_deterministic(dlib_analyzer, t1, t1_faces):
    again = dlib_analyzer.detect(t1)
    for a, b in zip(t1_faces, again, strict=True):
        np.testing.assert_array_equal(a.bbox, b.bbox)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.descriptor, b.descriptor)


@pytest.mark.parametrize("name", ["mask_black.jpg", "mask_white.jpg"])
def test_dlib_no_face_in_mask_photos(dlib_analyzer, insightface_images, name):
    assert dlib_analyzer.detect(read_rgb(insightface_images / name)) == []


def test_dlib_cnn_detector(insightface_images):
    portrait = read_rgb(insightface_images / "Tom_Hanks_54745.png")
    faces = load_analyzer("dlib", detector="cnn").detect(portrait, with_embedding=False)
    assert len(faces) == 1
    assert_sane_face(faces[0], *portrait.shape[:2])


def test_dlib_tiny_image_has_no_face(dlib_analyzer):
    assert dlib_analyzer.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_dlib_huge_image_is_downscaled_and_mapped_back(dlib_analyzer, t1, t1_faces):
    import cv2

    canvas = np.zeros((8000, 8000, 3), np.uint8)
    big = cv2.resize(t1, (t1.shape[1] * 4, t1.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    canvas[100:100 + big.shape[0], 200:200 + big.shape[1]] = big
    faces = dlib_analyzer.detect(canvas, with_embedding=False)
    assert len(faces) == 6
    expected = sorted((f.bbox * 4 + [200, 100, 200, 100] for f in t1_faces), key=lambda b: b[0])
    found = sorted((f.bbox for f in faces), key=lambda b: b[0])
    for e, f in zip(expected, found, strict=True):
        assert np.abs(e - f).max() < 0.25 * (e[2] - e[0]), (e, f)
    for face in faces:
        assert_sane_face(face, 8000, 8000)


def test_kps5_follow_insightface_order(t1_faces):
    face = t1_faces[0]
    np.testing.assert_allclose(face.kps5[0], face.landmarks[36:42].mean(0), atol=1e-4)
    np.testing.assert_allclose(face.kps5[2], face.landmarks[30])
    np.testing.assert_allclose(face.kps5[3:], face.landmarks[[48, 54]])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # insightface's norm_crop calls a deprecated skimage API
def test_arcface_crop_matches_insightface_norm_crop(t1, t1_faces):
    from insightface.utils.face_align import norm_crop

    for face in t1_faces:
        np.testing.assert_array_equal(arcface_crop(t1, face.kps5), norm_crop(t1, face.kps5))


# --- selection and crops -----------------------------------------------------------------------------------------

def test_selection_modes(t1_faces):
    left_to_right = sorted(t1_faces, key=lambda f: f.center_x)
    assert select_faces(t1_faces, "largest") == [t1_faces[0]]
    assert select_faces(t1_faces, "index", 2) == [t1_faces[2]]
    assert select_faces(t1_faces, "left_to_right", 0) == [left_to_right[0]]
    assert select_faces(t1_faces, "all") == left_to_right
    assert select_faces(t1_faces, "index", 6) == []
    assert select_faces([], "largest") == []


def test_crop_past_border_is_black_and_deterministic():
    image = np.full((100, 100, 3), 200, np.uint8)
    box = square_box(np.array([-20, -20, 40, 40]), 0.0)
    crop = crop_square(image, box, 64)
    assert crop.shape == (64, 64, 3)
    assert (crop[:16, :16] == 0).all() and (crop[-10:, -10:] == 200).all()
    np.testing.assert_array_equal(crop, crop_square(image, box, 64))


def test_crop_batch_with_faceless_image(dlib_analyzer, insightface_images):
    import cv2

    portrait = read_rgb(insightface_images / "Tom_Hanks_54745.png")  # 112x112, one face
    mask = cv2.resize(read_rgb(insightface_images / "mask_blue.jpg"), portrait.shape[1::-1])
    crops, faces = cut_crops(plan_crops(dlib_analyzer, [portrait, mask], "largest", size=128, margin=0.4,
                                        on_no_face="skip"))
    assert len(crops) == len(faces) == 2 and crops[0].shape == (128, 128, 3)
    assert not is_no_face(faces.records[0]) and is_no_face(faces.records[1])
    assert faces.records[1].image_index == 1 and faces.crop_size == 128
    passed_through = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(crops[1] - passed_through).mean() < 4, "the faceless image is passed through whole"
    with pytest.raises(NoFaceError, match="image 1 of the batch"):
        plan_crops(dlib_analyzer, [portrait, mask], "largest", size=128, on_no_face="error")
    with pytest.raises(NoFaceError, match="face index 9"):
        plan_crops(dlib_analyzer, [portrait], "left_to_right", index=9, size=128, on_no_face="error")


def test_landmark_rendering_in_crop_frame(dlib_analyzer, t1):
    _, faces = cut_crops(plan_crops(dlib_analyzer, [t1], "all", size=256, margin=0.5))
    landmarks = faces_to_landmarks(faces, "crop")
    assert len(landmarks) == 6 and landmarks.canvas_sizes == [(256, 256)] * 6
    face_points = landmarks.points[:, :68]
    assert (face_points > 256 * 0.15).all() and (face_points < 256 * 0.85).all(), "margin 0.5 centres the face"
    controls, overlays = render_landmarks(landmarks)
    again, _ = render_landmarks(faces_to_landmarks(faces, "crop"))
    for control, overlay, repeat in zip(controls, overlays, again, strict=True):
        assert control.shape == overlay.shape == (256, 256, 3)
        np.testing.assert_array_equal(control, repeat)
        assert 0.01 < (control.max(-1) > 0).mean() < 0.3
    big, _ = render_landmarks(landmarks, width=512, height=384)
    assert big[0].shape == (384, 512, 3)
    full = faces_to_landmarks(faces, "image")
    assert full.canvas_sizes[0] == t1.shape[:2]


# --- insightface on generated ONNX models, offline ----------------------------------------------------------------

def expected_fake_bbox(height, width):
    """Where the stand-in SCRFD's single firing anchor puts its face, in source pixels (see
    devkit/onnx_antelopev2.py)."""
    new_height = 640 if height > width else int(640 * height / width)  # SCRFD's letterbox into 640x640
    det_scale = new_height / height
    cy, cx = (np.array(FIRING_CELL) * FIRING_STRIDE)
    half = BBOX_DISTANCE * FIRING_STRIDE
    return np.array([cx - half, cy - half, cx + half, cy + half]) / det_scale


def assert_near_fake_bbox(bbox, height, width):
    expected = expected_fake_bbox(height, width)
    # the random head weights move the box by a few hundredths of its size, depending on the image
    np.testing.assert_allclose(bbox, expected, atol=0.03 * (expected[2] - expected[0]))


def test_insightface_pipeline_offline(no_network, antelope_root, t1):
    analyzer = load_analyzer("insightface", insightface_root=antelope_root, provider="CPU")
    assert analyzer.name == "insightface" and analyzer.has_arcface
    faces = analyzer.detect(t1, image_index=3)
    assert len(faces) == 1
    face = faces[0]
    assert_near_fake_bbox(face.bbox, *t1.shape[:2])
    assert face.image_index == 3 and face.backend == "insightface" and face.descriptor is None
    assert face.landmarks_3d.shape == (68, 3)
    np.testing.assert_array_equal(face.landmarks[:68], face.landmarks_3d[:, :2])
    assert_sane_face(face, *t1.shape[:2])
    assert len(face.pose) == 3 and all(np.isfinite(face.pose))
    assert face.embedding.shape == (512,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5
    # The embedding is ArcFace on the norm_crop-aligned 112x112 crop (BGR, as insightface feeds it).
    recognition = analyzer.models["recognition"]
    raw = recognition.get_feat(np.ascontiguousarray(arcface_crop(t1, face.kps5)[..., ::-1])).ravel()
    np.testing.assert_allclose(face.embedding, raw / np.linalg.norm(raw), atol=1e-6)
    again = analyzer.detect(t1, image_index=3)[0]
    np.testing.assert_array_equal(face.embedding, again.embedding)
    np.testing.assert_array_equal(face.landmarks, again.landmarks)


def test_insightface_other_image_gives_other_embedding(insight_analyzer, t1):
    flipped = np.ascontiguousarray(t1[:, ::-1])
    a, b = insight_analyzer.detect(t1)[0], insight_analyzer.detect(flipped)[0]
    assert float(a.embedding @ b.embedding) < 0.999


def test_insightface_huge_and_tiny_images(insight_analyzer):
    huge = np.zeros((8000, 8000, 3), np.uint8)
    faces = insight_analyzer.detect(huge)
    assert len(faces) == 1
    assert_near_fake_bbox(faces[0].bbox, 8000, 8000)
    assert insight_analyzer.detect(np.zeros((1, 1, 3), np.uint8)) == [], "sub-8-pixel detections are dropped"


def test_cuda_falls_back_to_cpu(antelope_root):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.warns(RuntimeWarning, match="CPU"):
        analyzer = load_analyzer("insightface", insightface_root=antelope_root, provider="CUDA")
    assert analyzer.providers == ["CPUExecutionProvider"]


def test_insightface_not_installed(monkeypatch, antelope_root):
    hide_insightface(monkeypatch)
    with pytest.raises(MissingDependencyError, match="insightface") as info:
        load_analyzer("insightface", insightface_root=antelope_root)
    assert "pip install insightface" in info.value.fix


def test_antelopev2_missing(tmp_path):
    with pytest.raises(ModelFileError) as info:
        load_analyzer("insightface", insightface_root=tmp_path)
    assert str(tmp_path / "models" / "antelopev2") in info.value.message


def test_antelopev2_incomplete(tmp_path, antelope_root):
    folder = antelopev2_folder(tmp_path)
    shutil.copytree(antelopev2_folder(antelope_root), folder)
    (folder / "glintr100.onnx").unlink()
    (folder / "1k3d68.onnx").unlink()
    with pytest.raises(ModelFileError) as info:
        load_analyzer("insightface", insightface_root=[tmp_path / "elsewhere", tmp_path])
    assert str(folder) in info.value.message
    assert "glintr100.onnx" in info.value.message and "1k3d68.onnx" in info.value.message


def test_antelopev2_corrupt_file(tmp_path, antelope_root):
    folder = antelopev2_folder(tmp_path)
    shutil.copytree(antelopev2_folder(antelope_root), folder)
    (folder / "glintr100.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelFileError, match="glintr100.onnx"):
        load_analyzer("insightface", insightface_root=tmp_path)


def test_modules_import_without_insightface(monkeypatch):
    import importlib

    hide_insightface(monkeypatch)
    for name in ("insightface_backend", "dlib_backend", "select", "landmark_views"):
        importlib.reload(importlib.import_module(f"comfyui_facesnap.models.face_analysis.{name}"))
    assert load_analyzer("dlib").name == "dlib"
