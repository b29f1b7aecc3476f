"""The evaluation's workflow modes on the shipped workflows (patching by node type and title, the plain-SDXL baseline,
the InstantID mode, each workflow's pose control, the CLI's choice of workflow per mode) checked by ComfyUI's own
validator, and the FaceSnap Face Similarity node through the executor."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from comfyui_facesnap.evaluation.workflow_modes import MODES, Job, PoseControl, output_node, prompt_node, seed_nodes
from comfyui_facesnap.models.errors import InvalidInputError

pytestmark = pytest.mark.comfy

WORKFLOWS = pathlib.Path(__file__).resolve().parents[2] / "workflows"
GENERATION = ["facesnap_portrait", "facesnap_pose_from_drive", "facesnap_manual_pose", "facesnap_diffpc_render",
              "facesnap_multi_reference"]
INSTANTID = ["instantid_portrait", "instantid_pose_from_drive", "instantid_manual_pose"]
MODE_WORKFLOWS = [("workflow", name) for name in GENERATION] + [("instantid", name) for name in INSTANTID]


@pytest.fixture(scope="module")
def host_info(comfy_host, tmp_path_factory):
    import nodes

    from comfyui_facesnap.devkit.ui_workflow import object_info
    from comfyui_facesnap.devkit.workflow_files import populate_inputs, stand_in_models

    populate_inputs(comfy_host.input_dir)
    with stand_in_models(tmp_path_factory.mktemp("models")):
        yield comfy_host, object_info(nodes.NODE_CLASS_MAPPINGS)


def api(name: str, info: dict) -> dict:
    from comfyui_facesnap.devkit.workflow_format import ui_to_api

    return ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), info)


def job(mode="workflow", drive="drive.jpg") -> Job:
    return Job(mode, "ann", 0, "a knight in shining armour", 4242, ("reference.png", "t1.jpg"), drive)


def assert_valid(host, prompt):
    valid = host.validate(prompt)
    assert valid[0] and not valid[3], (valid[1], valid[3])


@pytest.mark.parametrize("mode_name,name", MODE_WORKFLOWS)
def test_every_shipped_generation_workflow_patches_and_validates(host_info, mode_name, name):
    host, info = host_info
    mode = MODES[mode_name]
    template = mode.template(api(name, info))
    prompt = mode.patch(template, job(mode_name), "facesnap_eval/x")
    assert_valid(host, prompt)
    assert prompt[prompt_node(prompt)]["inputs"]["text"] == "a knight in shining armour"
    assert all(prompt[i]["inputs"]["seed"] == 4242 for i in seed_nodes(prompt))
    assert prompt[output_node(prompt)]["inputs"]["filename_prefix"] == "facesnap_eval/x"
    loads = {node["_meta"]["title"]: node["inputs"]["image"] for node in prompt.values()
             if node["class_type"] == "LoadImage"}
    assert loads.get("Reference photo", loads.get("Reference photo 1")) == "reference.png"
    if "Reference photo 2" in loads:  # a person's photos are cycled over the reference slots
        assert (loads["Reference photo 2"], loads["Reference photo 3"]) == ("t1.jpg", "reference.png")
    if "Drive photo (pose, expression)" in loads:
        assert loads["Drive photo (pose, expression)"] == "drive.jpg"
    assert template == mode.template(api(name, info)), "patching must not change the template"


def test_instantid_mode_takes_instantid_workflows_and_reads_their_keypoint_control(host_info):
    _, info = host_info
    mode = MODES["instantid"]
    control = {name: mode.pose_control(mode.template(api(name, info))) for name in INSTANTID}
    assert control["instantid_portrait"].kind == "reference"  # keypoints drawn from the reference's face crop
    assert control["instantid_pose_from_drive"].kind == "drive"
    assert control["instantid_manual_pose"] == PoseControl("manual", (30.0, -5.0, 0.0))
    assert mode.needs_drive(mode.template(api("instantid_pose_from_drive", info)))
    assert not mode.needs_drive(mode.template(api("instantid_portrait", info)))
    assert mode.default_workflow == "instantid_portrait.json" and (WORKFLOWS / mode.default_workflow).is_file()
    with pytest.raises(InvalidInputError, match="applies InstantID") as err:
        mode.template(api("facesnap_portrait", info))
    assert "workflow mode" in err.value.fix
    # the workflow mode reads the same control from an InstantID workflow
    as_given = MODES["workflow"]
    assert as_given.pose_control(as_given.template(api("instantid_portrait", info))).kind == "reference"


class ObjectInfoClient:
    """What the CLI asks of a server while it builds the modes' templates."""

    def __init__(self, info: dict):
        self.info = info

    def object_info(self) -> dict:
        return self.info


def test_cli_gives_each_mode_its_workflow(host_info, tmp_path):
    from evaluation_fixtures import load_eval_cli

    host, info = host_info
    eval_cli = load_eval_cli()
    common = ["--server", "http://127.0.0.1:8188", "--references", str(tmp_path), "--prompt", "x", "--out",
              str(tmp_path / "out")]
    args = eval_cli.parse_args([*common, "--mode", "instantid", "--mode", "sdxl", "--mode",
                                f"sdxl={WORKFLOWS / 'instantid_portrait.json'}", "--mode",
                                f"instantid={WORKFLOWS / 'instantid_manual_pose.json'}", "--mode", "workflow"])
    runs = eval_cli.mode_runs(args, ObjectInfoClient(info))
    assert [(run.label, run.workflow_name) for run in runs] == [
        ("instantid", "instantid_portrait.json"), ("sdxl", "facesnap_portrait.json"),
        ("sdxl_instantid_portrait", "instantid_portrait.json"),
        ("instantid_instantid_manual_pose", "instantid_manual_pose.json"),
        ("facesnap_portrait", "facesnap_portrait.json")]
    for run in runs:
        assert_valid(host, run.mode.patch(run.template, job(run.label, drive=None), f"facesnap_eval/{run.label}"))
    sampler = lambda template: template[seed_nodes(template)[0]]["inputs"]  # noqa: E731
    assert sampler(runs[2].template)["cfg"] == sampler(runs[0].template)["cfg"] == 4.5  # InstantID's own settings
    assert runs[2].template[sampler(runs[2].template)["latent_image"][0]]["inputs"]["width"] == 1016
    drive_args = eval_cli.parse_args([*common, "--mode", f"instantid={WORKFLOWS / 'instantid_pose_from_drive.json'}"])
    with pytest.raises(InvalidInputError, match="drive photo"):
        eval_cli.mode_runs(drive_args, ObjectInfoClient(info))


def test_each_workflow_says_what_pose_it_asks_for(host_info):
    _, info = host_info
    control = {name: MODES["workflow"].pose_control(MODES["workflow"].template(api(name, info))) for name in GENERATION}
    assert control["facesnap_portrait"].kind == "reference"
    assert control["facesnap_multi_reference"].kind == "reference"
    assert control["facesnap_pose_from_drive"].kind == "drive"
    manual = control["facesnap_manual_pose"]
    assert manual.kind == "manual" and manual.angles == (30.0, -5.0, 0.0)
    assert MODES["workflow"].needs_drive(MODES["workflow"].template(api("facesnap_pose_from_drive", info)))
    with pytest.raises(InvalidInputError, match="drive photo"):
        MODES["workflow"].patch(MODES["workflow"].template(api("facesnap_pose_from_drive", info)), job(drive=None), "x")


@pytest.mark.parametrize("name", GENERATION + INSTANTID)
def test_plain_sdxl_baseline_keeps_only_the_base_graph(host_info, name):
    host, info = host_info
    baseline = MODES["sdxl"]
    template = baseline.template(api(name, info))
    assert sorted(n["class_type"] for n in template.values()) == sorted(
        ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
         "SaveImage"])
    sampler = template[seed_nodes(template)[0]]["inputs"]
    assert template[sampler["model"][0]]["class_type"] == "CheckpointLoaderSimple"
    assert template[sampler["positive"][0]]["_meta"]["title"] == "Prompt"
    assert template[sampler["negative"][0]]["_meta"]["title"] == "Negative prompt"
    assert baseline.pose_control(template).kind is None and not baseline.needs_drive(template)
    assert_valid(host, baseline.patch(template, job(mode="sdxl", drive=None), "facesnap_eval/sdxl"))


def test_a_workflow_that_generates_nothing_is_refused(host_info):
    _, info = host_info
    with pytest.raises(InvalidInputError, match="no sampler"):
        MODES["workflow"].template(api("facesnap_landmarks", info))
    prompt = api("facesnap_portrait", info)
    prompt["99"] = dict(prompt[output_node(prompt)])
    with pytest.raises(InvalidInputError, match="Save Image"):
        MODES["workflow"].template(prompt)


# ---- FaceSnap Face Similarity --------------------------------------------------------------------------------------
def similarity_graph(reference_index: int, report_only: bool = False) -> dict:
    crop = lambda image, selection, index: {"class_type": "FaceSnapFaceCrop", "inputs": {  # noqa: E731
        "analyzer": ["2", 0], "image": image, "selection": selection, "index": index, "size": 160, "margin": 0.5,
        "if_no_face": "error"}}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "t1.jpg"}},
        "2": {"class_type": "FaceSnapFaceAnalyzerLoader",
              "inputs": {"backend": "dlib", "provider": "CPU", "dlib_detector": "hog"}},
        "3": crop(["1", 0], "left_to_right", reference_index),  # the reference person
        "4": crop(["1", 0], "all", 0),  # six "generations": every face of t1.jpg, left to right
        "5": {"class_type": "FaceSnapFaceSimilarity",
              "inputs": {"analyzer": ["2", 0], "images": ["4", 0], "reference_faces": ["3", 1]}},
        **({} if report_only else {"6": {"class_type": "SaveImage",
                                         "inputs": {"images": ["5", 2], "filename_prefix": "ranked"}}}),
    }


def test_face_similarity_ranks_the_reference_person_first(host_info):
    host, _ = host_info
    executor = host.run(similarity_graph(reference_index=3))
    report = executor.history_result["outputs"]["5"]["text"][0]
    lines = report.splitlines()
    assert lines[0].startswith("FaceSim-dlib: mean cosine of the dlib 128-D face descriptor to 1 reference")
    assert lines[1].startswith("1. image 3: ") and len(lines) == 7
    assert len(executor.history_result["outputs"]["6"]["images"]) == 6


def test_face_similarity_scores_and_sorted_images(host_info):
    import torch
    from PIL import Image

    import folder_paths

    from comfyui_facesnap.nodes.evaluation_nodes import FaceSnapFaceSimilarity

    host, _ = host_info
    node_classes = host.node_classes
    analyzer = node_classes["FaceSnapFaceAnalyzerLoader"].execute("dlib", "CPU", "hog").result[0]

    photo = torch.from_numpy(np.asarray(Image.open(folder_paths.get_annotated_filepath("t1.jpg")).convert("RGB"),
                                        np.float32) / 255.0)[None]
    crop = node_classes["FaceSnapFaceCrop"].execute
    reference = crop(analyzer, photo, "left_to_right", 1, 160, 0.5, "error").result[1]
    images = crop(analyzer, photo, "all", 0, 160, 0.5, "error").result[0]
    blank = torch.zeros(1, 160, 160, 3)
    out = FaceSnapFaceSimilarity.execute(analyzer, torch.cat([blank, images]), reference)
    scores, report, ranked = out.result
    assert len(scores) == 7 and scores[0] == -1.0 and max(scores) == scores[2]
    assert "image 0: no face found" in report.splitlines()[-1]
    assert torch.equal(ranked[0], images[1]) and torch.equal(ranked[-1], blank[0])


def test_face_similarity_refuses_faceless_references_and_empty_batches(host_info):
    import torch

    from comfyui_facesnap.nodes.errors import FaceSnapNodeError
    from comfyui_facesnap.nodes.evaluation_nodes import FaceSnapFaceSimilarity

    host, _ = host_info

    dlib = host.node_classes["FaceSnapFaceAnalyzerLoader"].execute("dlib", "CPU", "hog").result[0]
    photo = torch.rand(1, 200, 200, 3)
    reference = host.node_classes["FaceSnapFaceCrop"].execute(dlib, photo, "largest", 0, 64, 0.5, "skip").result[1]
    with pytest.raises(FaceSnapNodeError) as err:
        FaceSnapFaceSimilarity.execute(dlib, photo, reference)  # the reference crop found no face
    assert "[FaceSnapFaceSimilarity]" in str(err.value) and "no face" in str(err.value)
    with pytest.raises(FaceSnapNodeError, match="empty"):
        FaceSnapFaceSimilarity.execute(dlib, photo[:0], reference)


@pytest.mark.slow
def test_face_similarity_offers_the_installed_judges_and_scores_with_the_one_picked(host_info, tmp_path):
    """The judge dropdown lists what is installed (antelopev2's glintr100, a judge's published file); the default
    keeps the analyzer's own features; FaceNet scores with its network; a judge without weights names its file."""
    import torch
    from PIL import Image

    import folder_paths

    from comfyui_facesnap.devkit.onnx_antelopev2 import make_antelopev2
    from comfyui_facesnap.devkit.random_judge_weights import write_published_judge
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored
    from comfyui_facesnap.models.face_analysis.recognisers import load_judge
    from comfyui_facesnap.nodes.errors import FaceSnapNodeError
    from comfyui_facesnap.nodes.evaluation_nodes import FaceSnapFaceSimilarity

    host, _ = host_info
    judge_input = lambda: next(  # noqa: E731
        i for i in FaceSnapFaceSimilarity.define_schema().inputs if i.id == "judge")
    analyzer = host.node_classes["FaceSnapFaceAnalyzerLoader"].execute("dlib", "CPU", "hog").result[0]
    photo = torch.from_numpy(np.asarray(Image.open(folder_paths.get_annotated_filepath("t1.jpg")).convert("RGB"),
                                        np.float32) / 255.0)[None]
    crop = host.node_classes["FaceSnapFaceCrop"].execute
    reference = crop(analyzer, photo, "left_to_right", 1, 160, 0.5, "error").result[1]
    images = crop(analyzer, photo, "all", 0, 160, 0.5, "error").result[0][:3]
    with model_folders_restored():
        folder_paths.add_model_folder_path("face_recognition", str(tmp_path / "face_recognition"))
        folder_paths.add_model_folder_path("insightface", str(tmp_path / "insightface"))
        assert judge_input().options == ["analyzer", "dlib"] and judge_input().default == "analyzer"
        facenet_file = write_published_judge("FaceNet", tmp_path / "face_recognition")
        make_antelopev2(tmp_path / "insightface")
        folder_paths.filename_list_cache.clear()
        assert judge_input().options == ["analyzer", "ArcFace", "FaceNet", "dlib"]

        default = FaceSnapFaceSimilarity.execute(analyzer, images, reference).result
        dlib_scores = FaceSnapFaceSimilarity.execute(analyzer, images, reference, "dlib").result[0]
        assert np.allclose(dlib_scores, default[0], atol=1e-9)
        scores, report, _ = FaceSnapFaceSimilarity.execute(analyzer, images, reference, "FaceNet").result
        assert report.startswith("FaceSim-FaceNet: mean cosine of the FaceNet (Inception-ResNet-v1, VGGFace2) "
                                 "embedding to 1 reference face(s)")
        judge = load_judge("FaceNet", path=str(facenet_file))
        faces = [analyzer.detect(img)[0] for img in to_uint8(images)]
        expected = judge.features(list(zip(to_uint8(images), faces, strict=True))) @ judge.features(
            [(reference.images[0], reference.records[0])])[0]
        assert np.allclose(scores, expected, atol=1e-6) and scores != default[0]
        arcface = FaceSnapFaceSimilarity.execute(analyzer, images, reference, "ArcFace").result[1]
        assert arcface.startswith("FaceSim-Arc: mean cosine of the ArcFace glintr100 embedding")
        with pytest.raises(FaceSnapNodeError) as err:
            FaceSnapFaceSimilarity.execute(analyzer, images, reference, "AdaFace")
        assert "[FaceSnapFaceSimilarity] the AdaFace judge is not installed" in str(err.value)
        message = str(err.value)
        assert "adaface_ir101_webface12m.ckpt" in message and str(tmp_path / "face_recognition") in message


def to_uint8(images) -> list[np.ndarray]:
    return [np.clip(np.round(image.numpy() * 255.0), 0, 255).astype(np.uint8) for image in images]
