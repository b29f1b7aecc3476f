"""FLAME and DECA files through the restricted unpicklers: chumpy-style pickles without chumpy, torch-tensor
embeddings without allow_pickle, refusal of code-running pickles and of the wrong kind of file, and a fit on the
resulting (unbounded-expression) model."""

import copyreg
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.flame_loader import flame_morphable_model, load_flame_pkl, load_landmark_embedding


class _FakeChumpyModule:
    """Registers a class named chumpy.ch.Ch that pickles like chumpy's (copyreg reconstructor + state with 'x')."""

    def __enter__(self):
        class Ch:
            def __init__(self, x):
                self.x = x

            def __reduce_ex__(self, protocol):
                return copyreg._reconstructor, (Ch, object, None), {"x": self.x, "_dirty_vars": set()}

        Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
        self.saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        module = types.ModuleType("chumpy.ch")
        module.Ch = Ch
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), module
        return Ch

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def grid_mesh(n=24):
    """A bumpy height-field 'face', triangles counter-clockwise seen from +z."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1.2, 1.2, n))
    zs = 0.6 * np.exp(-(xs ** 2 + ys ** 2) * 1.5) - 0.3 * xs ** 2
    verts = np.stack([xs, ys, zs], -1).reshape(-1, 3)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    return verts, np.array(faces, np.uint32)


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    rng = np.random.default_rng(0)
    verts, faces = grid_mesh()
    nv = len(verts)
    smooth = lambda k: np.stack([np.sin((k + 1) * verts[:, 0] + c) * np.cos((k % 5 + 1) * verts[:, 1]) for c in range(3)], 1)
    shapedirs = np.stack([0.02 * smooth(k) for k in range(310)], -1)  # 300 shape + 10 expression
    root = tmp_path_factory.mktemp("flame")
    with _FakeChumpyModule() as Ch:
        model = {"f": faces, "v_template": Ch(verts), "shapedirs": Ch(shapedirs),
                 "posedirs": rng.normal(size=(nv, 3, 36)), "J_regressor": sp.random(5, nv, density=0.01, format="csc",
                                                                                   random_state=0),
                 "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
                 "weights": rng.random((nv, 5)), "J": Ch(rng.normal(size=(5, 3))), "bs_style": "lbs"}
        (root / "generic_model.pkl").write_bytes(pickle.dumps(model, protocol=2))
    # 68 landmarks on a plausible layout: a grid of face centres
    centres = verts[faces].mean(1)
    targets = np.concatenate([np.stack([np.linspace(-0.9, 0.9, 17), -0.9 + 0.3 * np.abs(np.linspace(-1, 1, 17))], 1),
                              rng.uniform([-0.6, -0.6], [0.6, 0.7], (51, 2))])
    targets[36], targets[45] = [-0.5, 0.4], [0.5, 0.4]
    lmk_faces = np.array([np.argmin(((centres[:, :2] - t) ** 2).sum(1)) for t in targets])
    bary = rng.dirichlet(np.ones(3), 68).astype(np.float32)
    embedding = {"static_lmk_faces_idx": torch.from_numpy(lmk_faces[17:]), "static_lmk_bary_coords": torch.from_numpy(bary[17:]),
                 "full_lmk_faces_idx": torch.from_numpy(lmk_faces[None]), "full_lmk_bary_coords": torch.from_numpy(bary[None]),
                 "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long)}
    np.save(root / "landmark_embedding.npy", embedding, allow_pickle=True)
    return root, model, shapedirs


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
    with pytest.raises(ModelFileError, match="refusing to load the global"):
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
    from comfyui_facesnap.models.face_fitting import euler_to_matrix, fit_landmarks, landmarks_image, rotation_angle_deg

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
