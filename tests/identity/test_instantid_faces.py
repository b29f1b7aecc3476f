"""What InstantID reads from a face: insightface's raw ArcFace embedding (not only its direction), and the 5-keypoint
control image from every landmark source through the FaceSnap Draw Keypoints node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_facesnap.devkit.comfy_host import cached_output
from comfyui_facesnap.models.face_analysis.keypoints5 import draw_kps, kps5_from_landmarks72
from identity_graphs import setup_face_pipeline
from instantid_graphs import add_faces, add_instantid_loader, register_instantid_folders, use_identity_folder

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    register_instantid_folders(comfy_host, insightface_images, tmp_path_factory.mktemp("instantid"))
    return comfy_host


def test_records_keep_insightfaces_raw_embedding(insightface_images, tmp_path):
    """InstantID (infer.py) and cubiq's node feed insightface's ``Face.embedding``, the recognition model's raw
    output."""
    import cv2
    from insightface.app.common import Face
    from insightface.model_zoo import model_zoo

    from comfyui_facesnap.devkit.onnx_antelopev2 import make_antelopev2
    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.models.face_analysis.record import FaceSet
    from comfyui_facesnap.models.identity.reference_faces import arcface_embeddings

    root = make_antelopev2(tmp_path)
    rgb = cv2.imread(str(insightface_images / "Tom_Hanks_54745.png"))[:, :, ::-1].copy()
    record = load_analyzer("insightface", insightface_root=root, provider="CPU").detect(rgb)[0]
    recognition = model_zoo.get_model(str(root / "models" / "antelopev2" / "glintr100.onnx"),
                                      providers=["CPUExecutionProvider"])
    face = Face(bbox=record.bbox, kps=record.kps5, det_score=record.score)
    recognition.get(np.ascontiguousarray(rgb[:, :, ::-1]), face)  # insightface's own path: BGR, norm_crop, get_feat
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) > 0.05, "the stand-in's raw embedding is not unit length"
    np.testing.assert_allclose(record.embedding * record.embedding_norm, face.embedding, rtol=1e-5, atol=1e-6)
    faces = FaceSet(records=[record, record], images=[rgb, rgb])
    np.testing.assert_allclose(arcface_embeddings(faces, raw=True).numpy(), np.stack([face.embedding] * 2),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arcface_embeddings(faces).numpy()[0], face.normed_embedding, rtol=1e-5, atol=1e-6)


def test_the_encode_node_averages_raw_embeddings(host, tmp_path):
    g = {}
    loader = add_instantid_loader(g)
    add_faces(g, "tom")
    add_faces(g, "t1")
    g["batch"] = {"class_type": "ImageBatch", "inputs": {"image1": ["faces_tom_insightface_photo", 0],
                                                         "image2": ["faces_t1_insightface_photo", 0]}}
    g["both"] = {"class_type": "FaceSnapFaceCrop",
                 "inputs": dict(g["faces_tom_insightface"]["inputs"], image=["batch", 0])}
    g["encode"] = {"class_type": "FaceSnapInstantIDEncode",
                   "inputs": {"instantid": [loader, 0], "faces": ["both", 1], "uncond_noise": 0.0}}
    use_identity_folder(tmp_path)
    g["save"] = {"class_type": "FaceSnapSaveIdentity", "inputs": {"identity": ["encode", 0], "name": "two_photos",
                                                                  "overwrite": True}}
    executor = host.run(g)
    faces, identity, bundle = (_node_output(executor, "both", 1), _node_output(executor, "encode"),
                               _node_output(executor, loader))
    raw = np.stack([r.embedding * r.embedding_norm for r in faces.records])
    assert len(raw) == 2 and not np.allclose(raw[0], raw[1])
    torch.testing.assert_close(identity.id_embedding, torch.from_numpy(raw.mean(0)))  # averaged in embedding space
    torch.testing.assert_close(identity.cond,
                               bundle.encode_embeddings(torch.from_numpy(raw.mean(0, keepdims=True))).cond)
    assert identity.num_references == 2
    with torch.no_grad():
        zeros = bundle.adapter.image_proj(torch.zeros(1, 512))
    torch.testing.assert_close(identity.uncond, zeros.float(), atol=1e-5, rtol=1e-4)  # InstantID's negative


def _node_output(executor, node: str, index: int = 0):
    return cached_output(executor, node, index)


@pytest.mark.parametrize("backend", ["insightface", "dlib"])
@pytest.mark.parametrize("frame", ["crop", "image"])
def test_keypoints_from_faces(host, backend, frame):
    from comfyui_facesnap.models.face_analysis.align import box_to_crop_matrix, transform_points

    g = {}
    crop = add_faces(g, "t1" if backend == "dlib" else "tom", backend=backend)
    g["kps"] = {"class_type": "FaceSnapDrawKeypoints", "inputs": {"faces": [crop, 1], "frame": frame}}
    g["preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["kps", 1]}}
    executor = host.run(g)
    faces, image, overlay = (_node_output(executor, crop, 1), _node_output(executor, "kps"),
                             _node_output(executor, "kps", 1))
    record = faces.records[0]
    kps = record.kps5
    if frame == "crop":
        kps = transform_points(kps, box_to_crop_matrix(faces.crop_boxes[0], faces.crop_size)).astype(np.float32)
        assert image.shape == (1, 128, 128, 3)
    else:
        assert image.shape[1:3] == faces.images[0].shape[:2]
    expected = draw_kps(kps, image.shape[1], image.shape[2])
    np.testing.assert_array_equal((image[0].numpy() * 255).round().astype(np.uint8), expected)
    drawn = expected.any(axis=-1)
    np.testing.assert_array_equal((overlay[0].numpy() * 255).round().astype(np.uint8)[drawn], expected[drawn])
    if backend == "dlib":  # dlib's keypoints come from its 68 points, as the 72-point layout gives them
        np.testing.assert_allclose(record.kps5, kps5_from_landmarks72(record.landmarks), atol=1e-3)


def test_keypoints_from_landmarks_and_a_canvas_size(host):
    from comfyui_facesnap.devkit.synthetic_shards import mean_face_68
    from comfyui_facesnap.models.face_analysis.landmarks72 import LandmarkSet, from_ibug68

    node = host.node_classes["FaceSnapDrawKeypoints"]
    points = from_ibug68(mean_face_68((200, 210), 180))[None].astype(np.float32)  # a face on a 400x400 canvas
    landmarks = LandmarkSet(points, [(400, 400)])
    image, overlay = node.execute(landmarks=landmarks, width=256, height=256).args
    expected = draw_kps(kps5_from_landmarks72(points[0]) * np.float32(256 / 400), 256, 256)
    np.testing.assert_array_equal((image[0].numpy() * 255).round().astype(np.uint8), expected)
    with pytest.raises(Exception, match=r"\[FaceSnapDrawKeypoints\] nothing to draw"):
        node.execute()
    with pytest.raises(Exception, match=r"\[FaceSnapDrawKeypoints\] set both width and height"):
        node.execute(landmarks=landmarks, width=256)


def test_keypoints_from_the_landmark_predictor_with_manual_angles(host, default_face_model_path, tmp_path):
    import folder_paths

    (tmp_path / "ict_face_narrow.npz").symlink_to(default_face_model_path)
    folder_paths.add_model_folder_path("3dmm", str(tmp_path), is_default=True)
    g = {}
    crop = add_faces(g, "t1", backend="dlib")
    g["ict"] = {"class_type": "FaceSnap3DMMLoader", "inputs": {
        "model": "ICT-FaceKit", "ict_file": "ict_face_narrow.npz", "flame_file": "generic_model.pkl",
        "flame_landmarks": "landmark_embedding.npy", "download_if_missing": False, "deca_file": ""}}
    g["predictor"] = {"class_type": "FaceSnapLandmarkPredictor", "inputs": {
        "model": ["ict", 0], "reference": [crop, 1], "pose_source": "manual", "yaw": 30.0, "pitch": -5.0,
        "roll": 0.0, "keep_reference_expression": False, "expression_strength": 1.0, "neutral_reference": False,
        "frame": "canvas", "width": 256, "height": 256}}
    g["kps"] = {"class_type": "FaceSnapDrawKeypoints", "inputs": {"landmarks": ["predictor", 0]}}
    g["preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["kps", 0]}}
    executor = host.run(g)
    landmarks, image = _node_output(executor, "predictor"), _node_output(executor, "kps")
    expected = draw_kps(kps5_from_landmarks72(landmarks.points[0]), 256, 256)
    np.testing.assert_array_equal((image[0].numpy() * 255).round().astype(np.uint8), expected)
    assert expected.any()
