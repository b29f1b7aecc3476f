"""FLAME and DECA files through the restricted unpicklers: chumpy-style pickles without chumpy, torch-tensor
embeddings without allow_pickle, refusal of code-running pickles and of the wrong kind of file, and a fit on the
resulting (unbounded-expression) model."""

import pickle
import sys

import numpy as np
import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.face3d.flame_loader import flame_morphable_model, load_flame_pkl, load_landmark_embedding


def test_flame_pickle_loads_without_chumpy(flame_files):
    root, _, shapedirs = flame_files
    assert "chumpy" not in sys.modules
    model = load_flame_pkl(root / "generic_model.pkl")
    np.testing.assert_array_equal(model["shapedirs"], shapedirs)
    assert model["J_regressor"].shape == (5, 576) and isinstance(model["J_regressor"], np.ndarray)
    assert model["f"].shape[1] == 3 and model["J"].shape == (5, 3)


def test_embedding_loads_torch_tensors_without_allow_pickle(flame_files):
    root, _, _ = flame_files
    emb = load_landmark_embedding(root / "landmark_embedding.npy")
    assert emb["full_lmk_faces_idx"].shape == (1, 68) and emb["full_lmk_bary_coords"].shape == (1, 68, 3)
    assert isinstance(emb["static_lmk_faces_idx"], np.ndarray)


class _Exploit:
    def __reduce__(self):
        import os

        return os.system, ("touch exploited-by-pickle",)


@pytest.mark.parametrize("name", ["generic_model.pkl", "landmark_embedding.npy"])
def test_code_running_pickles_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, np.array([{"full_lmk_faces_idx": _Exploit()}], dtype=object), allow_pickle=True)
        loader = load_landmark_embedding
    else:
        path.write_bytes(pickle.dumps({"v_template": _Exploit()}, protocol=2))
        loader = load_flame_pkl
    with pytest.raises(ModelFileError, match=r"holds a reference to \w+\.system, which is program code"):
        loader(path)
    assert not (tmp_path / "exploited-by-pickle").exists()


def test_wrong_kind_of_file_is_refused(tmp_path):
    smpl_like = tmp_path / "SMPL_NEUTRAL.pkl"
    smpl_like.write_bytes(pickle.dumps({"weights": np.zeros((6890, 24)), "posedirs": np.zeros(3)}, protocol=2))
    with pytest.raises(ModelFileError, match="not a FLAME model"):
        load_flame_pkl(smpl_like)
    plain = tmp_path / "landmark_embedding.npy"
    np.save(plain, np.zeros((68, 3)))
    with pytest.raises(ModelFileError, match="plain float64 array"):
        load_landmark_embedding(plain)
    with pytest.raises(ModelFileError, match=str(tmp_path / "missing.pkl")):
        load_flame_pkl(tmp_path / "missing.pkl")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(ModelFileError):
        load_flame_pkl(garbage)


def test_flame_model_fits_with_unbounded_expressions(flame_files):
    from comfyui_facesnap.models.face3d.face_fitting import (
        euler_to_matrix,
        fit_landmarks,
        landmarks_image,
        rotation_angle_deg,
    )

    root, _, _ = flame_files
    model = flame_morphable_model(root / "generic_model.pkl", root / "landmark_embedding.npy", num_shape=20,
                                  num_expression=10)
    assert model.expression_range is None and model.num_id == 20 and model.num_exp == 10
    gen = torch.Generator().manual_seed(0)
    alpha, beta = torch.randn(4, 20, generator=gen), torch.randn(4, 10, generator=gen)  # negative weights too
    rotation = euler_to_matrix(torch.tensor([10.0, -15.0, 0.0, 20.0]), torch.tensor([5.0, 0.0, -5.0, 0.0]),
                               torch.zeros(4))
    truth = landmarks_image(model, alpha, beta, rotation, torch.full((4,), 100.0), torch.full((4, 2), 200.0),
                            with_extras=False)
    fit = fit_landmarks(model, truth)
    assert (fit.beta < 0).any()
    assert fit.nme.mean() < 0.03
    assert rotation_angle_deg(fit.rotation, rotation).mean() < 5.0


def _random_shape(model, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_id, generator=gen), torch.randn(batch, model.num_exp, generator=gen)


def test_zero_pose_is_the_linear_model(flame_model):
    alpha, beta = _random_shape(flame_model)
    linear = flame_model.vertices(alpha, beta)
    posed = flame_model.vertices(alpha, beta, torch.zeros(2, 5, 3))
    torch.testing.assert_close(posed, linear, rtol=0, atol=1e-6)
    torch.testing.assert_close(flame_model.landmarks72(alpha, beta, joint_pose=torch.zeros(2, 5, 3)),
                               flame_model.landmarks72(alpha, beta), rtol=0, atol=1e-6)


def test_jaw_rotation_moves_only_jaw_weighted_vertices(flame_files, flame_model):
    _, raw, _ = flame_files
    alpha, beta = _random_shape(flame_model)
    jaw = flame_model.articulation.jaw_only(torch.tensor([[0.3, 0.0, 0.0], [0.2, 0.1, 0.0]]))
    moved = (flame_model.vertices(alpha, beta, jaw) - flame_model.vertices(alpha, beta)).norm(dim=-1)
    jaw_weighted = torch.from_numpy(raw["weights"][:, 2] > 0)
    assert 0 < jaw_weighted.sum() < len(jaw_weighted)
    assert moved[:, ~jaw_weighted].max() < 1e-5
    assert (moved[:, jaw_weighted] > 1e-4).float().mean() > 0.9
    # opening the mouth (positive x rotation about the jaw joint) moves the chin away from the nose
    chin_before = flame_model.landmarks68(alpha, beta)[:, 8]
    chin_after = flame_model.landmarks68(alpha, beta, joint_pose=jaw)[:, 8]
    assert not torch.allclose(chin_before, chin_after)


def test_root_rotation_equals_rotating_the_mesh(flame_model):
    from comfyui_facesnap.models.face3d.face_fitting import axis_angle_to_matrix

    alpha, beta = _random_shape(flame_model)
    art = flame_model.articulation
    pose = 0.2 * torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(3))
    pose[:, 3:] = 0  # eyes at rest
    root = torch.tensor([[0.1, -0.4, 0.2], [0.5, 0.2, -0.1]])
    local = flame_model.vertices(alpha, beta, torch.cat([torch.zeros(2, 1, 3), pose[:, 1:]], 1))
    full = flame_model.vertices(alpha, beta, torch.cat([root[:, None], pose[:, 1:]], 1))
    root_joint = art.joints(flame_model.vertices(alpha, beta))[:, :1]
    expected = (local - root_joint) @ axis_angle_to_matrix(root).transpose(1, 2) + root_joint
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-5)


def test_articulation_survives_normalisation(flame_files, flame_model):
    """Joints regressed in the normalised frame are FLAME's joints mapped into it."""
    _, raw, _ = flame_files
    art = flame_model.articulation
    joints = art.joints(flame_model.neutral[None])[0]
    expected = (raw["J_regressor"] @ np.asarray(raw["v_template"].x) - art.frame_centre.numpy()) / art.frame_unit
    np.testing.assert_allclose(joints.numpy(), expected, atol=1e-5)
