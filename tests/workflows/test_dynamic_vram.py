"""Dynamic VRAM (NVIDIA's default on current ComfyUI), simulated on the CPU through every shipped sampling workflow.

Each workflow runs on tiny weights (tiny_workflows.py) with its MODEL replaced by one that reports dynamic VRAM and
whose non-dynamic delegate cannot be made (comfy_test_nodes/dynamic_vram.py), as a GGUF or other custom loader's
MODEL under dynamic VRAM. On a host that has dynamic VRAM, any hook on a cond makes the sampler ask for that delegate,
and sampling fails. The conftest fixture ``conds_without_hooks`` checks the conds of this and every other sampling
test the same way.
"""

from __future__ import annotations

import pytest
import torch

from tiny_workflows import register_tiny_files, sampling_workflows, tiny_prompt

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, default_face_model_path, tmp_path_factory):
    import nodes

    from comfyui_facesnap.devkit.ui_workflow import object_info
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    with model_folders_restored():
        register_tiny_files(comfy_host, insightface_images, default_face_model_path, tmp_path_factory.mktemp("tiny"))
        yield comfy_host, object_info(nodes.NODE_CLASS_MAPPINGS)


def with_dynamic_model(prompt: dict) -> dict:
    """Every MODEL link out of the tiny checkpoint goes through FaceSnapTestDynamicModel instead."""
    checkpoint = next(k for k, n in prompt.items() if n["class_type"] == "FaceSnapTestTinyCheckpoint")
    prompt["dynamic"] = {"class_type": "FaceSnapTestDynamicModel", "inputs": {"model": [checkpoint, 0]}}
    for node_id, node in prompt.items():
        for name, value in node["inputs"].items():
            if value == [checkpoint, 0] and node_id != "dynamic":
                node["inputs"][name] = ["dynamic", 0]
    return prompt


def sampled(executor, prompt) -> torch.Tensor:
    from comfyui_facesnap.devkit.comfy_host import cached_output

    sampler = next(k for k, n in prompt.items() if n["class_type"] == "KSampler")
    return cached_output(executor, sampler)["samples"].clone()


def test_every_shipped_sampling_workflow_is_covered():
    assert len(sampling_workflows()) >= 10, sampling_workflows()


@pytest.mark.parametrize("name", sampling_workflows())
def test_shipped_workflow_samples_a_dynamic_vram_model_without_hooks(host, name, conds_without_hooks):
    comfy_host, info = host
    prompt = with_dynamic_model(tiny_prompt(name, info))
    session = comfy_host.session()
    first = sampled(session.run(prompt), prompt)
    assert conds_without_hooks, "the sampler got conds"
    again = sampled(comfy_host.session().run(prompt), prompt)
    assert torch.equal(first, again), f"{name}: max difference {float((first - again).abs().max())}"


@pytest.mark.hooked
def test_the_simulated_model_fails_as_dynamic_vram_does_when_a_cond_has_hooks(host):
    """The check has teeth: one hook on the positive makes a dynamic-VRAM host ask for the delegate, which fails."""
    import comfy.sampler_helpers

    from comfy_test_nodes.dynamic_vram import DELEGATE_ERROR

    if not hasattr(comfy.sampler_helpers, "cond_has_hooks"):
        pytest.skip("this ComfyUI has no dynamic VRAM: it never asks for a non-dynamic delegate")
    comfy_host, info = host
    prompt = with_dynamic_model(tiny_prompt("instantid_portrait", info))
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")
    prompt["hooked"] = {"class_type": "FaceSnapTestHookedConditioning",
                        "inputs": {"conditioning": sampler["inputs"]["positive"]}}
    sampler["inputs"]["positive"] = ["hooked", 0]
    executor = comfy_host.session().run(prompt, expect_success=False)
    assert not executor.success
    assert DELEGATE_ERROR in comfy_host.error_message(executor)
