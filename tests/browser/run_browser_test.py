"""Real-browser test (``make browser-test``): the pinned ComfyUI server on CPU, its PyPI frontend, headless Chromium.

For every workflow in workflows/: it loads with no missing-node dialog or notice and no console error, and the
frontend's own ``graphToPrompt`` gives the same API prompt as devkit/workflow_format.py. The landmark workflow is
queued and its output images must appear in the UI. Screenshots and results.json are kept under an artifacts folder
outside the repo.

Needs Debian's ``chromium`` (installed with apt-get when missing and running as root) and ``playwright-core`` from
npm, installed into the host cache (never a browser download).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from importlib.metadata import version

HERE = pathlib.Path(__file__).resolve().parent
PACK_ROOT = HERE.parents[1]
CACHE = pathlib.Path(os.environ.get("FACESNAP_CACHE", pathlib.Path.home() / ".cache" / "comfyui-facesnap"))
COMFY = pathlib.Path(os.environ.get("COMFYUI_PATH", CACHE / "comfyui")).resolve()
CHROMIUM = pathlib.Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
DRIVER_DIR = CACHE / "browser-driver"
PLAYWRIGHT_CORE = "playwright-core@1.65.1"
RUN_WORKFLOW = "facesnap_landmarks"

sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.load_pack()
from comfyui_facesnap.devkit.comfy_server import comfy_server, http_json, link_pack  # noqa: E402
from comfyui_facesnap.devkit.ui_workflow import FRONTEND_ONLY_TYPES  # noqa: E402
from comfyui_facesnap.devkit.workflow_files import populate_inputs, populate_models  # noqa: E402
from comfyui_facesnap.devkit.workflow_format import ui_to_api  # noqa: E402


def log(message: str) -> None:
    print(f"[browser-test] {message}", flush=True)


def ensure_system_tools() -> None:
    """Debian's chromium, node and npm; installed with apt-get when missing and running as root (as CI does)."""
    missing = [package for package, present in (("chromium", CHROMIUM.exists()), ("nodejs", shutil.which("node")),
                                                 ("npm", shutil.which("npm"))) if not present]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {missing}: install them with `sudo apt-get install {' '.join(missing)}`")
    log(f"installing {missing} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def ensure_driver() -> pathlib.Path:
    modules = DRIVER_DIR / "node_modules"
    if not (modules / "playwright-core" / "package.json").exists():
        log(f"installing {PLAYWRIGHT_CORE} into {DRIVER_DIR}")
        DRIVER_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(DRIVER_DIR), PLAYWRIGHT_CORE],
                       check=True, env=dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1"))
    return modules


def prepare_base(base: pathlib.Path) -> None:
    """A throw-away ComfyUI base directory: this checkout as a custom node, photos, stand-in model files."""
    link_pack(base)
    populate_inputs(base / "input")
    populate_models(base / "models")
    # The state of a user who has opened ComfyUI before: a brand-new user gets the template browser on top.
    user = base / "user" / "default"
    for folder in ("workflows", "subgraphs"):
        (user / folder).mkdir(parents=True)
    (user / "user.css").write_text("")
    (user / "comfy.templates.json").write_text("[]")
    settings = {"Comfy.TutorialCompleted": True, "Comfy.InstalledVersion": version("comfyui-frontend-package"),
                "Comfy.Minimap.Visible": False}
    (user / "comfy.settings.json").write_text(json.dumps(settings))


def is_frontend_startup_bug(error: dict) -> bool:
    """Frontend 1.32.9 stores LiteGraph.Canvas.MinFontSizeForLOD from GraphView before that setting is registered,
    and the setting store's onChange dereferences the missing definition. It happens on every start, with or
    without this pack, before any workflow is loaded."""
    text = error["text"]
    return text.startswith("TypeError: Cannot read properties of undefined (reading 'id')") and \
        "at onChange (" in text and "/GraphView-" in text


def is_frontend_app_mode_bug(error: dict) -> bool:
    """Frontend 1.49's app-mode store subscribes to ``app.rootGraph.events`` when it is created, before the graph
    exists, and the ``rootGraph`` getter logs this. It is the frontend's own start-up code (the pack ships no web
    code), before any workflow is loaded."""
    return error["text"] == "ComfyApp graph accessed before initialization" and "/assets/settingStore-" in error["url"]


def is_environment_noise(error: dict, server_url: str) -> bool:
    """Console errors that neither the pack nor a workflow can cause, so they are reported but not failed on:
    requests to other hosts (this machine is offline; the frontend asks api.comfy.org about releases and the node
    registry) and the two static files this ComfyUI version has no route for."""
    if not error["text"].startswith("Failed to load resource"):
        return False
    url = urllib.parse.urlsplit(error["url"])
    if not error["url"].startswith(server_url):
        return True
    return "404" in error["text"] and url.path in ("/favicon.ico", "/user.css")


# 1.49's queue status cards for the workflow this test queues (its run is checked by its output images instead).
QUEUE_STATUS = re.compile(r"^(Job (queued|queuing|completed|running)|In queue|Finished in)\b")


def is_queue_status(notice: str) -> bool:
    return bool(QUEUE_STATUS.match(notice))


def pack_node_types(object_info: dict) -> set[str]:
    return {name for name, info in object_info.items() if "custom_nodes" in str(info.get("python_module", ""))}


def pack_startup_notices(results: dict, pack_types: set[str]) -> list[str]:
    """Start-up notices the pack can be behind. Frontend 1.49 opens its own default graph (Z-Image Turbo) on a first
    start, and reports that graph's models, absent on this offline machine; that report names no pack node and the
    graph holds none. Notices naming a pack node, or any notice while a pack node is on the start-up graph, count."""
    pack_on_graph = bool(pack_types & set(results["startup_types"]))
    return [n for n in results["startup_notices"] if not is_queue_status(n)
            and (pack_on_graph or any(name in n for name in pack_types))]


def real_errors(errors: list[dict], server_url: str) -> list[str]:
    return [f"{e['text'][:500]} ({e['url']})" for e in errors if not is_environment_noise(e, server_url)]


def check(results: dict, object_info: dict, workflows: list[pathlib.Path], server_url: str) -> list[str]:
    failures = []
    pack_types = pack_node_types(object_info)
    if not pack_types:
        failures.append("the server lists no node of this pack")
    startup_notices = pack_startup_notices(results, pack_types)
    if startup_notices:
        failures.append(f"notices shown after start-up: {startup_notices}")
    boot_errors = [e for e in results["boot_errors"] if not (is_frontend_startup_bug(e) or is_frontend_app_mode_bug(e))]
    if real_errors(boot_errors, server_url):
        failures.append(f"console errors during start-up: {real_errors(boot_errors, server_url)}")
    control = results["negative_control"]
    if not control["unknown_types"] or not any("FaceSnapNodeThatDoesNotExist" in d for d in control["notices"]):
        failures.append(f"the missing-node check did not notice an unknown node: {control}")
    by_name = {entry["name"]: entry for entry in results["workflows"]}
    for path in workflows:
        entry = by_name.get(path.stem)
        if entry is None:
            failures.append(f"{path.stem}: not loaded")
            continue
        workflow = json.loads(path.read_text())
        expected_nodes = sum(1 for node in workflow["nodes"])
        problems = []
        if entry["unknown_types"]:
            problems.append(f"missing node types {entry['unknown_types']}")
        notices = [n for n in entry["notices"] if not is_queue_status(n)]
        if notices:
            problems.append(f"notice shown: {notices}")
        if real_errors(entry["errors"], server_url):
            problems.append(f"console errors: {real_errors(entry['errors'], server_url)}")
        if entry["node_count"] != expected_nodes:
            problems.append(f"{entry['node_count']} nodes on the canvas, {expected_nodes} in the file")
        expected = ui_to_api(workflow, object_info)
        if entry["prompt"] != expected:
            problems.append(f"frontend prompt differs from workflow_format.ui_to_api:\n  frontend {entry['prompt']}"
                            f"\n  ours     {expected}")
        if path.stem == RUN_WORKFLOW:
            outputs = [n for n in workflow["nodes"] if n["type"] in ("SaveImage", "PreviewImage")]
            if len(entry.get("shown_images", [])) < len(outputs) or not entry.get("images_viewed"):
                problems.append(f"output images not shown: {entry.get('shown_images')}")
        failures += [f"{path.stem}: {problem}" for problem in problems]
    return failures


def main() -> int:
    started = time.monotonic()
    workflows = sorted((PACK_ROOT / "workflows").glob("*.json"))
    if not any(path.stem == RUN_WORKFLOW for path in workflows):
        sys.exit(f"workflows/{RUN_WORKFLOW}.json is missing")
    ensure_system_tools()
    modules = ensure_driver()
    artifacts = pathlib.Path(os.environ.get("ARTIFACTS") or tempfile.mkdtemp(prefix="facesnap-browser-artifacts-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    base = pathlib.Path(tempfile.mkdtemp(prefix="facesnap-browser-comfy-"))
    prepare_base(base)
    try:
        with comfy_server(COMFY, base, artifacts / "server.log", say=log) as server:
            url = server.url
            log(f"server ready in {server.ready_seconds:.1f} s at {url}")
            object_info = http_json(f"{url}/object_info")
            for name in {node["type"] for path in workflows for node in json.loads(path.read_text())["nodes"]}:
                if name not in object_info and name not in FRONTEND_ONLY_TYPES:
                    log(f"warning: the server does not know {name}")
            env = dict(os.environ, COMFY_URL=url, ARTIFACTS=str(artifacts), RUN_WORKFLOW=RUN_WORKFLOW,
                       WORKFLOWS=json.dumps([str(p) for p in workflows]), CHROMIUM=str(CHROMIUM),
                       USER_DATA_DIR=tempfile.mkdtemp(prefix="facesnap-chromium-"), NODE_PATH=str(modules))
            browser_started = time.monotonic()
            subprocess.run(["node", str(HERE / "drive_ui.cjs")], check=True, env=env, timeout=600)
            browser_seconds = time.monotonic() - browser_started
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = json.loads((artifacts / "results.json").read_text())
    for entry in results["workflows"]:
        extra = f", ran in {entry['run_seconds']:.1f} s" if "run_seconds" in entry else ""
        log(f"{entry['name']}: {entry['node_count']} nodes, loaded in {entry['load_seconds']:.2f} s{extra}; "
            f"screenshot {entry['screenshot']}")
    failures = check(results, object_info, workflows, url)
    noise = [e for e in results["boot_errors"] + sum((w["errors"] for w in results["workflows"]), [])
             if is_environment_noise(e, url)]
    log(f"ignored {len(noise)} offline/no-route resource errors: {sorted({e['url'] for e in noise})}")
    log(f"timings: server start {server.ready_seconds:.1f} s, browser session {browser_seconds:.1f} s "
        f"(page ready {results['boot_seconds']:.1f} s), total {time.monotonic() - started:.1f} s")
    log(f"artifacts: {artifacts}")
    if failures:
        print("\n".join(["[browser-test] FAILED:", *failures]), file=sys.stderr)
        return 1
    log(f"passed: {len(workflows)} workflows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
