"""How to install insightface without breaking an NVIDIA setup, and how to spot the broken state.

Every insightface wheel requires the CPU package ``onnxruntime``. pip treats ``onnxruntime-gpu`` as a different
package, so installing insightface on a machine that has onnxruntime-gpu adds the CPU package into the same
``onnxruntime/`` folder, and CUDA is gone for every pack that uses it. The pack therefore does not require
insightface; these commands (shown by the identity nodes) install it the right way for the machine.
"""

from __future__ import annotations

import importlib.metadata

CPU_COMMANDS = ("python -m pip install insightface",)
CUDA_COMMANDS = ("python -m pip install onnxruntime-gpu onnx scikit-image requests",
                 "python -m pip install --no-deps insightface")
REPAIR_COMMANDS = ("python -m pip uninstall -y onnxruntime onnxruntime-gpu", "python -m pip install onnxruntime-gpu")
RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def _commands(commands: tuple[str, ...]) -> str:
    return " then ".join(f"`{c}`" for c in commands)


def installed_runtimes() -> list[str]:
    """The onnxruntime builds pip has installed (they all share the import name ``onnxruntime``)."""
    found = []
    for name in RUNTIMES:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def gpu_runtime_shadowed() -> bool:
    """onnxruntime-gpu is installed, but so is another build that may have overwritten its files."""
    found = installed_runtimes()
    return "onnxruntime-gpu" in found and len(found) > 1


def insightface_install_fix() -> str:
    return (f"install it with ComfyUI's own Python (portable Windows build: python_embeded\\python.exe -m pip ...). "
            f"With an NVIDIA GPU: {_commands(CUDA_COMMANDS)} (insightface's own requirements would add the CPU "
            f"onnxruntime, which hides onnxruntime-gpu). CPU only: {_commands(CPU_COMMANDS)}")


def cuda_unavailable_hint() -> str:
    """Why onnxruntime offers no CUDA provider here, and the fix."""
    if gpu_runtime_shadowed():
        others = ", ".join(n for n in installed_runtimes() if n != "onnxruntime-gpu")
        return (f"onnxruntime-gpu is installed together with {others}, which share its folder and hide CUDA; "
                f"repair with {_commands(REPAIR_COMMANDS)}")
    return f"install onnxruntime-gpu to use the GPU: {_commands(REPAIR_COMMANDS)}"
