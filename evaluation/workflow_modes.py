"""What is generated for each evaluation row: a mode turns an API-format workflow into a template, then patches the
reference photos, drive photo, prompt and seed of every job into it, by node type and title.

Nodes are found the way the shipped workflows name them:

=================  ===============================================================================================
role               how it is found
=================  ===============================================================================================
reference photos   LoadImage nodes titled "Reference photo..." (in title order; a person's photos are cycled),
                   or the only LoadImage that is not a drive photo
drive photo        LoadImage titled "Drive photo..." (the job's drive photo; the workflow's pose control)
prompt             the node titled "Prompt" (its ``text`` input; ``text_g`` and ``text_l`` for CLIPTextEncodeSDXL)
seed               ``seed`` / ``noise_seed`` of every sampler node (class name containing "Sampler", RandomNoise)
output             the only SaveImage (or the SaveImage titled "Generation" when there are several)
=================  ===============================================================================================

A new mode is a subclass that overrides ``template`` (and ``pose_control`` if its control differs) plus one entry in
``MODES``; a mode with a ``default_workflow`` (a file in workflows/) generates with that one unless given another.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..comfy_glue.identity_methods import METHODS
from ..models.errors import InvalidInputError

PROMPT_TITLE = "Prompt"
PROMPT_INPUTS = ("text", "text_g", "text_l")
REFERENCE_TITLE = "Reference photo"
DRIVE_TITLE = "Drive photo"
OUTPUT_TITLE = "Generation"
SEED_INPUTS = ("seed", "noise_seed")
SAVE_TYPE = "SaveImage"
LOAD_TYPE = "LoadImage"
PREDICTOR_TYPE = "FaceSnapLandmarkPredictor"
DRAW_TYPES = ("FaceSnapDrawLandmarks", "FaceSnapDrawKeypoints")  # FaceSnap's landmark image, InstantID's keypoints
INSTANTID_APPLY_TYPES = METHODS["instantid"].apply_nodes


@dataclass(frozen=True)
class Job:
    mode: str
    person: str
    prompt_index: int
    prompt: str
    seed: int
    references: tuple[str, ...]  # image names in the server's input folder
    drive: str | None = None

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.person}/p{self.prompt_index:02d}_s{self.seed}"


@dataclass(frozen=True)
class PoseControl:
    """What the workflow asks the face to do: follow the reference photo's pose and expression, the drive photo's,
    fixed angles (the Landmark Predictor's manual pose), or nothing (no pose control)."""

    kind: str | None  # "reference" | "drive" | "manual" | None
    angles: tuple[float, float, float] | None = None  # yaw, pitch, roll for "manual"


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def title(node: dict) -> str:
    return node.get("_meta", {}).get("title", "") or ""


def _nodes(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def _titled(prompt: dict, ids: list[str], prefix: str) -> list[str]:
    return sorted((i for i in ids if title(prompt[i]).startswith(prefix)), key=lambda i: (title(prompt[i]), i))


def reference_nodes(prompt: dict) -> list[str]:
    loads = _nodes(prompt, LOAD_TYPE)
    titled = _titled(prompt, loads, REFERENCE_TITLE)
    if titled:
        return titled
    others = [i for i in loads if i not in drive_nodes(prompt)]
    return others if len(others) == 1 else []


def drive_nodes(prompt: dict) -> list[str]:
    return _titled(prompt, _nodes(prompt, LOAD_TYPE), DRIVE_TITLE)


def prompt_node(prompt: dict) -> str:
    ids = [i for i, node in prompt.items() if title(node) == PROMPT_TITLE
           and any(name in node["inputs"] for name in PROMPT_INPUTS)]
    if len(ids) != 1:
        raise InvalidInputError(f"the workflow has {len(ids)} text nodes titled {PROMPT_TITLE!r}",
                                f"title exactly one prompt node (e.g. CLIP Text Encode) {PROMPT_TITLE!r}")
    return ids[0]


def seed_nodes(prompt: dict) -> list[str]:
    return [i for i, node in prompt.items()
            if ("Sampler" in node["class_type"] or node["class_type"] == "RandomNoise")
            and any(name in node["inputs"] and not is_link(node["inputs"][name]) for name in SEED_INPUTS)]


def output_node(prompt: dict) -> str:
    saves = _nodes(prompt, SAVE_TYPE)
    if len(saves) > 1:
        saves = [i for i in saves if title(prompt[i]) == OUTPUT_TITLE]
    if len(saves) != 1:
        raise InvalidInputError(f"cannot tell which Save Image node holds the generation ({len(saves)} candidates)",
                                f"keep one Save Image node, or title the generation's {OUTPUT_TITLE!r}")
    return saves[0]


def check_generation_workflow(prompt: dict) -> None:
    if not seed_nodes(prompt):
        raise InvalidInputError("the workflow has no sampler with a seed widget: it generates nothing to evaluate",
                                "use an SDXL generation workflow (KSampler, SamplerCustom or RandomNoise)")
    prompt_node(prompt)
    output_node(prompt)


def upstream(prompt: dict, roots: list[str]) -> set[str]:
    """Ids of ``roots`` and every node they read from."""
    seen, stack = set(), list(roots)
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(v[0] for v in prompt[node_id]["inputs"].values() if is_link(v) and v[0] in prompt)
    return seen


def plain_source(prompt: dict, link: list, input_name: str) -> list:
    """Follow ``link`` upstream through nodes that take an input called ``input_name`` (model patches, control
    appliers) to the node that creates it: the checkpoint loader's MODEL or the text encoder's CONDITIONING."""
    seen = set()
    while True:
        node = prompt[link[0]]
        nxt = node["inputs"].get(input_name)
        if not is_link(nxt) or link[0] in seen:
            return list(link)
        seen.add(link[0])
        link = nxt


class WorkflowMode:
    """The workflow as given (a shipped FaceSnap workflow, or any SDXL workflow following the naming above)."""

    name = "workflow"
    description = "the workflow as given"
    default_workflow: str | None = None  # a file in workflows/ this mode uses unless given one

    def template(self, prompt: dict) -> dict:
        template = copy.deepcopy(prompt)
        check_generation_workflow(template)
        return template

    def pose_control(self, template: dict) -> PoseControl:
        predictors = _nodes(template, PREDICTOR_TYPE)
        if predictors:
            inputs = template[predictors[0]]["inputs"]
            if inputs.get("pose_source") == "manual":
                return PoseControl("manual", tuple(float(inputs.get(k, 0.0)) for k in ("yaw", "pitch", "roll")))
            return PoseControl("drive")
        if any(_nodes(template, draw) for draw in DRAW_TYPES):  # drawn from the reference's face crop
            return PoseControl("reference")
        return PoseControl(None)

    def needs_drive(self, template: dict) -> bool:
        return bool(drive_nodes(template))

    def patch(self, template: dict, job: Job, filename_prefix: str) -> dict:
        prompt = copy.deepcopy(template)
        references = reference_nodes(prompt)
        if references and not job.references:
            raise InvalidInputError(f"job {job.key} has no reference photo", "give every person at least one photo")
        for k, node_id in enumerate(references):
            prompt[node_id]["inputs"]["image"] = job.references[k % len(job.references)]
        drives = drive_nodes(prompt)
        if drives and job.drive is None:
            raise InvalidInputError(f"the {job.mode} workflow takes a drive photo (pose and expression)",
                                    "pass --drive PHOTO")
        for node_id in drives:
            prompt[node_id]["inputs"]["image"] = job.drive
        text = prompt[prompt_node(prompt)]["inputs"]
        for name in PROMPT_INPUTS:
            if name in text:
                text[name] = job.prompt
        for node_id in seed_nodes(prompt):
            for name in SEED_INPUTS:
                if name in prompt[node_id]["inputs"]:
                    prompt[node_id]["inputs"][name] = job.seed
        prompt[output_node(prompt)]["inputs"]["filename_prefix"] = filename_prefix
        return prompt


class SdxlBaselineMode(WorkflowMode):
    """Plain SDXL: the same workflow with every model patch and conditioning applier bypassed (the samplers read the
    checkpoint's MODEL and the text encoders' CONDITIONING directly) and the nodes left unused removed."""

    name = "sdxl"
    description = "plain SDXL baseline: the workflow's checkpoint, prompt and sampler, no identity"

    def template(self, prompt: dict) -> dict:
        template = super().template(prompt)
        for node_id in seed_nodes(template):
            inputs = template[node_id]["inputs"]
            for name in ("model", "positive", "negative"):
                if is_link(inputs.get(name)):
                    inputs[name] = plain_source(template, inputs[name], name)
        keep = upstream(template, [output_node(template)])
        return {node_id: node for node_id, node in template.items() if node_id in keep}


class InstantIDMode(WorkflowMode):
    """InstantID's public weights (IP-attention and IdentityNet): workflows/instantid_portrait.json unless given
    another workflow that applies InstantID (instantid_pose_from_drive.json, instantid_manual_pose.json). The pose
    control is IdentityNet's keypoints: drawn from the reference (portrait), or the Landmark Predictor's (drive photo,
    manual angles)."""

    name = "instantid"
    description = "InstantID (IdentityNet + IP-attention, public weights); default workflows/instantid_portrait.json"
    default_workflow = "instantid_portrait.json"

    def template(self, prompt: dict) -> dict:
        template = super().template(prompt)
        if not any(_nodes(template, apply) for apply in INSTANTID_APPLY_TYPES):
            raise InvalidInputError(
                "the instantid mode needs a workflow that applies InstantID, and this one has no FaceSnap Apply "
                "InstantID node",
                "give it an InstantID workflow (--mode instantid=workflows/instantid_pose_from_drive.json), or "
                "evaluate this workflow in the workflow mode")
        return template


MODES: dict[str, WorkflowMode] = {mode.name: mode for mode in (WorkflowMode(), SdxlBaselineMode(), InstantIDMode())}


def get_mode(name: str) -> WorkflowMode:
    if name not in MODES:
        raise InvalidInputError(f"unknown evaluation mode {name!r}", f"use one of {', '.join(MODES)}")
    return MODES[name]
