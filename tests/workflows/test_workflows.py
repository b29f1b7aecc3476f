"""Every workflow in workflows/ loads in the UI and passes ComfyUI's own prompt validation.

Checks, per workflow: the UI format (version 0.4, ids, link bookkeeping), a .jpg thumbnail, known node types only
(core + this pack), type-correct links, valid widget values, and finally ``execution.validate_prompt`` on the API
form. Model files are tiny stand-ins registered in a temporary model folder; photos come from the insightface wheel.
"""

import json
import math
import pathlib

import pytest

pytestmark = pytest.mark.comfy

WORKFLOWS = sorted((pathlib.Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
PACK_PREFIXES = ("FaceSnap", "ApplyFaceSnap", "DiffPC")


@pytest.fixture(scope="module")
def host_info(comfy_host, tmp_path_factory):
    """(host, object_info) with stand-in model files and the example photos in place."""
    import nodes

    from comfyui_facesnap.devkit.ui_workflow import object_info
    from comfyui_facesnap.devkit.workflow_files import populate_inputs, stand_in_models

    populate_inputs(comfy_host.input_dir)
    with stand_in_models(tmp_path_factory.mktemp("models")):
        yield comfy_host, object_info(nodes.NODE_CLASS_MAPPINGS)


def _load(path):
    return json.loads(path.read_text())


EXAMPLES = {"facesnap_portrait", "facesnap_pose_from_drive", "facesnap_manual_pose", "facesnap_diffpc_render",
            "facesnap_multi_reference", "facesnap_landmarks", "instantid_portrait", "instantid_pose_from_drive",
            "instantid_manual_pose", "instantid_openpose_expression", "openpose_face_manual_pose", "pulid_portrait",
            "pulid_pose_from_drive", "ecomid_portrait", "ecomid_pose_from_drive"}


def test_the_example_workflows_exist():
    assert EXAMPLES <= {path.stem for path in WORKFLOWS}, "run `make workflows`"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_ui_format_and_thumbnail(path):
    import cv2

    workflow = _load(path)
    assert workflow["version"] == 0.4
    for key in ("nodes", "links", "groups", "config", "extra", "last_node_id", "last_link_id"):
        assert key in workflow, f"{path.name} lacks {key}"
    node_ids = [node["id"] for node in workflow["nodes"]]
    assert len(set(node_ids)) == len(node_ids) and workflow["last_node_id"] >= max(node_ids)
    assert not workflow["links"] or workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    for node in workflow["nodes"]:
        for key in ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode"):
            assert key in node, f"{path.name}: node {node.get('id')} lacks {key}"
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.exists(), f"{thumbnail.name} is missing: run `make workflows`"
    image = cv2.imread(str(thumbnail))
    assert image is not None and min(image.shape[:2]) >= 128 and image.std() > 10, f"{thumbnail.name} is not a picture"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_node_types_and_links(path, host_info):
    from comfyui_facesnap.devkit.ui_workflow import FRONTEND_ONLY_TYPES, outputs, socket_inputs, types_match

    _, info = host_info
    workflow = _load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in nodes.values():
        assert node["type"] in info or node["type"] in FRONTEND_ONLY_TYPES, f"unknown node type {node['type']}"
        module = info.get(node["type"], {}).get("python_module", "nodes")
        assert module == "nodes" or module.startswith(("comfy_extras", "custom_nodes")), \
            f"{node['type']} is neither a core node nor this pack's"
        if node["type"] in info:
            sockets = {spec.name: spec for spec in socket_inputs(info[node["type"]])}
            for entry in node["inputs"]:
                assert entry["name"] in sockets or entry.get("widget"), f"{node['type']} has no input {entry['name']}"
            required = {name for name, spec in sockets.items() if not spec.optional}
            connected = {entry["name"] for entry in node["inputs"] if entry.get("link") is not None}
            assert required <= connected, f"node {node['id']} {node['type']}: unconnected {required - connected}"
    for link_id, source_id, source_slot, target_id, target_slot, link_type in workflow["links"]:
        source, target = nodes[source_id], nodes[target_id]
        out_name, out_type = outputs(info[source["type"]])[source_slot]
        entry = target["inputs"][target_slot]
        in_spec = {spec.name: spec for spec in socket_inputs(info[target["type"]])}.get(entry["name"])
        in_type = in_spec.type if in_spec else entry["type"]
        assert types_match(out_type, in_type), f"link {link_id}: {source['type']}.{out_name} {out_type} -> " \
                                               f"{target['type']}.{entry['name']} {in_type}"
        assert link_type == out_type and entry["link"] == link_id
        assert link_id in (source["outputs"][source_slot].get("links") or [])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_widget_values(path, host_info):
    from comfyui_facesnap.devkit.ui_workflow import FRONTEND_ONLY_TYPES, widget_slots

    _, info = host_info
    for node in _load(path)["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        slots = widget_slots(info[node["type"]])
        values = node["widgets_values"]
        where = f"node {node['id']} {node['type']}"
        assert len(values) == len(slots), f"{where}: {len(values)} widget values for {len(slots)} widgets"
        for slot, value in zip(slots, values, strict=True):
            if slot.kind == "control":
                assert value in CONTROL_VALUES, f"{where}: control value {value!r}"
            elif slot.kind == "upload":
                assert value == "image", f"{where}: upload slot {value!r}"
            else:
                _check_value(where, slot.input, value)


def _check_value(where, spec, value):
    name = f"{where}.{spec.name}"
    if spec.type == "COMBO":
        assert value in spec.choices, f"{name}: {value!r} is not among {spec.choices[:20]}"
    elif spec.type in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), name
        if spec.type == "INT":
            assert float(value).is_integer(), f"{name}: {value!r} is not an integer"
        assert spec.options.get("min", -math.inf) <= value <= spec.options.get("max", math.inf), f"{name}: {value}"
    elif spec.type == "BOOLEAN":
        assert isinstance(value, bool), name
    else:
        assert isinstance(value, str), name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_form_passes_comfyui_validation(path, host_info):
    from comfyui_facesnap.devkit.workflow_format import ui_to_api

    host, info = host_info
    prompt = ui_to_api(_load(path), info)
    assert any(node["class_type"].startswith(PACK_PREFIXES) for node in prompt.values()), "uses no FaceSnap node"
    valid, error, outputs, node_errors = host.validate(prompt)
    # validate_prompt drops outputs whose inputs are invalid and still reports success, so check node_errors too.
    assert valid and not node_errors, f"{path.name}: {error} {json.dumps(node_errors, indent=1)[:3000]}"
    output_nodes = {key for key, node in prompt.items() if info[node["class_type"]]["output_node"]}
    assert set(outputs) == output_nodes


def test_converter_matches_hand_written_api_prompt(host_info):
    """A two-node graph whose API form is known, including a seed with its control slot and an optional socket."""
    from comfyui_facesnap.devkit.workflow_format import ui_to_api

    _, info = host_info
    workflow = {
        "nodes": [
            {"id": 4, "type": "EmptyLatentImage", "mode": 0, "inputs": [], "widgets_values": [512, 768, 2],
             "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}]},
            {"id": 7, "type": "MarkdownNote", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hi"]},
            {"id": 9, "type": "KSampler", "mode": 0, "title": "Sampler",
             "inputs": [{"name": "latent_image", "type": "LATENT", "link": 1}],
             "widgets_values": [42, "fixed", 20, 8.0, "euler", "normal", 1.0], "outputs": []},
        ],
        "links": [[1, 4, 0, 9, 0, "LATENT"]],
    }
    assert ui_to_api(workflow, info) == {
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 2},
              "_meta": {"title": "Empty Latent Image"}},
        "9": {"class_type": "KSampler", "_meta": {"title": "Sampler"},
              "inputs": {"seed": 42, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal",
                         "denoise": 1.0, "latent_image": ["4", 0]}},
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_examples_use_no_deprecated_node(path, host_info):
    """None of the pack's own deprecated nodes. (Core nodes that a newer ComfyUI deprecates, such as ImageBatch in
    v0.8.0, stay: their replacements do not exist in the oldest supported host.)"""
    from comfyui_facesnap.nodes.deprecations import DEPRECATED_IDS

    _, info = host_info
    old = [node["type"] for node in _load(path)["nodes"]
           if node["type"] in DEPRECATED_IDS or (node["type"].startswith("FaceSnap") and
                                                 info.get(node["type"], {}).get("deprecated"))]
    assert not old, f"{path.name} shows artists deprecated nodes {old}: use their replacements (nodes/deprecations.py)"


@pytest.mark.parametrize("name", ["instantid_openpose_expression", "openpose_face_manual_pose"])
def test_openpose_workflows_feed_the_predictors_openpose_drawing_to_a_stock_controlnet_after_instantid(name, host_info):
    """The Landmark Predictor's OpenPose drawing goes into the stock Apply ControlNet (Advanced), chained on
    Apply InstantID's conditioning, and the KSampler samples that chain with InstantID's MODEL."""
    from comfyui_facesnap.devkit.workflow_format import ui_to_api

    _, info = host_info
    prompt = ui_to_api(_load(WORKFLOWS[0].with_name(f"{name}.json")), info)
    by_type = {}
    for key, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(key)
    (predictor,), (apply,), (openpose,), (sampler,), (loader,) = (by_type[t] for t in (
        "FaceSnapLandmarkPredictor", "FaceSnapApplyInstantID", "ControlNetApplyAdvanced", "KSampler",
        "ControlNetLoader"))
    assert prompt[predictor]["inputs"]["style"].startswith("openpose_face")
    assert ("drive" in prompt[predictor]["inputs"]) == (name == "instantid_openpose_expression")
    cn = prompt[openpose]["inputs"]
    assert cn["image"] == [predictor, 1] and cn["control_net"] == [loader, 0]
    assert cn["positive"] == [apply, 1] and cn["negative"] == [apply, 2]
    assert prompt[loader]["inputs"]["control_net_name"] == "xinsir-controlnet-openpose-sdxl-1.0.safetensors"
    sampled = prompt[sampler]["inputs"]
    assert sampled["model"] == [apply, 0]
    assert sampled["positive"] == [openpose, 0] and sampled["negative"] == [openpose, 1]
