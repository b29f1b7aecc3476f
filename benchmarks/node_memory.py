"""Memory of the face nodes at large widget values, through ComfyUI's real executor.

Each scenario runs in a fresh process: boot ComfyUI, load the pack, then run one graph through one persistent
``PromptExecutor`` (as a server keeps it). Reported per scenario, in MB of resident memory (Linux /proc/self/status):

    before    RSS after start-up, before the prompt
    peak      highest RSS during the prompt (VmHWM, reset through /proc/self/clear_refs just before it)
    held      RSS after the prompt while the executor still caches the outputs (what a server holds until the
              next prompt replaces them)
    released  RSS after the executor is dropped and garbage is collected (nothing of the pack's should remain)
    trimmed   the same after glibc's malloc_trim(0) returns freed heap pages to the system (what is really live)

Scenarios:
    crop4096_all  t1.jpg (six faces), Face Crop size 4096 with selection = all, Draw Landmarks, two Save Image
    draw8192      Tom_Hanks_54745.png, Face Crop 512, Draw Landmarks at width = height = 8192, Save Image
    crop1024_all  as crop4096_all with size 1024 (within the limit: shows what a server holds and releases)

    python benchmarks/node_memory.py [crop4096_all draw8192 crop1024_all]

Needs the ComfyUI host (COMFYUI_PATH, default ~/.cache/comfyui-facesnap/comfyui) and the insightface wheel (photos).
A scenario the pack refuses prints the node's error instead of failing.
"""

from __future__ import annotations

import gc
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def graph(name: str) -> tuple[str, dict]:
    crop = {"selection": "all", "index": 0, "size": 4096, "margin": 0.5, "if_no_face": "error"}
    draw = {"frame": "crop", "width": 0, "height": 0}
    photo = "t1.jpg"
    if name == "crop1024_all":
        crop.update(size=1024)
    if name == "draw8192":
        crop.update(selection="largest", size=512)
        draw.update(width=8192, height=8192)
        photo = "Tom_Hanks_54745.png"
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "2": {"class_type": "FaceSnapFaceAnalyzerLoader", "inputs": {"backend": "dlib", "provider": "CPU",
                                                                     "dlib_detector": "hog"}},
        "3": {"class_type": "FaceSnapFaceCrop", "inputs": {"analyzer": ["2", 0], "image": ["1", 0], **crop}},
        "4": {"class_type": "FaceSnapDrawLandmarks", "inputs": {"faces": ["3", 1], **draw}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "control"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 1], "filename_prefix": "overlay"}},
    }
    return photo, prompt


def rss_mb(field: str = "VmRSS") -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_scenario(name: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.boot_comfyui(cpu=True)
    import asyncio
    import uuid

    import execution

    from comfyui_facesnap.devkit.comfy_host import ComfyHost, _StubServer, new_executor
    from comfyui_facesnap.devkit.workflow_files import insightface_images

    with tempfile.TemporaryDirectory() as work:
        host = ComfyHost(ROOT, pathlib.Path(work))
        photo, prompt = graph(name)
        shutil.copy(insightface_images() / photo, host.input_dir / photo)
        valid = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        executor = new_executor(_StubServer())
        gc.collect()
        before = rss_mb()
        reset_peak()
        executor.execute(prompt, str(uuid.uuid4()), {}, valid[2])
        peak = rss_mb("VmHWM")
        gc.collect()
        held = rss_mb()
        error = next((data.get("exception_message", "") for event, data in executor.status_messages
                      if event == "execution_error"), "")
        del executor
        gc.collect()
        released = rss_mb()
        trimmed = released
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            trimmed = rss_mb()
        except OSError:
            pass
    return {"scenario": name, "before": round(before), "peak": round(peak), "held": round(held),
            "released": round(released), "trimmed": round(trimmed), "error": error.strip()}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--one":
        print(json.dumps(run_scenario(argv[1])))
        return 0
    for name in argv or ["crop4096_all", "draw8192", "crop1024_all"]:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: before {result['before']} MB, peak {result['peak']} MB, held {result['held']} MB, "
              f"released {result['released']} MB, trimmed {result['trimmed']} MB"
              + (f"; refused: {result['error'].splitlines()[0]}" if result["error"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
