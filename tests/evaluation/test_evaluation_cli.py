"""scripts/facesnap_eval.py end to end through a real ComfyUI server on tiny models: it joins the server, patches a
tiny identity workflow (tiny SDXL, generated antelopev2, tiny FaceSnap weights) and its plain-SDXL baseline, scores
the images with three judges (the generated antelopev2's ArcFace, FaceNet with full-size random weights in its
published file, dlib; AdaFace and CurricularFace have no weights and are listed as not run) plus their copy-paste
scores against held-out photos, a tiny open_clip, a random-weight FID Inception and a toy 3DMM, writes the four
outputs, and on a second run (with the baseline added) resumes the finished images.

The tiny workflow blends the reference photo into the generation (ImageBlend), so the face metrics see real faces."""

from __future__ import annotations

import argparse
import csv
import functools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from comfyui_facesnap.comfy_glue.boot import find_comfyui
from comfyui_facesnap.devkit.random_judge_weights import write_published_judge
from comfyui_facesnap.evaluation.report import DOWN, UP
from comfyui_facesnap.models.errors import ModelFileError
from evaluation_fixtures import EVAL_SCRIPT as SCRIPT
from evaluation_fixtures import load_eval_cli, write_random_inception, write_tiny_clip

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMFY = find_comfyui()  # the host tests/nodes/conftest.py booted
eval_cli = load_eval_cli()


def tiny_workflow() -> dict:
    node = lambda class_type, title=None, **inputs: {"class_type": class_type, "inputs": inputs,  # noqa: E731
                                                     "_meta": {"title": title or class_type}}
    return {
        "1": node("LoadImage", "Reference photo", image="placeholder.png"),
        "2": node("FaceSnapFaceAnalyzerLoader", backend="insightface", provider="CPU", dlib_detector="hog"),
        "3": node("FaceSnapFaceCrop", analyzer=["2", 0], image=["1", 0], selection="largest", index=0, size=128,
                  margin=0.5, if_no_face="error"),
        "4": node("FaceSnapDrawLandmarks", faces=["3", 1], frame="crop", width=128, height=128),
        "5": node("FaceSnapTestTinyCLIPVision", seed=0),
        "6": node("FaceSnapModelLoader", facesnap_name="tiny_facesnap.safetensors",
                  controlnet_name="(FFRNet inside the FaceSnap file)"),
        "7": node("FaceSnapTestTinySDXL", seed=0, sd15=False),
        "8": node("FaceSnapTestTextConditioning", "Prompt", text="a photo"),
        "9": node("ApplyFaceSnap", model=["7", 0], positive=["8", 0], negative=["8", 1], faces=["3", 1],
                  clip_vision=["5", 0], facesnap_model=["6", 0], landmark_image=["4", 0], strength=1.0,
                  start_percent=0.0, end_percent=1.0),
        "10": node("EmptyLatentImage", width=128, height=128, batch_size=1),
        "11": node("KSampler", model=["9", 0], seed=0, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
                   positive=["9", 1], negative=["9", 2], latent_image=["10", 0], denoise=1.0),
        "12": node("VAEDecode", samples=["11", 0], vae=["7", 1]),
        "13": node("ImageBlend", image1=["12", 0], image2=["1", 0], blend_factor=0.7, blend_mode="normal"),
        "14": node("SaveImage", images=["13", 0], filename_prefix="tiny"),
    }


def make_base(base: pathlib.Path) -> pathlib.Path:
    """A ComfyUI base directory with the generated antelopev2, tiny FaceSnap weights, this pack and the test nodes."""
    from comfy_test_nodes.tiny_models import tiny_facesnap_models
    from comfyui_facesnap.devkit.onnx_antelopev2 import make_antelopev2
    from comfyui_facesnap.models.identity.facesnap.checkpoint import save_facesnap

    make_antelopev2(base / "models" / "insightface")
    (base / "models" / "facesnap").mkdir(parents=True)
    save_facesnap(str(base / "models" / "facesnap" / "tiny_facesnap.safetensors"), *tiny_facesnap_models(seed=0), {})
    eval_cli.prepare_base(argparse.Namespace(base_directory=base, custom_node=[ROOT / "tests" / "comfy_test_nodes"]))
    return base


@pytest.fixture(scope="module")
def setup(tmp_path_factory, insightface_images):
    import cv2

    from comfyui_facesnap.devkit.comfy_server import comfy_server
    from comfyui_facesnap.devkit.toy_3dmm import write_toy_ict_npz
    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.models.face_analysis.align import crop_square, square_box

    tmp = tmp_path_factory.mktemp("eval")
    base = make_base(tmp / "base")
    photo = cv2.imread(str(insightface_images / "t1.jpg"))[..., ::-1]
    faces = sorted(load_analyzer("dlib").detect(photo), key=lambda r: r.center_x)
    people, held_out = tmp / "people", tmp / "held_out"
    for name, face in (("ann", faces[0]), ("ben", faces[2])):
        for folder, margin, shift in ((people, 0.6, 0), (held_out, 0.8, 10)):  # the same person cut differently
            (folder / name).mkdir(parents=True)
            crop = crop_square(photo, square_box(face.bbox, margin) + shift, 192)
            cv2.imwrite(str(folder / name / "photo.png"), np.ascontiguousarray(crop[..., ::-1]))
    write_published_judge("FaceNet", tmp / "face_recognition", seed=0)
    workflow = tmp / "tiny_workflow.json"
    workflow.write_text(json.dumps(tiny_workflow()))
    server = functools.partial(comfy_server, COMFY, base, tmp / "server.log", say=lambda _: None)
    return {"tmp": tmp, "base": base, "people": people, "held_out": held_out, "workflow": workflow, "server": server,
            "clip": write_tiny_clip(tmp / "clip"), "inception": write_random_inception(tmp / "inception.safetensors"),
            "3dmm": write_toy_ict_npz(tmp / "toy_ict.npz")}


def run_cli(setup, url, out, *modes):
    command = [sys.executable, str(SCRIPT), "--server", url, "--references", str(setup["people"]),
               "--held-out", str(setup["held_out"]), "--prompt", "a portrait photo",
               "--prompt", "a watercolor painting",
               "--seeds", "7", "--workflow", str(setup["workflow"]), *[a for m in modes for a in ("--mode", m)],
               "--face-backend", "dlib", "--insightface-root", str(setup["base"] / "models" / "insightface"),
               "--judge-folder", str(setup["tmp"] / "face_recognition"),
               "--clip", f"local-dir:{setup['clip']}", "--fid-weights", str(setup["inception"]), "--fid-features", "64",
               "--3dmm", str(setup["3dmm"]), "--device", "cpu", "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_cli_generates_scores_and_resumes(setup, monkeypatch):
    """First run: the workflow only (4 images). Second run: workflow + plain SDXL baseline, resuming the 4."""
    # Server and CLI take turns; one intra-op thread each keeps tiny models fast on a busy 2-core machine.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = setup["tmp"] / "out"
    with setup["server"]() as server:
        run_cli(setup, server.url, out, "workflow")
        first = json.loads((out / "results.json").read_text())
        stdout = run_cli(setup, server.url, out, "workflow", "sdxl")
    assert (first["settings"]["generated"], first["settings"]["resumed"]) == (4, 0)
    results = json.loads((out / "results.json").read_text())
    assert (results["settings"]["generated"], results["settings"]["resumed"]) == (4, 4)
    summary = results["summary"]
    assert set(summary) == {"tiny_workflow", "sdxl"}
    assert summary["tiny_workflow"]["FaceSim-dlib"] == pytest.approx(first["summary"]["tiny_workflow"]["FaceSim-dlib"])
    judged = ("FaceSim-Arc", "FaceSim-FaceNet", "FaceSim-dlib", "CopyPaste-Arc", "CopyPaste-FaceNet", "CopyPaste-dlib")
    for mode, row in summary.items():
        assert row["images"] == 4 and row["faces_found"] == 4, (mode, row)
        assert 80 < row["FaceSim-dlib"] < 100 and "FaceSim" not in row  # dlib keeps its own name and scale
        for metric in ("CLIP-T", "CLIP-face", "FID", "seconds_per_image", "Shape", *judged):
            assert row[metric] is not None and np.isfinite(row[metric]), (mode, metric)
        assert "FaceSim-Cur" not in row and "FaceSim-Ada" not in row
        assert row["peak_vram_gb"] is None and row["timing"] == ["server"]  # a CPU server has no VRAM
    assert summary["tiny_workflow"]["control"] == "reference" and summary["tiny_workflow"]["Pose"] is not None
    assert summary["sdxl"]["control"] is None and summary["sdxl"]["Pose"] is None
    assert summary["tiny_workflow"]["CLIP-I"] is not None and summary["sdxl"]["CLIP-I"] is None  # vs the baseline
    assert "CurricularFace_Backbone.pth" in results["not_run"]["FaceSim-Cur"]
    assert "adaface_ir101_webface12m.ckpt" in results["not_run"]["FaceSim-Ada"]
    assert results["settings"]["judges"]["FaceNet"] == "20180402-114759-vggface2.pt"
    table = (out / "results.md").read_text()
    assert (f"| Method | CLIP-T{UP} | CLIP-face{UP} | FaceSim-Arc{UP} | FaceSim-FaceNet{UP} | FaceSim-dlib{UP} | "
            f"CopyPaste-Arc{DOWN} | FID{DOWN} | Time{DOWN} | VRAM{DOWN} |") in table
    assert "| tiny_workflow |" in table and "| sdxl |" in table and "NOT comparable with the other FaceSim" in table
    assert "- FaceSim-Cur: not run: no CurricularFace_Backbone.pth" in table
    assert table in stdout
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["person"] for r in rows} == {"ann", "ben"}
    import cv2

    ours, baseline = (cv2.imread(str(out / "images" / mode / "ann" / "p00_s7.png"))
                      for mode in ("tiny_workflow", "sdxl"))
    assert ours.shape == (128, 128, 3) and np.abs(ours.astype(int) - baseline).max() > 0  # the identity path acts
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[:2] == (4 * (192 + 22), 3 * 192)  # (mode, person) rows x (reference + 2 prompts)


def test_unreachable_server_and_missing_files_stop_with_a_clear_message(setup, capsys):
    base = ["--references", str(setup["people"]), "--prompt", "x", "--out", str(setup["tmp"] / "unused")]
    with pytest.raises(SystemExit) as stop:
        eval_cli.main(["--server", "http://127.0.0.1:9", *base])
    assert "cannot reach ComfyUI at http://127.0.0.1:9" in str(stop.value)
    with pytest.raises(SystemExit):
        eval_cli.main(base)  # neither --server nor --comfyui
    assert "give --server URL (one or more) or --comfyui PATH" in capsys.readouterr().err
    args = eval_cli.parse_args(["--server", "http://x", *base, "--face-backend", "dlib", "--no-clip", "--no-3dmm",
                                "--fid-weights", str(setup["tmp"] / "nowhere.pth")])
    with pytest.raises(ModelFileError) as err:
        eval_cli.build_scorers(args)
    assert "weights-inception-2015-12-05-6726825d.pth" in str(err.value) and "--no-fid" in err.value.fix


def test_two_servers_share_the_prompts_and_one_dying_loses_nothing(setup, monkeypatch):
    """A benchmark folder laid out like Unsplash-50 (2 portraits, prompts.txt with 2 prompts) x 3 seeds = 12 prompts
    over two real servers; the second is killed (SIGKILL) right after it saved its first image. Its queued prompts
    go to the first server: every image exists once, and the first server ran exactly the prompts whose images name
    it (its /history), so nothing was generated twice there. results.md has the Unsplash-50 table layouts."""
    import os
    import re
    import shutil
    import signal
    import time

    from comfyui_facesnap.devkit.comfy_server import comfy_servers, http_json

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tmp = setup["tmp"]
    bases = [setup["base"], make_base(tmp / "second_base")]
    out, benchmark = tmp / "two_servers", tmp / "unsplash_like"
    benchmark.mkdir()
    for person in ("ann", "ben"):
        shutil.copy(setup["people"] / person / "photo.png", benchmark / f"{person}.png")
    (benchmark / "prompts.txt").write_text("# two prompts\na portrait photo\n\na watercolor painting\n")
    with comfy_servers(COMFY, bases, [tmp / "a.log", tmp / "b.log"], say=lambda _: None) as (first, second):
        command = [sys.executable, str(SCRIPT), "--server", first.url, "--server", second.url, "--benchmark",
                   str(benchmark), "--seeds", "1", "2", "3", "--workflow", str(setup["workflow"]),
                   "--face-backend", "dlib", "--judge", "dlib", "--no-clip", "--no-fid", "--no-3dmm", "--device", "cpu",
                   "--queue-depth", "2",
                   "--dead-after", "2", "--out", str(out), "--no-progress"]
        run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 150
        while not any(json.loads(p.read_text())["server"] == second.url for p in out.glob("images/*/*/*.json")):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
            time.sleep(0.05)
        os.kill(second.pid, signal.SIGKILL)
        output = run.communicate(timeout=150)[0]
        assert run.returncode == 0, output[-3000:]
        history = http_json(f"{first.url}/history")
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("images/*/*/*.json"))]
    jobs = {(s["person"], s["prompt_index"], s["seed"]) for s in sidecars}
    assert len(sidecars) == len(jobs) == 12 and all((out / s["image"]).is_file() for s in sidecars)
    on_first = [s for s in sidecars if s["server"] == first.url]
    assert 1 <= len(sidecars) - len(on_first) < 12
    assert sorted(history) == sorted(s["prompt_id"] for s in on_first)  # each of its prompts saved, none twice
    handed = re.search(r"stopped answering for 2 s .*its (\d+) unfinished prompt\(s\) go to the other servers", output)
    assert handed and int(handed.group(1)) >= 1, output[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["tiny_workflow"]["faces_found"] == 12 and results["settings"]["protocol"] == "unsplash50"
    assert {s["prompt"] for s in sidecars} == {"a portrait photo", "a watercolor painting"}
    table = (out / "results.md").read_text()
    assert f"| Method | FaceSim{UP} | CLIP-T{UP} | CLIP-I{UP} |" in table  # PuLID's Table 1, Unsplash-50 columns
    assert f"| Method | Sim{UP} | Expr{DOWN} | Pose{DOWN} | CLIP-T{UP} |" in table  # Diff-PC's Table 3
