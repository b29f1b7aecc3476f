"""A FLAME-layout stand-in model for the 3DMM tests of several folders: ``generic_model.pkl`` pickled the way chumpy
pickles (without chumpy) and ``landmark_embedding.npy`` with torch tensors, on a bumpy height-field face."""

import copyreg
import pathlib
import pickle
import sys
import types

import numpy as np
import scipy.sparse as sp
import torch


class FakeChumpyModule:
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


def write_flame_files(root: pathlib.Path) -> tuple[pathlib.Path, dict, np.ndarray]:
    """FLAME's two files in ``root``; returns (root, the pickled model dict, its shapedirs)."""
    rng = np.random.default_rng(0)
    verts, faces = grid_mesh()
    nv = len(verts)

    def smooth(k):
        return np.stack([np.sin((k + 1) * verts[:, 0] + c) * np.cos((k % 5 + 1) * verts[:, 1]) for c in range(3)], 1)

    shapedirs = np.stack([0.02 * smooth(k) for k in range(310)], -1)  # 300 shape + 10 expression
    # FLAME-like skinning: the lower face follows the jaw, the rest splits between root and neck; eyes own nothing
    weights = np.zeros((nv, 5))
    weights[:, 2] = np.clip((-0.3 - verts[:, 1]) / 0.5, 0.0, 1.0)
    weights[:, 0] = weights[:, 1] = 0.5 * (1.0 - weights[:, 2])
    regressor = sp.random(5, nv, density=0.01, format="csr", random_state=0)
    regressor = sp.csc_matrix(sp.diags(1.0 / np.asarray(regressor.sum(1)).ravel()) @ regressor)  # rows sum to 1
    owner = np.repeat(weights[:, 1:] > 0, 9, axis=1)  # pose correctives only where the joint has weight
    posedirs = 0.01 * rng.normal(size=(nv, 3, 36)) * owner[:, None, :]
    with FakeChumpyModule() as Ch:
        model = {"f": faces, "v_template": Ch(verts), "shapedirs": Ch(shapedirs), "posedirs": posedirs,
                 "J_regressor": regressor, "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]],
                                                                     np.int64),
                 "weights": weights, "J": Ch(rng.normal(size=(5, 3))), "bs_style": "lbs"}
        (root / "generic_model.pkl").write_bytes(pickle.dumps(model, protocol=2))
    # 68 landmarks on a plausible layout: a grid of face centres
    centres = verts[faces].mean(1)
    targets = np.concatenate([np.stack([np.linspace(-0.9, 0.9, 17), -0.9 + 0.3 * np.abs(np.linspace(-1, 1, 17))], 1),
                              rng.uniform([-0.6, -0.6], [0.6, 0.7], (51, 2))])
    targets[36], targets[45] = [-0.5, 0.4], [0.5, 0.4]
    lmk_faces = np.array([np.argmin(((centres[:, :2] - t) ** 2).sum(1)) for t in targets])
    bary = rng.dirichlet(np.ones(3), 68).astype(np.float32)
    embedding = {"static_lmk_faces_idx": torch.from_numpy(lmk_faces[17:]),
                 "static_lmk_bary_coords": torch.from_numpy(bary[17:]),
                 "full_lmk_faces_idx": torch.from_numpy(lmk_faces[None]),
                 "full_lmk_bary_coords": torch.from_numpy(bary[None]),
                 "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long)}
    np.save(root / "landmark_embedding.npy", embedding, allow_pickle=True)
    return root, model, shapedirs
