"""insightface is optional: the install commands the nodes print, and the diagnosis of a hidden onnxruntime-gpu."""

import importlib.metadata

import pytest

from comfyui_facesnap.models.face_analysis import onnxruntime_setup


def fake_installed(monkeypatch, names):
    def version(name):
        if name not in names:
            raise importlib.metadata.PackageNotFoundError(name)
        return "1.20.0"

    monkeypatch.setattr(onnxruntime_setup.importlib.metadata, "version", version)


def test_install_fix_gives_the_cpu_and_the_cuda_commands():
    fix = onnxruntime_setup.insightface_install_fix()
    assert "`python -m pip install insightface`" in fix  # CPU: insightface brings onnxruntime
    assert "`python -m pip install onnxruntime-gpu onnx scikit-image requests` then " \
           "`python -m pip install --no-deps insightface`" in fix  # CUDA: never let insightface pull onnxruntime
    assert "python_embeded" in fix


@pytest.mark.parametrize("installed, shadowed", [
    (["onnxruntime-gpu", "onnxruntime"], True),
    (["onnxruntime-gpu"], False),
    (["onnxruntime"], False),
    (["onnxruntime-gpu", "onnxruntime-directml"], True),
])
def test_a_hidden_gpu_runtime_is_diagnosed(monkeypatch, installed, shadowed):
    fake_installed(monkeypatch, installed)
    assert onnxruntime_setup.gpu_runtime_shadowed() == shadowed
    hint = onnxruntime_setup.cuda_unavailable_hint()
    assert ("`python -m pip uninstall -y onnxruntime onnxruntime-gpu` then `python -m pip install onnxruntime-gpu`"
            in hint)
    assert ("hide CUDA" in hint) == shadowed


def test_the_cuda_fallback_warning_names_the_repair(monkeypatch):
    import onnxruntime

    from comfyui_facesnap.models.face_analysis.insightface_backend import onnx_providers

    fake_installed(monkeypatch, ["onnxruntime-gpu", "onnxruntime"])
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(RuntimeWarning, match="onnxruntime-gpu is installed together with onnxruntime") as record:
        assert onnx_providers("CUDA") == ["CPUExecutionProvider"]
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in str(record[0].message)
