"""The evaluation's metrics on CPU: tiny open_clip scores, FID against the closed form, FID weights loading, FaceSim
on real faces (dlib descriptor), 3DMM pose/expression/shape errors on a toy model, the server client's time and VRAM
figures, sharing prompts over servers (one dying), resuming, and the table layouts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from comfyui_facesnap.evaluation.clip_scores import ClipScorer, clip_score
from comfyui_facesnap.evaluation.face_geometry import expression_error, fit_faces, pose_error, shape_error
from comfyui_facesnap.evaluation.face_similarity import analyzer_judge, format_report, identity_feature, score_images
from comfyui_facesnap.evaluation.fid import INCEPTION_FILE, FidScore, load_inception
from comfyui_facesnap.evaluation.report import DOWN, UP
from comfyui_facesnap.models.errors import InvalidInputError, ModelFileError
from comfyui_facesnap.models.face_analysis.align import crop_square, square_box
from comfyui_facesnap.models.face_analysis.recognisers import JUDGES
from comfyui_facesnap.models.face_analysis.record import FaceRecord
from evaluation_fixtures import ScriptedServer, write_random_inception, write_tiny_clip


# ---- CLIP --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return ClipScorer.load(f"local-dir:{write_tiny_clip(tmp_path_factory.mktemp('clip') / 'tiny')}")


def test_tiny_clip_scores_images_and_prompts(tiny_clip):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (80, 96, 3), dtype=np.uint8) for _ in range(2))
    images = tiny_clip.image_features([a, a, b])
    assert images.shape == (3, 32) and torch.allclose(images.norm(dim=-1), torch.ones(3))
    same, other = clip_score(images[:1], images[1:2]), clip_score(images[:1], images[2:3])
    assert same[0] == pytest.approx(100.0, abs=1e-3) and other[0] < same[0]
    texts = tiny_clip.text_features(["a portrait photo", "a portrait photo", "a watercolor"])
    t_scores = clip_score(images, texts)
    assert t_scores.shape == (3,) and np.all(np.abs(t_scores) <= 100.0)
    assert torch.allclose(texts[0], texts[1]) and not torch.allclose(texts[0], texts[2])


def test_clip_needs_a_local_file(tmp_path):
    with pytest.raises(ModelFileError) as err:
        ClipScorer.load("ViT-H-14", None)  # a bare architecture would mean a download: refused
    assert "--clip-checkpoint" in err.value.fix and "nothing is downloaded" in err.value.fix
    with pytest.raises(ModelFileError) as err:
        ClipScorer.load(f"local-dir:{tmp_path}")
    assert "open_clip_config.json" in str(err.value)


# ---- FID ---------------------------------------------------------------------------------------------------------
class Features(torch.nn.Module):
    """An 'extractor' whose input already is the feature vector, so FID sees exactly the sampled Gaussians."""

    num_features = 3

    def forward(self, x):
        return x.double().flatten(1)


def closed_form_fid(mu1, sigma1, mu2, sigma2) -> float:
    from scipy.linalg import sqrtm

    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * sqrtm(sigma1 @ sigma2).real))


def test_fid_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.5])
    a1, a2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    sigma1, sigma2 = a1 @ a1.T + 0.1 * np.eye(3), a2 @ a2.T + 0.1 * np.eye(3)
    real = rng.multivariate_normal(mu1, sigma1, 20000)
    fake = rng.multivariate_normal(mu2, sigma2, 20000)
    fid = FidScore(Features())
    fid.add(torch.from_numpy(real), real=True)
    fid.add(torch.from_numpy(fake), real=False)
    value = fid.compute()
    # exact on the samples' own statistics, close to the population's
    exact = closed_form_fid(real.mean(0), np.cov(real.T), fake.mean(0), np.cov(fake.T))
    assert value == pytest.approx(exact, rel=1e-6)
    assert value == pytest.approx(closed_form_fid(mu1, sigma1, mu2, sigma2), rel=0.03)
    fid.reset_generated()  # keeps the real set: the same distribution again gives about 0
    fid.add(torch.from_numpy(rng.multivariate_normal(mu1, sigma1, 20000)), real=False)
    assert fid.compute() < 0.01 * value


def test_fid_inception_weights_are_local_and_plain(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_inception(tmp_path / "missing.pth")
    assert INCEPTION_FILE in str(err.value) and "--no-fid" in err.value.fix and "nothing is downloaded" in err.value.fix

    class Exploit:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path(%r).write_text('ran')" % str(tmp_path / "pwned"),))

    hostile = tmp_path / "hostile.pth"
    torch.save({"weights": Exploit()}, hostile)
    with pytest.raises(ModelFileError):
        load_inception(hostile)
    assert not (tmp_path / "pwned").exists()

    extractor = load_inception(write_random_inception(tmp_path / "inception.pth", 64), features=64)
    images = torch.randint(0, 255, (2, 3, 48, 64), dtype=torch.uint8)
    assert extractor(images).shape == (2, 64)


# ---- FaceSim on real faces ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dlib_t1(insightface_images):
    from comfyui_facesnap.models.face_analysis import load_analyzer

    analyzer = load_analyzer("dlib")
    photo = np.ascontiguousarray(cv2.imread(str(insightface_images / "t1.jpg"))[..., ::-1])
    faces = sorted(analyzer.detect(photo), key=lambda r: r.center_x)
    return analyzer, photo, faces


def test_facesim_dlib_same_face_scores_higher_than_other_faces(dlib_t1):
    analyzer, photo, faces = dlib_t1
    reference = crop_square(photo, square_box(faces[0].bbox, 0.5), 160)
    references = [identity_feature(analyzer.detect(reference)[0])]
    # the same person cut differently (more margin, shifted, other size) vs the five other people of t1.jpg
    box = square_box(faces[0].bbox, 0.9) + np.array([12, -8, 12, -8], np.float32)
    candidates = [crop_square(photo, box, 224)] + [crop_square(photo, square_box(f.bbox, 0.5), 160) for f in faces[1:]]
    results = score_images(analyzer, candidates, references)
    scores = [r.score for r in results]
    assert all(s is not None for s in scores)
    assert scores[0] > max(scores[1:]), scores
    assert analyzer_judge("dlib").metric == "FaceSim-dlib" and analyzer_judge("insightface").metric == "FaceSim-Arc"
    report = format_report(results, JUDGES["dlib"], 1)
    assert report.splitlines()[0].startswith("FaceSim-dlib") and report.splitlines()[1].startswith("1. image 0:")


def test_face_records_of_different_backends_never_mix(dlib_t1):
    from comfyui_facesnap.evaluation.face_similarity import reference_features
    from comfyui_facesnap.models.face_analysis.record import FaceSet

    _, photo, faces = dlib_t1
    with pytest.raises(InvalidInputError) as err:
        reference_features(FaceSet(records=faces[:1], images=[photo]), "insightface")
    assert "dlib" in str(err.value) and "same FaceSnap Face Analyzer Loader" in err.value.fix


# ---- 3DMM: pose, expression and shape errors ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from comfyui_facesnap.devkit.toy_3dmm import toy_morphable_model

    return toy_morphable_model(tmp_path_factory.mktemp("toy3dmm"))


def toy_faces(model, alpha, beta, angles):
    """FaceRecords whose landmarks are the toy model's projection (as a perfect detector would give)."""
    from comfyui_facesnap.models.face3d.face_fitting import euler_to_matrix, landmarks_image

    angles = torch.as_tensor(angles, dtype=torch.float32)
    rotation = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    n = len(angles)
    points = landmarks_image(model, alpha, beta, rotation, torch.full((n,), 120.0), torch.full((n, 2), 256.0))
    return [FaceRecord(bbox=np.array([150, 150, 360, 380], np.float32), score=1.0, kps5=np.zeros((5, 2), np.float32),
                       landmarks=p.numpy(), backend="dlib") for p in points]


def test_pose_error_is_zero_for_the_same_face_and_grows_when_turned(toy):
    g = torch.Generator().manual_seed(0)
    alpha = torch.randn(1, toy.num_id, generator=g).expand(3, -1)
    beta = torch.zeros(3, toy.num_exp)
    same, turned, tilted = fit_faces(toy, toy_faces(toy, alpha, beta, [[0, 0, 0], [30, 0, 0], [0, 0, 20]]))
    assert pose_error(same, same.angles) == 0.0
    assert pose_error(same, [0, 0, 0]) < 2.0
    assert pose_error(turned, same.angles) > 12.0  # 30 degrees of yaw: RMSE over three angles ~ 17
    assert pose_error(turned, [30, 0, 0]) < 3.0
    assert pose_error(tilted, [0, 0, 20]) < 2.0


def test_pose_error_on_a_real_photo_rotated_in_the_image(toy, dlib_t1):
    """Landmarks from dlib on a t1.jpg face and on the same crop rotated by 20 degrees: zero error against itself,
    about 20 degrees of roll (RMSE 11.5 over the three angles) against the original."""
    analyzer, photo, faces = dlib_t1
    crop = crop_square(photo, square_box(faces[2].bbox, 0.6), 256)
    rotated = cv2.warpAffine(crop, cv2.getRotationMatrix2D((128, 128), 20, 1.0), (256, 256))
    original, turned = fit_faces(toy, [analyzer.detect(crop)[0], analyzer.detect(rotated)[0]])
    assert pose_error(original, original.angles) == 0.0
    assert 8.0 < pose_error(turned, original.angles) < 15.0
    assert abs(abs(turned.angles[2] - original.angles[2]) - 20.0) < 5.0


def test_expression_and_shape_errors_track_what_changed(toy):
    g = torch.Generator().manual_seed(1)
    person, other = torch.randn(2, toy.num_id, generator=g)
    neutral, open_jaw = torch.zeros(toy.num_exp), torch.zeros(toy.num_exp)
    open_jaw[toy.exp_names.index("jawOpen")] = 0.8
    fits = fit_faces(toy, toy_faces(toy, torch.stack([person, person, other]),
                                    torch.stack([neutral, open_jaw, neutral]), [[10, 0, 0]] * 3))
    reference, talking, stranger = fits
    assert expression_error(talking, reference) > 3 * expression_error(stranger, reference)
    assert shape_error(stranger, reference) > 2 * shape_error(talking, reference)


# ---- the servers: time, VRAM, sharing out, dead servers, resuming (scripted HTTP answers) ------------------------
def test_server_time_and_sampled_peak_vram_and_failed_prompts():
    from comfyui_facesnap.evaluation.comfy_client import ServerError
    from comfyui_facesnap.evaluation.server_pool import ServerPool, Task

    server = ScriptedServer(polls=3, seconds=2.5, vram_gb=[1, 5, 3, 2])
    finished = []
    ServerPool([server.client("http://a:1")], poll_s=0.0).run([Task("t", {"9": {}}, "9")], finished.append)
    (done,) = finished
    assert done.result.seconds == 2.5 and done.result.timing == "server" and done.server == "http://a:1"
    assert done.result.peak_vram_bytes == 5 * 2**30 and done.result.device == "cuda:0 GPU"
    assert done.image == b"http://a:1 p1.png"
    failing = ScriptedServer(fail="out of memory")
    with pytest.raises(ServerError, match=r"\[KSampler\] out of memory"):
        ServerPool([failing.client("http://b:1")], poll_s=0.0).run([Task("t", {}, "9")], finished.append)


def test_prompts_are_shared_out_and_a_dead_servers_prompts_go_to_the_others():
    from comfyui_facesnap.evaluation.comfy_client import ServerError
    from comfyui_facesnap.evaluation.server_pool import ServerPool, Task

    slow = ScriptedServer(polls=4)
    fast = ScriptedServer(wait_for=lambda: len(slow.queued) == 3)  # both start with a full queue
    said, finished = [], []

    def on_finished(done):
        finished.append((done.task.key, done.server))
        if done.server == "http://slow:1":
            slow.down = True  # dies after its first image, with a full queue

    pool = ServerPool([fast.client("http://fast:1"), slow.client("http://slow:1")], depth=3, dead_after_s=0.0,
                      poll_s=0.001, say=said.append)
    tasks = [Task(f"t{i}", {"n": {"inputs": {"i": i}}}, "9") for i in range(12)]
    pool.run(tasks, on_finished)
    keys = [key for key, _ in finished]
    assert sorted(keys) == sorted(t.key for t in tasks) and len(keys) == len(set(keys))  # nothing lost or twice
    assert [server for _, server in finished].count("http://slow:1") == 1
    assert len(slow.queued) == 3 and len(fast.queued) == 11  # the slow server's 2 unfinished went to the fast one
    assert "slow:1 stopped answering" in said[0] and "its 2 unfinished prompt(s) go to the other servers" in said[0]
    assert "slow:1: 1 done, gone (2 handed on)" in pool.status() and "fast:1: 11 done" in pool.status()
    alone = ScriptedServer()
    alone.down = True
    with pytest.raises(ServerError, match="every ComfyUI server stopped answering; 2 image"):
        ServerPool([alone.client("http://x:1")], dead_after_s=0.0, poll_s=0.0).run(tasks[:2], on_finished)


def test_finished_images_are_not_generated_again(tmp_path):
    from comfyui_facesnap.evaluation.generation import ModeRun, generate
    from comfyui_facesnap.evaluation.workflow_modes import Job, WorkflowMode

    template = {"1": {"class_type": "KSampler", "inputs": {"seed": 0}, "_meta": {"title": "KSampler"}},
                "2": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}, "_meta": {"title": "Prompt"}},
                "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": ""}, "_meta": {"title": "Save Image"}}}
    run = ModeRun("wf", WorkflowMode(), template, "wf.json")
    jobs = [Job("wf", "ann", i, text, 1, ("ann.png",)) for i, text in enumerate(["first", "second"])]
    texts = lambda server: [prompt["2"]["inputs"]["text"] for prompt in server.queued]  # noqa: E731
    server = ScriptedServer()
    records = generate([server.client("http://a:1")], [run], jobs, tmp_path, progress=False, poll_s=0.0)
    assert texts(server) == ["first", "second"] and not any(r.resumed for r in records)
    assert [r.server for r in records] == ["http://a:1"] * 2 and records[0].seconds == 1.5
    again = ScriptedServer()
    records = generate([again.client("http://b:1")], [run], jobs, tmp_path, progress=False, poll_s=0.0)
    assert texts(again) == [] and all(r.resumed for r in records) and records[0].server == "http://a:1"
    changed = [Job("wf", "ann", 0, "another prompt", 1, ("ann.png",))]  # same file name, other prompt
    generate([again.client("http://b:1")], [run], changed, tmp_path, progress=False, poll_s=0.0)
    assert texts(again) == ["another prompt"]
    sidecar = json.loads((tmp_path / "images" / "wf" / "ann" / "p00_s1.json").read_text())
    assert sidecar["prompt"] == "another prompt" and sidecar["server"] == "http://b:1"


def test_markdown_table_follows_table_1_and_names_what_was_not_run():
    from comfyui_facesnap.evaluation.report import markdown_table

    row = {"CLIP-T": 32.61, "CLIP-face": 81.44, "FaceSim-Arc": 73.58, "FaceSim-FaceNet": 70.04, "CopyPaste-Arc": None,
           "CopyPaste-FaceNet": 3.21, "FID": 205.63, "seconds_per_image": 6.08, "peak_vram_gb": 18.14, "Pose": None,
           "Expr": None, "Shape": 0.21, "control": None, "faces_found": 9, "images": 10}
    table = markdown_table({"facesnap_portrait": row}, ["FaceSim-Arc", "FaceSim-FaceNet"], {"Pose": "--no-3dmm"}, {})
    lines = table.splitlines()
    assert lines[2] == (f"| Method | CLIP-T{UP} | CLIP-face{UP} | FaceSim-Arc{UP} | FaceSim-FaceNet{UP} | "
                        f"CopyPaste-FaceNet{DOWN} | FID{DOWN} | Time{DOWN} | VRAM{DOWN} |")
    assert lines[4] == "| facesnap_portrait | 32.6 | 81.4 | 73.6 | 70.0 | 3.2 | 205.6 | 6.1s | 18.1GB |"
    assert "| facesnap_portrait | none | n/a | n/a | 0.210 | 9/10 |" in lines
    assert "- Pose: not run: --no-3dmm" in lines and "ArcFace glintr100 embedding, mean over" in table
    assert "as FaceSnap's FaceSim (its Table 1)." in table and "Unsplash-50" not in table
    unsplash = markdown_table({"pulid": {**row, "FaceSim-Cur": 65.9, "CLIP-I": 84.0, "Expr": 0.138, "Pose": 5.6}},
                              ["FaceSim-Arc"], {}, {"protocol": "unsplash50"}).splitlines()
    assert "| pulid | 0.659 | 32.61 | 0.840 |" in unsplash and "| pulid | 73.6 | 0.138 | 5.60 | 32.6 |" in unsplash


def test_a_benchmark_folder_gives_one_person_per_portrait_and_its_prompt_list(tmp_path):
    from comfyui_facesnap.evaluation.benchmark_folder import read_benchmark

    for name in ("0001.jpg", "0002.png", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "prompts.txt").write_text("# PuLID-style prompts\nportrait, cinematic\n\n  a knight  \n")
    people, prompts = read_benchmark(tmp_path)
    assert people == {"0001": [tmp_path / "0001.jpg"], "0002": [tmp_path / "0002.png"]}
    assert prompts == ["portrait, cinematic", "a knight"]
    (tmp_path / "0001.png").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="name the same identity '0001'"):
        read_benchmark(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no portrait"):
        read_benchmark(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_benchmark(tmp_path / "missing")
