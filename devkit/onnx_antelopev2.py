"""Tiny random-weight ONNX stand-ins for insightface's antelopev2 pack, generated at test time.

Each model has the real input/output signature of its antelopev2 counterpart, so insightface's model router and its
pre/post-processing code run unchanged:

=====================  ====================  ==================================================================
file                   input                 outputs
=====================  ====================  ==================================================================
scrfd_10g_bnkps.onnx   input.1 (1,3,?,?)     9: scores (N,1), bboxes (N,4), kps (N,10) for strides 8, 16, 32
glintr100.onnx         input.1 (N,3,112,112) (N,512) identity embedding
2d106det.onnx          data (1,3,192,192)    fc1 (1,212): 106 2D points
1k3d68.onnx            data (1,3,192,192)    fc1 (1,3309): 1103 3D points, the last 68 are used
genderage.onnx         data (1,3,96,96)      fc1 (1,3)
=====================  ====================  ==================================================================

Random weights would detect nothing useful, so the detector is built to fire on exactly one anchor (stride 32, grid
cell (row 2, col 2) of the 640x640 letterboxed input: a 96 px face centred at (64, 64), with face-shaped keypoints)
whatever the image. The landmark heads add a small image-dependent term to insightface's own 68-point mean shape, so
their points are face-shaped too. The recognition head is a linear map of a pooled image, so different crops give
different embeddings and identical crops identical ones.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # onnxruntime accepts <= 13; keep well below
ANTELOPEV2_FILES = ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx")
# Where the one firing detector anchor lies, and its face in stride units (bbox distances l, t, r, b; 5 kps).
FIRING_CELL = (2, 2)
FIRING_STRIDE = 32
BBOX_DISTANCE = 1.5
KPS_OFFSETS = np.array([[-0.45, -0.35], [0.45, -0.35], [0.0, 0.1], [-0.35, 0.6], [0.35, 0.6]], np.float32)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _save(graph: onnx.GraphProto, path: pathlib.Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _firing_mask(feature: str, prefix: str, nodes: list, inits: list) -> str:
    """A (1,1,h,w) map that is 1 at FIRING_CELL and 0 elsewhere, for a feature map of any size."""
    row, col = FIRING_CELL
    inits += [
        _const(f"{prefix}_one", np.ones((1, 1, 1, 1), np.float32)),
        _const(f"{prefix}_start", np.array([2], np.int64)),
        _const(f"{prefix}_end", np.array([4], np.int64)),
        _const(f"{prefix}_cell_end", np.array([row + 1, col + 1], np.int64)),
        _const(f"{prefix}_before", np.array([0, 0, row, col, 0, 0], np.int64)),
    ]
    nodes += [
        helper.make_node("Shape", [feature], [f"{prefix}_shape"]),
        helper.make_node("Slice", [f"{prefix}_shape", f"{prefix}_start", f"{prefix}_end"], [f"{prefix}_hw"]),
        helper.make_node("Sub", [f"{prefix}_hw", f"{prefix}_cell_end"], [f"{prefix}_after"]),
        helper.make_node("Concat", [f"{prefix}_before", f"{prefix}_after"], [f"{prefix}_pads"], axis=0),
        helper.make_node("Pad", [f"{prefix}_one", f"{prefix}_pads"], [f"{prefix}_mask"], mode="constant"),
    ]
    return f"{prefix}_mask"


def make_scrfd(path: pathlib.Path, rng: np.random.Generator) -> pathlib.Path:
    """SCRFD det_10g signature: 2 anchors per cell, strides 8/16/32, outputs ordered scores, bboxes, kps."""
    nodes, inits, outputs = [], [], []
    heads = {"score": 1, "bbox": 4, "kps": 10}
    pooled = {}
    for stride in (8, 16, 32):
        pooled[stride] = f"pool{stride}"
        nodes.append(helper.make_node("AveragePool", ["input.1"], [pooled[stride]],
                                      kernel_shape=[stride, stride], strides=[stride, stride]))
    for head, width in heads.items():
        for stride in (8, 16, 32):
            name = f"{head}_{stride}"
            channels = 2 * width
            if head == "score":
                bias = np.full(channels, -8.0, np.float32)
            elif head == "bbox":
                bias = np.full(channels, BBOX_DISTANCE, np.float32)
            else:
                bias = np.tile(KPS_OFFSETS.reshape(-1), 2).astype(np.float32)
            inits += [_const(f"{name}_w", rng.normal(0, 0.01, (channels, 3, 1, 1)).astype(np.float32)),
                      _const(f"{name}_b", bias)]
            nodes.append(helper.make_node("Conv", [pooled[stride], f"{name}_w", f"{name}_b"], [f"{name}_conv"]))
            src = f"{name}_conv"
            if head == "score":
                if stride == FIRING_STRIDE:
                    mask = _firing_mask(pooled[stride], f"{name}_fire", nodes, inits)
                    inits.append(_const(f"{name}_gain", np.array(16.0, np.float32)))
                    nodes += [helper.make_node("Mul", [mask, f"{name}_gain"], [f"{name}_boost"]),
                              helper.make_node("Add", [src, f"{name}_boost"], [f"{name}_logit"])]
                    src = f"{name}_logit"
                nodes.append(helper.make_node("Sigmoid", [src], [f"{name}_sig"]))
                src = f"{name}_sig"
            inits.append(_const(f"{name}_shape", np.array([-1, width], np.int64)))
            nodes += [helper.make_node("Transpose", [src], [f"{name}_t"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [f"{name}_t", f"{name}_shape"], [name])]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["anchors", width]))
    graph = helper.make_graph(nodes, "scrfd_10g_bnkps",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
                              outputs, inits)
    _save(graph, path)
    return path


def _pooled_linear_head(path: pathlib.Path, input_name: str, batch, size: int, pool: int, bias: np.ndarray,
                        weight_scale: float, rng: np.random.Generator) -> pathlib.Path:
    """AveragePool -> Flatten -> Gemm: a cheap image-dependent regression head with a fixed output bias."""
    features = 3 * (size // pool) ** 2
    out_dim = bias.shape[0]
    nodes = [helper.make_node("AveragePool", [input_name], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "B"], ["fc1"])]
    inits = [_const("W", rng.normal(0, weight_scale, (features, out_dim)).astype(np.float32)),
             _const("B", bias.astype(np.float32))]
    graph = helper.make_graph(nodes, path.stem,
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, size, size])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, out_dim])], inits)
    _save(graph, path)
    return path


def _mean_shape_68() -> np.ndarray:
    """insightface's own 68-point 3D mean shape (x, y roughly in [-0.6, 0.6], image orientation)."""
    from insightface.data import get_object

    return np.asarray(get_object("meanshape_68.pkl"), np.float32)


def make_antelopev2(root: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the five fake antelopev2 models to ``root/models/antelopev2`` and return ``root``.

    ``root`` is what ``load_analyzer(insightface_root=...)`` takes (ComfyUI's ``models/insightface`` folder).
    """
    root = pathlib.Path(root)
    folder = root / "models" / "antelopev2"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    make_scrfd(folder / "scrfd_10g_bnkps.onnx", rng)
    _pooled_linear_head(folder / "glintr100.onnx", "input.1", "None", 112, 8, rng.normal(0, 0.01, 512), 0.05, rng)
    points106 = rng.uniform(-0.5, 0.5, (106, 2))
    _pooled_linear_head(folder / "2d106det.onnx", "data", 1, 192, 16, points106.reshape(-1), 0.002, rng)
    points3d = np.zeros((1103, 3), np.float32)
    points3d[-68:] = _mean_shape_68()
    _pooled_linear_head(folder / "1k3d68.onnx", "data", 1, 192, 16, points3d.reshape(-1), 0.002, rng)
    _pooled_linear_head(folder / "genderage.onnx", "data", 1, 96, 8, rng.normal(0, 0.1, 3), 0.01, rng)
    return root


def antelopev2_folder(root: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(root) / "models" / "antelopev2"


def hide_insightface(monkeypatch) -> None:
    """Make ``import insightface`` (and its already-imported submodules) fail, as if it were not installed."""
    import sys

    for name in [n for n in sys.modules if n == "insightface" or n.startswith("insightface.")] + ["insightface"]:
        monkeypatch.setitem(sys.modules, name, None)
