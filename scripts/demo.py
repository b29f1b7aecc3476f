"""`make demo`: run the landmark and Landmark Predictor workflows through a real ComfyUI server on t1.jpg.

Starts ``main.py --cpu`` on a free local port with its own base directory (``<cache>/demo-base``, where
``custom_nodes/ComfyUI-FaceSnap`` links to this checkout), copies t1.jpg from the installed insightface package into
the server's input folder, queues the API form of each workflow over HTTP, waits for it in ``/history`` and prints the
PNGs it wrote: one landmark control image and one overlay per face of t1.jpg, then the predictor's landmarks, 3D render
and overlay for one face re-posed like another. The dlib backend needs no model download; the predictor needs the
converted ICT-FaceKit model (``ict_face_narrow.npz``), taken from ComfyUI/models/3dmm, ``$FACESNAP_ICT_NPZ`` or
``../shared/3dmm`` beside this checkout, and is skipped with instructions when none is found.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time
import urllib.error
import uuid

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
LANDMARK_WORKFLOW = PACK_ROOT / "workflows" / "facesnap_landmarks.json"
PREDICTOR_WORKFLOW = PACK_ROOT / "workflows" / "facesnap_landmark_predictor.json"
ICT_FILE = "ict_face_narrow.npz"
FACE_NODES = ("FaceSnapFaceAnalyzerLoader", "FaceSnapFaceCrop", "FaceSnapDrawLandmarks", "FaceSnapLandmarkPredictor")
RUN_TIMEOUT_S = 600

sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.load_pack()
from comfyui_facesnap.devkit.comfy_server import comfy_server, http_json, link_pack  # noqa: E402
from comfyui_facesnap.devkit.workflow_files import insightface_images  # noqa: E402
from comfyui_facesnap.devkit.workflow_format import ui_to_api  # noqa: E402


def prepare_base(cache: pathlib.Path) -> pathlib.Path:
    base = cache / "demo-base"
    for sub in ("custom_nodes", "input", "output", "models", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link_pack(base)
    try:
        photos = insightface_images()
    except RuntimeError as err:
        sys.exit(str(err))
    shutil.copy(photos / "t1.jpg", base / "input" / "t1.jpg")
    return base


def link_ict_model(base: pathlib.Path, comfyui: pathlib.Path) -> bool:
    """Make the converted ICT-FaceKit model visible in the demo's models/3dmm. False when none is found."""
    target = base / "models" / "3dmm" / ICT_FILE
    if target.exists():
        return True
    candidates = [comfyui / "models" / "3dmm" / ICT_FILE, PACK_ROOT.parent / "shared" / "3dmm" / ICT_FILE]
    if os.environ.get("FACESNAP_ICT_NPZ"):
        candidates.insert(0, pathlib.Path(os.environ["FACESNAP_ICT_NPZ"]))
    for candidate in candidates:
        if candidate.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(candidate.resolve())
            return True
    return False


def run_workflow(url: str, base: pathlib.Path, workflow: pathlib.Path) -> list[pathlib.Path]:
    object_info = http_json(url + "/object_info")
    missing = [node for node in FACE_NODES if node not in object_info]
    if missing:
        raise RuntimeError(f"the pack's nodes are not registered ({', '.join(missing)}); see the server log")
    prompt = ui_to_api(json.loads(workflow.read_text()), object_info)
    try:
        prompt_id = http_json(url + "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"ComfyUI rejected the workflow: {err.read().decode()}") from err
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        history = http_json(f"{url}/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            if entry["status"]["status_str"] != "success":
                errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
                raise RuntimeError(f"the workflow failed: {errors}")
            return [base / image.get("type", "output") / image["subfolder"] / image["filename"]
                    for node_id in sorted(entry["outputs"], key=int)
                    for image in entry["outputs"][node_id].get("images", [])]
        time.sleep(0.5)
    raise RuntimeError(f"the workflow did not finish within {RUN_TIMEOUT_S} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", required=True, type=pathlib.Path, help="the ComfyUI folder (holds main.py)")
    default_cache = pathlib.Path(os.environ.get("FACESNAP_CACHE", "~/.cache/comfyui-facesnap")).expanduser()
    parser.add_argument("--cache", type=pathlib.Path, default=default_cache,
                        help="where demo-base/ (ComfyUI's base directory for the demo) is created")
    args = parser.parse_args()
    started = time.monotonic()
    base = prepare_base(args.cache)
    workflows = [LANDMARK_WORKFLOW]
    if link_ict_model(base, args.comfyui):
        workflows.append(PREDICTOR_WORKFLOW)
    else:
        print(f"note: {ICT_FILE} not found, so the Landmark Predictor part is skipped. Convert ICT-FaceKit once with "
              f"scripts/convert_ict_facekit.py into ComfyUI/models/3dmm/ (see the README).", flush=True)
    log = base / "server.log"
    with comfy_server(args.comfyui, base, log) as server:
        print(f"server ready after {time.monotonic() - started:.1f} s", flush=True)
        try:
            for workflow in workflows:
                run_started = time.monotonic()
                paths = run_workflow(server.url, base, workflow)
                print(f"{workflow.name} ran in {time.monotonic() - run_started:.1f} s and wrote {len(paths)} images:")
                for path in paths:
                    print(f"  {path}")
        except RuntimeError as err:
            sys.exit(f"demo failed: {err}\n  server log: {log}")
    print(f"demo wall time {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
