"""Models in the converted ICT-FaceKit format (the procedural stand-in, and the real conversion when ../shared has it):
loading, normalisation, the pose-dependent jaw contour, file errors, the converter and the pinned download."""

import re

import numpy as np
import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.face3d.face_fitting import euler_to_matrix
from comfyui_facesnap.models.face3d.morphable_model import ICT_LMK68, convert_ict_facekit, load_ict_npz


@pytest.fixture(scope="module")
def ict(face_model_path):
    return load_ict_npz(face_model_path)


def test_ict_model_is_normalised(ict, face_model_path):
    assert ict.num_id == 100 and ict.num_exp == 47  # 57 upstream minus pupil dilation and gaze
    assert ict.neutral.shape == (6706, 3) and ict.triangles.shape == np.load(face_model_path)["tris"].shape
    lmk = ict.landmarks68(torch.zeros(1, 100), torch.zeros(1, 47))[0]
    assert torch.allclose((lmk[36] - lmk[45]).norm(), torch.tensor(1.0), atol=1e-5)
    assert lmk.mean(0).abs().max() < 1e-5
    assert lmk[8, 1] < lmk[30, 1] < lmk[27, 1]  # chin below nose tip below bridge: y up
    assert lmk[30, 2] > lmk[0, 2]  # nose tip nearer the camera than the jaw: z towards the camera
    assert lmk[36, 0] < 0 < lmk[45, 0]  # subject's right eye on the image left


def test_72_points_include_the_extras_in_3d(ict):
    p72 = ict.landmarks72(torch.zeros(1, 100), torch.zeros(1, 47))[0]
    assert p72.shape == (72, 3)
    assert torch.allclose(p72[68], p72[36:42].mean(0), atol=1e-6)


def test_jaw_contour_follows_the_silhouette(ict):
    """Frontal: (nearly) the static jaw vertices. Turned 50 degrees: the far-side points move to other vertices,
    further out in the image than the static ones would be."""
    alpha, beta = torch.zeros(1, 100), torch.zeros(1, 47)
    space = ict.landmark_space_points(alpha, beta)
    static, _ = ict.landmark_index(space, None)
    frontal, _ = ict.landmark_index(space,
                                    euler_to_matrix(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0])))
    shift = (space[0, frontal[0, :17, 0], :2] - space[0, static[0, :17, 0], :2]).norm(dim=-1)
    assert shift.max() < 0.05  # at most 5 % of the eye-corner distance
    rotation = euler_to_matrix(torch.tensor([50.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    turned, _ = ict.landmark_index(space, rotation)
    far = slice(9, 17)  # positive yaw turns the subject's left cheek (image right) away from the camera
    moved = turned[0, far, 0] != static[0, far, 0]
    assert moved.sum() >= 4
    x_static = (space[0, static[0, far, 0]] @ rotation[0].T)[:, 0]
    x_turned = (space[0, turned[0, far, 0]] @ rotation[0].T)[:, 0]
    assert (x_turned[moved] > x_static[moved]).all()  # further out, to the image right


def test_missing_file_names_path_and_upstream(tmp_path):
    missing = tmp_path / "ict_face_narrow.npz"
    with pytest.raises(ModelFileError) as err:
        load_ict_npz(missing)
    assert str(missing) in str(err.value) and "ICT-VGL/ICT-FaceKit" in str(err.value)
    assert "convert_ict_facekit.py" in err.value.fix


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not an npz at all"])
def test_corrupt_file_is_refused(tmp_path, content):
    path = tmp_path / "ict_face_narrow.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(path)):
        load_ict_npz(path)


def test_wrong_arrays_are_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, neutral=np.zeros((10, 3)), tris=np.zeros((2, 3), int), id_basis=np.zeros((1, 10, 3)),
             exp_basis=np.zeros((1, 10, 3)), exp_names=np.array(["jawOpen"]))
    with pytest.raises(ModelFileError, match="topology"):
        load_ict_npz(path)


def _write_obj(path, verts, faces=None):
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    if faces is not None:
        lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in face) for face in faces]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_converter_round_trip(tmp_path, face_model_path):
    """Upstream-style OBJs written from the shipped conversion convert back to the same arrays, and the converter
    verifies its output with the loader before giving it its final name."""
    src = np.load(face_model_path)
    neutral = src["neutral"]
    quads = [[a, b, c, c] for a, b, c in src["tris"][:50]]  # polygons with 4 corners are split too
    obj_dir = tmp_path / "FaceXModel"
    obj_dir.mkdir()
    _write_obj(obj_dir / "generic_neutral_mesh.obj", neutral, [list(t) for t in src["tris"][50:]] + quads)
    for i in range(100):
        _write_obj(obj_dir / f"identity{i:03d}.obj", neutral + src["id_basis"][i].astype(np.float32))
    for name, delta in zip(src["exp_names"], src["exp_basis"], strict=True):
        _write_obj(obj_dir / f"{name}.obj", neutral + delta.astype(np.float32))
    out = convert_ict_facekit(obj_dir, tmp_path / "3dmm" / "ict_face_narrow.npz", progress=False)
    converted = np.load(out)
    assert list(converted["exp_names"]) == sorted(src["exp_names"])
    np.testing.assert_allclose(converted["id_basis"].astype(np.float32), src["id_basis"].astype(np.float32), atol=2e-3)
    assert converted["tris"].shape[0] == src["tris"].shape[0] + 50
    assert list(converted["lmk68"]) == ICT_LMK68
    assert not list((tmp_path / "3dmm").glob("*.partial*"))


def test_converter_refuses_incomplete_download(tmp_path):
    (tmp_path / "generic_neutral_mesh.obj").write_text("v 0 0 0\n")
    with pytest.raises(ModelFileError, match="identity"):
        convert_ict_facekit(tmp_path, tmp_path / "out.npz", progress=False)


def test_synthetic_model_has_the_converted_format_and_its_landmarks(synthetic_face_model_path):
    """The stand-in is a file the real loader reads like the conversion, with every landmark on its ICT vertex."""
    from comfyui_facesnap.devkit.synthetic_face_model import RAW_UNIT, landmark_template
    from comfyui_facesnap.models.face3d.ict_download import ICT_EXPRESSIONS

    arrays = np.load(synthetic_face_model_path)
    assert set(arrays.files) == {"neutral", "tris", "id_basis", "exp_basis", "exp_names", "lmk68"}
    assert arrays["id_basis"].dtype == arrays["exp_basis"].dtype == np.float16
    assert list(arrays["exp_names"]) == list(ICT_EXPRESSIONS) and list(arrays["lmk68"]) == ICT_LMK68
    template = landmark_template()
    placed = arrays["neutral"][ICT_LMK68, :2] / RAW_UNIT
    np.testing.assert_allclose(placed[17:], template[17:], atol=1e-5)  # moved exactly onto the template
    assert np.abs(placed[:17] - template[:17]).max() < 0.03  # jaw: the nearest outline vertex
    model = load_ict_npz(synthetic_face_model_path)
    assert (model.triangles[:, :2] != model.triangles[:, 1:]).all()


def test_ict_download_is_pinned_to_the_verified_commit():
    """Upstream master may change; the converter was verified against one commit's FaceXModel/ files."""
    from comfyui_facesnap.models.face3d.ict_download import ICT_BASE_URL, ICT_COMMIT

    assert re.fullmatch(r"[0-9a-f]{40}", ICT_COMMIT)
    assert ICT_BASE_URL == f"https://raw.githubusercontent.com/ICT-VGL/ICT-FaceKit/{ICT_COMMIT}/FaceXModel/"
