"""Layers point one way (models <- comfy_glue <- nodes; training and evaluation never import nodes), each identity
method's models import no other method's, scripts and benchmarks never import tests/, ComfyUI is started in one place,
and the docs name no internal tracker items."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# top-level modules of a ComfyUI checkout that a pack could import
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config", "folder_paths", "nodes",
                   "execution", "server", "latent_preview", "node_helpers", "main", "app", "utils"}
# tests/ and every module in it that a test imports by name (test modules, helpers, conftest)
TEST_MODULES = {"tests", "comfy_test_nodes"} | {
    p.stem for p in (ROOT / "tests").rglob("*.py")
    if not {"comfy_test_nodes", "browser"} & set(p.relative_to(ROOT).parts)}


def python_files(*folders: str) -> list[pathlib.Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports, relative imports resolved against the checkout (``comfyui_facesnap`` and
    relative imports both map to checkout-relative dotted names like ``nodes.face_nodes``)."""
    package = list(path.relative_to(ROOT).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
                names = [module] if node.module else [f"{module}.{a.name}".lstrip(".") for a in node.names]
            else:
                names = [node.module]
        else:
            continue
        found |= {name.removeprefix("comfyui_facesnap.").removeprefix("comfyui_facesnap") or "." for name in names}
    return found


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("folder", ["training", "evaluation", "comfy_glue", "models"])
def test_lower_layers_never_import_the_nodes(folder):
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in python_files(folder) for m in imports(p) if top(m) == "nodes"}
    assert not bad


def test_models_import_no_comfyui_and_no_glue():
    """models/ is plain PyTorch and numpy: the trainer, evaluation and benchmarks reuse it without ComfyUI."""
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in python_files("models") for m in imports(p)
           if top(m) in COMFYUI_MODULES | {"comfy_glue", "training", "devkit"}}
    assert not bad


def test_comfy_glue_imports_no_nodes_or_training():
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in python_files("comfy_glue") for m in imports(p)
           if top(m) in {"nodes", "training", "devkit"}}
    assert not bad


IDENTITY = ROOT / "models" / "identity"
METHODS = sorted(p.name for p in IDENTITY.iterdir() if (p / "__init__.py").is_file())
# EcomID combines InstantID's Resampler and PuLID's ID attention; its package docstring says so
METHODS_COMBINED = {"ecomid": {"instantid", "pulid"}}


def identity_method(module: str) -> str | None:
    """The method package (``models/identity/<method>/``) a dotted module name lies in, if any."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["models", "identity"] and len(parts) > 2 and parts[2] in METHODS else None


@pytest.mark.parametrize("method", METHODS)
def test_each_identity_method_imports_no_other_method(method):
    """A method package imports only the shared modules (``models/identity/*.py``, ``models/common``, ...)."""
    allowed = {None, method, *METHODS_COMBINED.get(method, ())}
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in python_files(f"models/identity/{method}") for m in imports(p)
           if identity_method(m) not in allowed}
    assert not bad
    for other in METHODS_COMBINED.get(method, ()):
        assert f"``{other}/``" in ast.get_docstring(ast.parse((IDENTITY / method / "__init__.py").read_text()))


def test_shared_models_import_no_identity_method():
    """Everything in models/ outside the method packages (models/identity/*.py, common/, face_analysis/, face3d/)
    serves every method, so it imports none of them."""
    shared = [p for p in python_files("models") if not any((IDENTITY / m) in p.parents for m in METHODS)]
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in shared for m in imports(p) if identity_method(m) is not None}
    assert {"facesnap", "instantid", "pulid", "ecomid"} <= set(METHODS) and len(shared) > 40
    assert not bad


def test_the_checker_sees_an_import_of_another_method():
    source = IDENTITY / "pulid" / "id_former.py"
    assert identity_method("models.identity.instantid.resampler") == "instantid"
    assert identity_method("models.identity.perceiver") is None and identity_method("models.common.operations") is None
    assert "models.identity.perceiver" in imports(source)


@pytest.mark.parametrize("folder", ["scripts", "benchmarks", "devkit"])
def test_scripts_and_benchmarks_never_import_tests(folder):
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in python_files(folder) for m in imports(p) if top(m) in TEST_MODULES}
    assert not bad


def sys_path_changes(path: pathlib.Path) -> list[tuple[str, str, int]]:
    """(method, argument source, line) of every sys.path.insert / append / remove call in a file."""
    source = path.read_text(encoding="utf-8")
    calls = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == "sys.path" and node.func.attr in ("insert", "append", "remove")):
            calls.append((node.func.attr, ast.unparse(node.args[-1]), node.lineno))
    return calls


def test_only_the_pack_root_is_put_on_sys_path_and_only_briefly():
    """Entry points put the checkout on sys.path just long enough to import pack_import (its nodes/ would shadow
    ComfyUI's nodes.py); ComfyUI itself is made importable only by comfy_glue/boot.py; nothing reaches into tests/."""
    files = [p for p in ROOT.rglob("*.py") if ".git" not in p.parts and p != ROOT / "comfy_glue" / "boot.py"]
    checked = 0
    for path in files:
        calls = sys_path_changes(path)
        added = [arg for method, arg, _ in calls if method != "remove"]
        removed = [arg for method, arg, _ in calls if method == "remove"]
        for arg in added:
            assert arg in ("str(ROOT)", "str(PACK_ROOT)", "str(REPO_ROOT)", "str(root)"), (path, arg)
            assert arg in removed, f"{path} leaves {arg} on sys.path"
            checked += 1
    assert checked >= 10


def test_comfyui_starts_in_one_place():
    """Only comfy_glue/boot.py chooses ComfyUI's device and registers the torchvision shim (its docstring says why;
    scripts/setup_host.sh writes the same line into the test venv and points there)."""
    pattern = re.compile(r"_meta_registrations|cli_args|args\.cpu\s*=")
    starters = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if ".git" not in p.parts
                and p != pathlib.Path(__file__) and pattern.search(p.read_text(encoding="utf-8"))}
    assert starters == {"comfy_glue/boot.py"}
    boot = (ROOT / "comfy_glue" / "boot.py").read_text()
    assert "Why a torchvision shim" in boot
    assert "comfy_glue/boot.py" in (ROOT / "scripts" / "setup_host.sh").read_text()


def test_the_checker_sees_a_relative_import_of_the_nodes(tmp_path, monkeypatch):
    sample = ROOT / "training" / "_layer_probe.py"
    monkeypatch.setattr(pathlib.Path, "read_text",
                        lambda self, **kw: "from ..nodes import face_nodes\nimport comfy.sd\n")
    assert imports(sample) == {"nodes", "comfy.sd"}


def test_docs_and_code_name_no_tracker_items():
    """Readers outside the project cannot look up "issue 5" or "the issue's criterion"."""
    suffixes = {".py", ".md", ".yaml", ".toml", ".txt", ".sh", ".cjs"}
    files = [p for p in ROOT.rglob("*")
             if p.suffix in suffixes and ".git" not in p.parts and "node_modules" not in p.parts]
    files.append(ROOT / "Makefile")
    pattern = re.compile(r"\bissues?\s*#?\d|\bthe issue'?s?\b", re.IGNORECASE)
    bad = [f"{p.relative_to(ROOT)}:{n}" for p in files if p != pathlib.Path(__file__)
           for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not bad


def test_one_documented_way_to_train_the_light_ffrnet():
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert "model.ffrnet_preset: sdxl_light" in docs
    assert "transformer_layers_per_block: [1, 2, 2]}" not in docs
