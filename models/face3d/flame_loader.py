"""Load the user-supplied FLAME model and DECA's landmark embedding without chumpy and without running pickled code.

``generic_model.pkl`` (FLAME2020/2023, from flame.is.tue.mpg.de) is a Python 2 pickle whose arrays are chumpy ``Ch``
objects, and DECA's ``landmark_embedding.npy`` is an object array holding a pickled dict of torch tensors. Both are
read with restricted unpicklers: chumpy classes become a stub that keeps the array stored under ``'x'``, torch
storages are decoded by ``torch.load(weights_only=True)``, and any other global outside a short allow-list of
numpy/scipy reconstructors stops the load.

The model keeps FLAME's leading shape (identity) and expression components as its linear part, and its joints
(global, neck, jaw, eyes) as ``MorphableModel.articulation`` (linear blend skinning, ``flame_articulation``): the
landmark fitter uses the linear part only, a jaw rotation (e.g. regressed by DECA) is applied on top.
"""

from __future__ import annotations

import io
import pathlib
import pickle

import numpy as np

from ..common.file_checks import Interrupt, check_finite
from ..common.file_errors import code_reference, refused_code_error, safe_reason
from ..errors import ModelFileError
from .flame_articulation import flame_articulation
from .morphable_model import MorphableModel, frame_normalisation, normalised_model

FLAME_HINT = ("download FLAME 2020 or 2023 from https://flame.is.tue.mpg.de (free account; CC-BY-4.0 with use "
              "restrictions) and place generic_model.pkl in ComfyUI/models/3dmm")
EMBEDDING_HINT = ("copy landmark_embedding.npy from DECA (github.com/yfeng95/DECA, data/) or SMIRK (assets/) into "
                  "ComfyUI/models/3dmm")
FLAME_KIND = "the FLAME 2020/2023 generic_model.pkl (arrays of the face model)"
EMBEDDING_KIND = "DECA's landmark_embedding.npy (landmark indices and weights)"
FLAME_SHAPE_COMPONENTS = 300
FLAME_KEYS = ("v_template", "f", "shapedirs")


class _ChumpyArray:
    """Stands in for chumpy.Ch: chumpy pickles its value as the state entry 'x'."""

    def __setstate__(self, state):
        self.__dict__.update(state)

    def to_numpy(self) -> np.ndarray:
        if "x" not in self.__dict__:
            raise pickle.UnpicklingError("chumpy object without an 'x' array")
        return np.asarray(self.__dict__["x"])


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("scipy.sparse.csc", "csc_matrix"), ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"), ("__builtin__", "set"), ("builtins", "set"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
}
_RENAMED_MODULES = {"copy_reg": "copyreg", "__builtin__": "builtins", "scipy.sparse.csc": "scipy.sparse",
                    "scipy.sparse.csr": "scipy.sparse", "numpy.core.multiarray": "numpy._core.multiarray"}


def _load_torch_storage(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


class RestrictedUnpickler(pickle.Unpickler):
    """Allows numpy/scipy array reconstruction, chumpy arrays (as stubs) and torch tensors; refuses everything else."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            import torch._utils

            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_torch_storage
        if (module, name) in _SAFE_GLOBALS:
            module = _RENAMED_MODULES.get(module, module)
            if module == "numpy._core.multiarray" and not hasattr(np, "_core"):
                module = "numpy.core.multiarray"  # numpy 1.x
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: this file may run code")


def _plain(value):
    """Chumpy stubs, sparse matrices and torch tensors -> numpy arrays; other values unchanged."""
    if isinstance(value, _ChumpyArray):
        return value.to_numpy()
    if hasattr(value, "toarray"):
        return value.toarray()
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return value


def _unpickle(path: pathlib.Path, data: bytes, hint: str, kind: str):
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if code_reference(err) is not None:
            raise refused_code_error(path, err, kind, hint) from err
        raise ModelFileError(f"{path} is not {kind} (it is damaged or a different kind of file)", hint) from err
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError, RuntimeError) as err:
        raise ModelFileError(f"{path} is not {kind} (unreadable: {safe_reason(err)})", hint) from err


def load_flame_pkl(path: str | pathlib.Path, interrupt: Interrupt = None) -> dict[str, np.ndarray]:
    """The arrays of a FLAME ``generic_model.pkl``, without chumpy. Raises ModelFileError for anything else;
    ``interrupt`` is polled while the arrays are checked."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"the FLAME model was not found at {path}", FLAME_HINT)
    raw = _unpickle(path, path.read_bytes(), FLAME_HINT, FLAME_KIND)
    if not isinstance(raw, dict) or not all(k in raw for k in FLAME_KEYS):
        found = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise ModelFileError(f"{path} is not a FLAME model (expected the keys {', '.join(FLAME_KEYS)}; found {found})",
                             FLAME_HINT)
    model = {k: _plain(v) for k, v in raw.items()}
    check_finite({k: v for k, v in model.items() if isinstance(v, np.ndarray)}, str(path), FLAME_HINT, interrupt,
                 what="array")
    verts, shapedirs = np.asarray(model["v_template"]), np.asarray(model["shapedirs"])
    if verts.ndim != 2 or verts.shape[1] != 3 or shapedirs.shape[:2] != verts.shape or \
            shapedirs.ndim != 3 or shapedirs.shape[2] <= FLAME_SHAPE_COMPONENTS:
        raise ModelFileError(f"{path}: v_template {verts.shape} / shapedirs {shapedirs.shape} do not have FLAME's "
                             f"layout (V x 3 and V x 3 x (300 shape + expression))", FLAME_HINT)
    return model


def load_landmark_embedding(path: str | pathlib.Path, interrupt: Interrupt = None) -> dict[str, np.ndarray]:
    """DECA/SMIRK ``landmark_embedding.npy`` (an object array holding a pickled dict) read without ``allow_pickle``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"the FLAME landmark embedding was not found at {path}", EMBEDDING_HINT)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                      else np.lib.format.read_array_header_2_0(f))
        except ValueError as err:
            raise ModelFileError(f"{path} is not a .npy file ({err})", EMBEDDING_HINT) from err
        data = f.read()
    if header[2] != np.dtype(object):
        raise ModelFileError(f"{path} holds a plain {header[2]} array, not DECA's landmark embedding dict",
                             EMBEDDING_HINT)
    raw = _unpickle(path, data, EMBEDDING_HINT, EMBEDDING_KIND)
    if isinstance(raw, np.ndarray) and raw.dtype == object and raw.size == 1:
        raw = raw.item()
    if not isinstance(raw, dict) or "full_lmk_faces_idx" not in raw or "full_lmk_bary_coords" not in raw:
        raise ModelFileError(f"{path} is not DECA's landmark embedding (no full_lmk_faces_idx / full_lmk_bary_coords)",
                             EMBEDDING_HINT)
    arrays = {k: np.asarray(_plain(v)) for k, v in raw.items()}
    check_finite(arrays, str(path), EMBEDDING_HINT, interrupt, what="array")
    return arrays


def flame_morphable_model(model_path, embedding_path, num_shape: int = 100, num_expression: int = 50,
                          interrupt: Interrupt = None) -> MorphableModel:
    """A MorphableModel from FLAME: the leading shape and expression components and DECA's 68-point embedding."""
    flame = load_flame_pkl(model_path, interrupt)
    emb = load_landmark_embedding(embedding_path, interrupt)
    faces = np.asarray(flame["f"], np.int64)
    lmk_faces = emb["full_lmk_faces_idx"].reshape(-1).astype(np.int64)
    bary = emb["full_lmk_bary_coords"].reshape(-1, 3).astype(np.float32)
    if len(lmk_faces) != 68 or lmk_faces.max() >= len(faces):
        raise ModelFileError(f"{embedding_path} does not match the FLAME mesh in {model_path} "
                             f"({len(lmk_faces)} landmarks, face index up to {lmk_faces.max()} of {len(faces)})",
                             EMBEDDING_HINT)
    shapedirs = np.asarray(flame["shapedirs"], np.float32)
    num_expression = min(num_expression, shapedirs.shape[2] - FLAME_SHAPE_COMPONENTS)
    id_basis = np.moveaxis(shapedirs[:, :, :num_shape], 2, 0)
    exp_basis = np.moveaxis(shapedirs[:, :, FLAME_SHAPE_COMPONENTS:FLAME_SHAPE_COMPONENTS + num_expression], 2, 0)
    model = normalised_model("FLAME", flame["v_template"], id_basis, exp_basis,
                             [f"expression{i:03d}" for i in range(num_expression)], faces, faces[lmk_faces], bary,
                             expression_range=None)
    centre, unit = frame_normalisation("FLAME", flame["v_template"], faces[lmk_faces], bary)
    model.articulation = flame_articulation(flame, centre, unit, model_path)
    return model
