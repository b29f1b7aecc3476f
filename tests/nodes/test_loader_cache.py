"""One cache policy for the loader nodes, through one persistent ComfyUI executor: a loaded
model is reused while ComfyUI holds it, released when ComfyUI drops it, and loaded again when its file changes."""

from __future__ import annotations

import gc
import os
import sys
import weakref

import pytest

from comfyui_facesnap.devkit.comfy_host import cached_output
from hostile_prompts import Session, loader_prompt, write_ict_npz

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(hostile_host):
    """The host of the hostile-input tests (conftest.py): Preview Any for loader-only prompts."""
    return hostile_host


def pack_module(host, node_id: str):
    """The node's module as ComfyUI imported it (under its own module name, not comfyui_facesnap)."""
    return sys.modules[host.node_classes[node_id].__module__]


def counting(monkeypatch, module, name: str) -> list:
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def output(session, node_id: str):
    return cached_output(session.executor, node_id, 0)


def _edit(path, write) -> None:
    stat = os.stat(path)
    write(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime even on a coarse clock


@pytest.fixture
def ict_folder(tmp_path):
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    folder = tmp_path / "3dmm"
    folder.mkdir()
    write_ict_npz(folder / "ict_face_narrow.npz")
    with model_folders_restored() as folder_paths:
        folder_paths.add_model_folder_path("3dmm", str(folder), is_default=True)
        yield folder


def test_3dmm_loader_reuses_releases_and_reloads(host, ict_folder, monkeypatch):  # noqa: F811
    loads = counting(monkeypatch, pack_module(host, "FaceSnap3DMMLoader"), "_read_model")
    session = Session(host)
    assert session.run(loader_prompt())[0] and len(loads) == 1
    # a second loader with the same file, while ComfyUI still holds the first one's output: the same model
    two = {**loader_prompt(), "3": {**loader_prompt(download_if_missing=True)["1"]},
           "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    assert session.run(two)[0] and len(loads) == 1 and output(session, "3") is output(session, "1")
    # an edited file: ComfyUI runs both loaders again (their fingerprint changed) and the file is read once more
    before = weakref.ref(output(session, "1"))
    _edit(ict_folder / "ict_face_narrow.npz", lambda p: write_ict_npz(p, seed=1))
    assert session.run(two)[0] and len(loads) == 2
    assert output(session, "3") is output(session, "1") and output(session, "1") is not before()
    # when ComfyUI drops the outputs, nothing keeps the models alive
    held = weakref.ref(output(session, "1"))
    del session
    gc.collect()
    assert held() is None and before() is None and len(pack_module(host, "FaceSnap3DMMLoader")._MODELS) == 0
    assert Session(host).run(loader_prompt())[0] and len(loads) == 3


def analyzer_prompt(backend: str = "dlib", provider: str = "CPU", node: str = "1", preview: str = "2") -> dict:
    return {node: {"class_type": "FaceSnapFaceAnalyzerLoader",
                   "inputs": {"backend": backend, "provider": provider, "dlib_detector": "hog"}},
            preview: {"class_type": "PreviewAny", "inputs": {"source": [node, 0]}}}


def test_face_analyzer_loader_reuses_releases_and_reloads(host, tmp_path, monkeypatch):  # noqa: F811
    import folder_paths

    from comfyui_facesnap.devkit.onnx_antelopev2 import antelopev2_folder, make_antelopev2

    module = pack_module(host, "FaceSnapFaceAnalyzerLoader")
    gc.collect()
    assert len(module._ANALYZERS) == 0, "an earlier test left an analyzer alive"
    loads = counting(monkeypatch, module, "load_analyzer")
    session = Session(host)
    assert session.run(analyzer_prompt())[0] and len(loads) == 1
    # dlib ignores the provider: a second loader set to CUDA gets the analyzer ComfyUI holds for the first
    two = {**analyzer_prompt(), **analyzer_prompt(provider="CUDA", node="3", preview="4")}
    assert session.run(two)[0] and len(loads) == 1 and output(session, "3") is output(session, "1")
    held = weakref.ref(output(session, "1"))
    del session
    gc.collect()
    assert held() is None and len(module._ANALYZERS) == 0

    # insightface: an edited ONNX file is loaded again
    _, extensions = folder_paths.folder_names_and_paths["insightface"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(tmp_path)], extensions))
    make_antelopev2(tmp_path)
    session = Session(host)
    assert session.run(analyzer_prompt(backend="insightface"))[0] and len(loads) == 2
    assert session.run(analyzer_prompt(backend="insightface"))[0] and len(loads) == 2  # unchanged: ComfyUI's cache
    _edit(antelopev2_folder(tmp_path) / "glintr100.onnx", lambda p: make_antelopev2(tmp_path, seed=1))
    assert session.run(analyzer_prompt(backend="insightface"))[0] and len(loads) == 3
