"""What `pip install -r requirements.txt` (ComfyUI-Manager, comfy-cli) does to a user's ComfyUI, and the Comfy
Registry metadata in pyproject.toml. Offline: dependencies are walked through the installed packages' metadata."""

import ast
import importlib.metadata
import pathlib
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


REQUIREMENTS = [Requirement(line) for line in requirement_lines("requirements.txt")]


def test_pyproject_dependencies_match_requirements():
    project = PYPROJECT["project"]
    assert project["dependencies"] == requirement_lines("requirements.txt")
    assert project["license"] == {"file": "LICENSE"}


def test_torch_is_left_to_comfyui():
    """A pip resolve of torch can swap the user's CUDA build for a CPU one; ComfyUI provides it."""
    names = {canonicalize_name(r.name) for r in REQUIREMENTS}
    assert not names & {"torch", "torchvision", "torchaudio", "xformers"}


# ---- onnxruntime next to onnxruntime-gpu -------------------------------------------------------------------------
def _is_onnxruntime(name: str) -> bool:
    """Every onnxruntime build (onnxruntime, -gpu, -directml, -openvino, ...) installs the same ``onnxruntime/``
    folder, so whichever pip installs last replaces the user's choice."""
    return canonicalize_name(name).startswith("onnxruntime")


def onnxruntime_paths(roots: list[Requirement]) -> list[list[str]]:
    """Every dependency chain from ``roots`` to an onnxruntime package, through the installed packages' metadata
    (what pip resolved when this environment was built from the same requirement files). A requirement whose
    platform marker is false here is still checked by name, since it applies on another platform."""
    found, seen = [], set()
    stack = [(req, [req.name]) for req in roots]
    while stack:
        req, path = stack.pop()
        if _is_onnxruntime(req.name):
            found.append(path)
            continue
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(req.name)  # PackageNotFoundError: run `make setup`
        for text in dist.requires or []:
            child = Requirement(text)
            wanted = child.marker is None or any(child.marker.evaluate({"extra": e}) for e in ("", *req.extras))
            other_platform = not wanted and "extra" not in str(child.marker)
            if wanted or (other_platform and _is_onnxruntime(child.name)):
                stack.append((child, [*path, child.name]))
    return found


def test_requirements_never_pull_an_onnxruntime():
    """On a CUDA machine that already has onnxruntime-gpu (InstantID, PuLID, ReActor users), installing the pack
    must not add the CPU package into the same folder. insightface (every wheel since 1.0) requires onnxruntime,
    so it is not a requirement: the identity nodes print the install commands instead."""
    project = PYPROJECT["project"]
    roots = REQUIREMENTS + [Requirement(r) for r in project["dependencies"]]
    extras = project["optional-dependencies"]
    roots += [Requirement(r) for name, reqs in extras.items() if name != "insightface" for r in reqs]
    assert onnxruntime_paths(roots) == []
    # the check itself sees the chain that the old requirements had
    assert ["insightface", "onnxruntime"] in onnxruntime_paths([Requirement("insightface")])


def test_open_clip_is_only_an_eval_extra():
    names = {canonicalize_name(r.name) for r in REQUIREMENTS}
    assert "open-clip-torch" not in names
    assert any(r.startswith("open_clip_torch") for r in PYPROJECT["project"]["optional-dependencies"]["eval"])
    for folder in ("nodes", "models", "comfy_glue", "training"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "open_clip" not in path.read_text(), path


# ---- dlib-bin wheels -----------------------------------------------------------------------------------------------
# Which dlib-bin wheel pip picks, from `pip download --no-deps --only-binary=:all: --platform P --python-version V
# dlib-bin` on 2026-11-30 (dlib-bin 19.24.2 ... 20.0.1.post1). None: no wheel, so the install would fail.
# (sys_platform, platform_machine, Darwin release of the oldest macOS the wheel supports) -> Pythons with a wheel
DLIB_WHEELS = {
    ("linux", "x86_64", ""): ("3.10", "3.11", "3.12", "3.13", "3.14"),  # 20.0.1.post1 manylinux_2_28
    ("linux", "aarch64", ""): ("3.10", "3.11", "3.12", "3.13", "3.14"),  # 20.0.1.post1 manylinux_2_28
    ("win32", "AMD64", ""): ("3.10", "3.11", "3.12", "3.13", "3.14"),  # 20.0.1.post1 win_amd64
    ("win32", "ARM64", ""): (),
    ("darwin", "arm64", "20.6.0"): ("3.10", "3.11", "3.12"),  # macOS 11: 19.24.6 macosx_11_0_arm64
    ("darwin", "arm64", "22.6.0"): ("3.10", "3.11", "3.12"),  # macOS 13: still only 19.24.6
    ("darwin", "arm64", "23.6.0"): ("3.10", "3.11", "3.12", "3.13", "3.14"),  # macOS 14: 20.0.1.post1 macosx_14_0
    ("darwin", "x86_64", "21.6.0"): ("3.10", "3.11", "3.12"),  # macOS 12: 19.24.6 macosx_10_9_x86_64
    ("darwin", "x86_64", "22.6.0"): ("3.10", "3.11", "3.12", "3.13"),  # macOS 13: 19.24.6 macosx_13_0 for 3.13
    ("darwin", "x86_64", "24.6.0"): ("3.10", "3.11", "3.12", "3.13"),  # no 3.14 wheel for Intel Macs
}


@pytest.mark.parametrize("package", ["dlib-bin", "face-recognition-models"])
def test_dlib_is_installed_exactly_where_a_wheel_exists(package):
    """A requirement without a wheel makes pip build dlib from source (or fail the whole install);
    face-recognition-models (dlib's model files) only makes sense where dlib installs."""
    (req,) = [r for r in REQUIREMENTS if canonicalize_name(r.name) == package]
    for (platform, machine, release), pythons in DLIB_WHEELS.items():
        for python in ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15"):
            env = {"sys_platform": platform, "platform_machine": machine, "platform_release": release or "6.8.0",
                   "python_version": python, "python_full_version": f"{python}.0"}
            assert req.marker.evaluate(env) == (python in pythons), (package, platform, machine, release, python)


# ---- Comfy Registry ------------------------------------------------------------------------------------------------
# From docs.comfy.org/registry/specifications and comfy-cli's validators (comfy_cli/registry/config_parser.py),
# as of 2026-08: the publish step drops a field that fails these rules, with only a warning.
REGISTRY_ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                         "GPU :: Apple Metal"}
REGISTRY_OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
REGISTRY_VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
TOOL_COMFY_KEYS = {"PublisherId", "DisplayName", "Icon", "Banner", "requires-comfyui", "includes", "Models", "version"}


def test_registry_project_fields():
    project = PYPROJECT["project"]
    name = project["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert (ROOT / project["license"]["file"]).is_file()
    assert project["description"].strip()
    assert project["urls"]["Repository"].startswith("https://")
    classifiers = project["classifiers"]
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert systems and all(s.startswith(REGISTRY_OS_PREFIXES) for s in systems)
    assert accelerators and set(accelerators) <= REGISTRY_ACCELERATORS


def test_registry_tool_comfy_fields():
    comfy = PYPROJECT["tool"]["comfy"]
    assert set(comfy) <= TOOL_COMFY_KEYS
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    for key in ("Icon", "Banner"):  # optional, but when present a URL to an image (an empty one is an error)
        if key in comfy:
            assert re.fullmatch(r"https://\S+\.(svg|png|jpe?g|gif)", comfy[key]), key
    required = comfy["requires-comfyui"]
    assert all(REGISTRY_VERSION_PART.match(part.strip()) for part in required.split(","))
    # the oldest ComfyUI that calls comfy_entrypoint (v0.3.48, 2025-08-01); see README, "Development"
    assert required == ">=0.3.48"


# ---- Python 3.10 ---------------------------------------------------------------------------------------------------
# Standard-library names that appeared after 3.10, the ones most often reached for.
NEWER_THAN_310 = {"tomllib": None, "datetime": {"UTC"}, "enum": {"StrEnum"}, "hashlib": {"file_digest"},
                  "typing": {"Self", "LiteralString", "Never", "assert_never", "reveal_type", "Required",
                             "NotRequired", "TypeVarTuple", "Unpack", "override"},
                  "asyncio": {"TaskGroup", "timeout"}, "itertools": {"batched"}, "contextlib": {"chdir"},
                  "operator": {"call"}, "math": {"exp2", "cbrt"}}


def _guarded_by_import_error(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno")}
    return lines


def python_310_problems(path: pathlib.Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path), feature_version=(3, 10))  # SyntaxError for 3.11+ syntax (except*, ...)
    guarded, aliases, problems = _guarded_by_import_error(tree), {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
                if alias.name in NEWER_THAN_310 and NEWER_THAN_310[alias.name] is None and node.lineno not in guarded:
                    problems.append(f"{path}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module in NEWER_THAN_310 and node.lineno not in guarded:
            names = NEWER_THAN_310[node.module]
            for alias in node.names:
                if names is None or alias.name in names:
                    problems.append(f"{path}:{node.lineno} from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if module in NEWER_THAN_310 and node.attr in (NEWER_THAN_310[module] or ()) and node.lineno not in guarded:
                problems.append(f"{path}:{node.lineno} {module}.{node.attr}")
    return problems


def test_every_file_runs_on_python_310():
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    files = [p for p in ROOT.rglob("*.py") if not {".git", "node_modules"} & set(p.parts)]
    assert len(files) > 50
    problems = [problem for path in files for problem in python_310_problems(path)]
    assert problems == []


def test_the_python_310_check_finds_newer_code(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("import tomllib\nimport datetime as dt\nprint(dt.UTC)\nfrom typing import Self\n")
    assert len(python_310_problems(newer)) == 3
    newer.write_text("try:\n    import tomllib\nexcept ModuleNotFoundError:\n    import tomli as tomllib\n")
    assert python_310_problems(newer) == []
    newer.write_text("try:\n    pass\nexcept* ValueError:\n    pass\n")
    with pytest.raises(SyntaxError):
        python_310_problems(newer)
