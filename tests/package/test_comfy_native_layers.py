"""Code that runs inside ComfyUI builds its Linear/Conv/Norm/Embedding layers through ``operations`` (comfy.ops), the
rule of ``comfy-test lint``. Training-only code may keep torch.nn.

"Runs inside ComfyUI" = every module of this pack that the entry point, ``nodes/`` or ``comfy_glue/`` import,
transitively, including imports inside functions (read from the source, nothing is executed).
"""

import ast
import pathlib
import re

import pytest

PACK_ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYERS = {"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "LayerNorm", "GroupNorm",
          "Embedding"}
# Files that still build torch.nn layers inside ComfyUI: file -> layer calls. None since the DECA encoder takes
# ``operations``.
KNOWN_FINDINGS: dict[str, dict[str, int]] = {}


def module_file(name: str) -> pathlib.Path | None:
    base = PACK_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(path: pathlib.Path) -> list[str]:
    parts = list(path.relative_to(PACK_ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def imported_files(path: pathlib.Path) -> set[pathlib.Path]:
    """The pack's own modules that ``path`` imports (relative imports), at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        package = package_of(path)
        base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        prefix = [*base, *(node.module.split(".") if node.module else [])]
        for alias in node.names:  # "from .x import y": y may be a submodule or a name in x
            for parts in ([*prefix, alias.name], prefix):
                target = module_file(".".join(parts)) if parts else PACK_ROOT / "__init__.py"
                if target is not None:
                    found.add(target)
                    break
    return found


def files_inside_comfyui() -> set[pathlib.Path]:
    todo = {PACK_ROOT / "__init__.py", *(PACK_ROOT / "nodes").glob("*.py"), *(PACK_ROOT / "comfy_glue").glob("*.py")}
    seen = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo |= imported_files(path) - seen
    return seen


def torch_nn_names(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    """Expressions that name torch.nn in this module (``nn``, ``torch.nn``, aliases), and layer classes imported
    from it by name (local name -> class)."""
    modules, classes = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch":
                    modules.add(f"{a.asname or 'torch'}.nn")
                elif a.name == "torch.nn":
                    modules.add(a.asname or "torch.nn")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            modules |= {a.asname or a.name for a in node.names if a.name == "nn"}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch.nn":
            classes.update({a.asname or a.name: a.name for a in node.names if a.name in LAYERS})
    return modules, classes


def torch_nn_layer_calls(path: pathlib.Path) -> dict[str, int]:
    """Calls constructing one of LAYERS from torch.nn, however torch.nn is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, classes = torch_nn_names(tree)
    counts: dict[str, int] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, layer = node.func, None
        if isinstance(func, ast.Attribute) and func.attr in LAYERS and ast.unparse(func.value) in modules:
            layer = func.attr
        elif isinstance(func, ast.Name):
            layer = classes.get(func.id)
        if layer is not None:
            counts[layer] = counts.get(layer, 0) + 1
    return counts


def test_the_closure_covers_the_identity_networks():
    files = {p.relative_to(PACK_ROOT).as_posix() for p in files_inside_comfyui()}
    expected = {"models/identity/facesnap/ffrnet.py", "models/identity/facesnap/attribute_mixer.py",
                "models/identity/facesnap/id_injector.py",
                "models/common/operations.py", "models/face3d/deca_encoder.py", "comfy_glue/control.py",
                "models/identity/instantid/resampler.py", "models/identity/ip_attention.py",
                "models/identity/sdxl_controlnet.py", "models/identity/perceiver.py",
                "models/identity/instantid/weights.py", "comfy_glue/methods/instantid.py",
                "comfy_glue/weight_dtypes.py"}
    assert expected <= files
    assert not any(f.startswith(("training/", "devkit/", "tests/", "benchmarks/")) for f in files)


def test_no_torch_nn_layers_in_code_that_runs_inside_comfyui():
    findings = {p.relative_to(PACK_ROOT).as_posix(): torch_nn_layer_calls(p) for p in files_inside_comfyui()}
    assert {f: c for f, c in findings.items() if c} == KNOWN_FINDINGS


def test_the_rule_catches_layers(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import torch as T\nimport torch.nn as tnn\nfrom torch import nn as layers\n"
                      "from torch.nn import GroupNorm as GN\n"
                      "a = tnn.Linear(2, 2)\nb = layers.Conv2d(1, 1, 1)\nc = GN(1, 2)\nd = T.nn.Embedding(3, 2)\n"
                      "e = ops.Linear(2, 2)\nREFERENCE = layers.LayerNorm  # not a layer built here\n")
    assert torch_nn_layer_calls(sample) == {"Linear": 1, "Conv2d": 1, "GroupNorm": 1, "Embedding": 1}


def test_comfy_test_lint_rule_agrees():
    """comfy-test's own forbidden-layer patterns (when installed) on the same files."""
    syntax = pytest.importorskip("comfy_test.orchestration.levels.syntax")
    layer_patterns = [p for p, description in syntax.FORBIDDEN_PATTERNS if re.match(r"nn\.", description)]
    assert layer_patterns
    flagged = set()
    for path in files_inside_comfyui():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.lstrip().startswith("#") and any(p.search(line) for p in layer_patterns):
                flagged.add(path.relative_to(PACK_ROOT).as_posix())
    assert flagged == set(KNOWN_FINDINGS)
