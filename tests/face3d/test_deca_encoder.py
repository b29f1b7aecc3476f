"""DECA's E_flame through the restricted loader: DECA's key names, refusal of code-running and wrong files, and
regressed parameters that land in the pack's camera exactly where DECA's own projection puts them."""


import numpy as np
import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError, ModelFileError
from comfyui_facesnap.models.face3d.deca_encoder import (
    DECA_OUTPUTS,
    DecaEncoder,
    deca_crop_box,
    load_deca_encoder,
    regress_faces,
)
from comfyui_facesnap.models.face3d.face_fitting import axis_angle_to_matrix, project
from comfyui_facesnap.models.face3d.flame_loader import flame_morphable_model

# from DECA's ResnetEncoder (encoder = resnet.ResNet(Bottleneck, [3, 4, 6, 3]), layers = Linear-ReLU-Linear)
DECA_KEYS = {"encoder.conv1.weight": (64, 3, 7, 7), "encoder.bn1.running_mean": (64,),
             "encoder.layer1.0.downsample.0.weight": (256, 64, 1, 1), "encoder.layer3.5.conv2.weight": (256, 256, 3, 3),
             "encoder.layer4.2.bn3.running_var": (2048,), "layers.0.weight": (1024, 2048), "layers.2.bias": (236,)}


@pytest.fixture(scope="module")
def deca_file(tmp_path_factory):
    torch.manual_seed(0)
    state = DecaEncoder().state_dict()
    state["layers.2.weight"] = state["layers.2.weight"] * 0.01  # keep random parameters in a plausible range
    state["layers.2.bias"] = torch.zeros(DECA_OUTPUTS)
    state["layers.2.bias"][200:206] = torch.tensor([0.1, -0.3, 0.05, 0.2, 0.0, 0.0])  # global + jaw pose
    state["layers.2.bias"][206:209] = torch.tensor([8.0, 0.01, 0.02])  # cam: s, tx, ty
    path = tmp_path_factory.mktemp("deca") / "deca_model.tar"
    torch.save({"E_flame": state, "E_detail": {"fc.weight": torch.zeros(2, 2)}}, path)
    return path


def test_state_dict_keys_are_decas(deca_file):
    keys = DecaEncoder().state_dict()
    for key, shape in DECA_KEYS.items():
        assert tuple(keys[key].shape) == shape, key
    assert not any(".fc." in k or k.startswith("encoder.fc") for k in keys)
    encoder = load_deca_encoder(deca_file)
    assert not encoder.training


class _Exploit:
    def __reduce__(self):
        import os

        return os.system, ("touch exploited-by-deca",)


def test_code_running_and_wrong_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.tar"
    torch.save({"E_flame": {"encoder.conv1.weight": _Exploit()}}, evil)
    with pytest.raises(ModelFileError, match=r"holds a reference to \w+\.system, which is program code"):
        load_deca_encoder(evil)
    assert not (tmp_path / "exploited-by-deca").exists()
    missing = tmp_path / "models" / "3dmm" / "deca_model.tar"
    with pytest.raises(ModelFileError, match=str(missing)):
        load_deca_encoder(missing)
    text = tmp_path / "notes.tar"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelFileError, match=f"{text} is not DECA.s deca_model.tar"):
        load_deca_encoder(text)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ModelFileError, match=f"{other} is not DECA's deca_model.tar"):
        load_deca_encoder(other)
    small = tmp_path / "small.tar"
    torch.save({"E_flame": {"layers.2.weight": torch.zeros(3, 3)}}, small)
    with pytest.raises(ModelFileError, match="does not match DECA's ResNet-50"):
        load_deca_encoder(small)


def test_regressed_faces_project_like_deca(deca_file, flame_model):
    model = flame_model
    encoder = load_deca_encoder(deca_file)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (300, 260, 3), dtype=np.uint8) for _ in range(2)]
    lmk = np.stack([rng.uniform([60, 80], [200, 240], (68, 2)) for _ in range(2)]).astype(np.float32)
    frame = [np.array([[2.0, 0.0, -10.0], [0.0, 2.0, 5.0]]), np.eye(2, 3)]
    seen = []
    recording = lambda crops: seen.append(encoder(crops)) or seen[-1]  # noqa: E731  (one forward pass for both paths)
    fit = regress_faces(model, recording, images, lmk, frame)
    assert fit.alpha.shape == (2, model.num_id) and fit.beta.shape == (2, model.num_exp)
    assert fit.joint_pose.shape == (2, 5, 3) and fit.rotation.shape == (2, 3, 3)
    assert torch.isfinite(fit.scale).all() and fit.joint_pose[:, 2].abs().sum() > 0

    # DECA's own path: skin with the global pose about the root joint, in metres, orthographic crop camera
    params = seen[0]
    art = model.articulation
    pose = torch.zeros(2, 5, 3)
    pose[:, 0], pose[:, 2] = params["pose"][:, :3], params["pose"][:, 3:]
    metres = model.vertices(fit.alpha, fit.beta, pose) * art.frame_unit + art.frame_centre
    cam = params["cam"]
    crop_px = 112 * cam[:, :1, None] * (metres[..., :2] + cam[:, None, 1:]) * torch.tensor([1.0, -1.0]) + 112
    for i, p in enumerate(lmk):
        box = deca_crop_box(p)
        image_px = crop_px[i] * (box[2] - box[0]) / 224 + torch.from_numpy(box[:2])
        expected = image_px @ torch.from_numpy(frame[i][:, :2].T).float() + torch.from_numpy(frame[i][:, 2]).float()
        ours = project(model.vertices(fit.alpha[i:i + 1], fit.beta[i:i + 1], fit.joint_pose[i:i + 1]),
                       fit.rotation[i:i + 1], fit.scale[i:i + 1], fit.translation[i:i + 1])[0]
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-2)
    assert torch.allclose(fit.rotation, axis_angle_to_matrix(params["pose"][:, :3]))


def test_regression_needs_flame(deca_file, synthetic_face_model_path):
    from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz

    with pytest.raises(InvalidInputError, match="set model to FLAME"):
        regress_faces(load_ict_npz(synthetic_face_model_path), load_deca_encoder(deca_file),
                      [np.zeros((64, 64, 3), np.uint8)],
                      np.random.default_rng(0).uniform(10, 50, (1, 68, 2)))


def _face_set(rng, count, crop_size=0):
    from comfyui_facesnap.models.face_analysis import FaceSet
    from comfyui_facesnap.models.face_analysis.record import FaceRecord

    records, images, boxes = [], [], []
    for _ in range(count):
        lmk = np.concatenate([rng.uniform([60, 80], [200, 240], (68, 2)), rng.uniform([60, 80], [200, 240], (4, 2))])
        records.append(FaceRecord(bbox=np.array([60, 80, 200, 240], np.float32), score=1.0,
                                  kps5=lmk[:5].astype(np.float32),
                                  landmarks=lmk.astype(np.float32), backend="dlib"))
        images.append(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))
        boxes.append(np.array([40.0, 60.0, 220.0, 240.0], np.float32))
    return FaceSet(records=records, images=images, crop_boxes=boxes if crop_size else [], crop_size=crop_size)


def test_prediction_takes_the_drives_jaw(deca_file, flame_model):
    from comfyui_facesnap.models.face3d.landmark_predictor import PredictOptions, predict

    encoder = load_deca_encoder(deca_file)
    faces = _face_set(np.random.default_rng(1), 2)
    drv_fit = regress_faces(flame_model, encoder, faces.images, np.stack([r.landmarks[:68] for r in faces.records]))
    ref_fit = drv_fit.select(slice(1, 2))
    sizes = [(300, 260)] * 2
    with_jaw = predict(flame_model, ref_fit, drv_fit, PredictOptions(), drive_sizes=sizes)
    assert with_jaw.landmarks.points.shape == (2, 72, 2)
    assert with_jaw.vertices.shape[:2] == (2, flame_model.neutral.shape[0])
    drv_fit.joint_pose = torch.zeros_like(drv_fit.joint_pose)
    closed = predict(flame_model, ref_fit, drv_fit, PredictOptions(), drive_sizes=sizes)
    moved = (with_jaw.vertices - closed.vertices)[..., :2].norm(dim=-1)
    jaw_weighted = flame_model.articulation.skin_weights[:, 2] > 0
    assert moved[:, jaw_weighted].max() > 0.5 and moved[:, ~jaw_weighted].max() < 1e-3


@pytest.mark.comfy
def test_loader_and_predictor_nodes_use_deca(comfy_host, deca_file, flame_files):
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored
    from comfyui_facesnap.nodes import predictor_nodes
    from comfyui_facesnap.nodes.errors import FaceSnapNodeError

    folder = deca_file.parent
    for name in ("generic_model.pkl", "landmark_embedding.npy"):
        if not (folder / name).exists():
            (folder / name).symlink_to(flame_files[0] / name)
    with model_folders_restored() as folder_paths:
        folder_paths.add_model_folder_path("3dmm", str(folder), is_default=True)
        loader = predictor_nodes.FaceSnap3DMMLoader
        model = loader.execute("FLAME", "", "generic_model.pkl", "landmark_embedding.npy",
                               deca_file="deca_model.tar")[0]
        assert model.face_regressor is not None and model.articulation is not None
        with pytest.raises(FaceSnapNodeError, match=str(folder / "missing_deca.tar")):
            loader.execute("FLAME", "", "generic_model.pkl", "landmark_embedding.npy", deca_file="missing_deca.tar")
        with pytest.raises(FaceSnapNodeError, match="set model to FLAME"):
            loader.execute("ICT-FaceKit", "x.npz", "", "", download_if_missing=False, deca_file="deca_model.tar")
    rng = np.random.default_rng(2)
    result = predictor_nodes.FaceSnapLandmarkPredictor.execute(
        model, _face_set(rng, 1), drive=_face_set(rng, 2, crop_size=128), pose_source="drive", yaw=0.0, pitch=0.0,
        roll=0.0, keep_reference_expression=False, expression_strength=1.0, neutral_reference=False,
        frame="drive crop", width=256, height=256)
    assert result[0].points.shape == (2, 72, 2) and np.isfinite(result[0].points).all()
    assert tuple(result[2].shape) == (2, 128, 128, 3)


class Stop(Exception):
    pass


def _stopping_after(polls: int):
    count = [0]

    def interrupt():
        count[0] += 1
        if count[0] > polls:
            raise Stop

    return interrupt, count


def test_interrupt_stops_the_deca_and_flame_loaders_between_weights(deca_file, flame_files):
    """/interrupt reaches these loads: ComfyUI's interrupt check runs between the weights they check."""
    interrupt, count = _stopping_after(2)
    with pytest.raises(Stop):
        load_deca_encoder(deca_file, interrupt=interrupt)
    assert count[0] == 3
    root, _, _ = flame_files
    interrupt, count = _stopping_after(1)
    with pytest.raises(Stop):
        flame_morphable_model(root / "generic_model.pkl", root / "landmark_embedding.npy", interrupt=interrupt)
    assert count[0] == 2
