"""The identity methods are registered in one place and each glue module implements the one interface."""

from __future__ import annotations

import inspect

import pytest

from comfyui_facesnap.comfy_glue import identity_methods
from comfyui_facesnap.comfy_glue.identity_methods import METHODS, interface_problems

pytestmark = pytest.mark.comfy


def test_the_registry_lists_every_method_with_distinct_encoders():
    assert {"facesnap", "instantid", "pulid", "pulid_v1_1", "ecomid"} <= set(METHODS)
    encoders = [method.encoder for method in METHODS.values()]
    assert len(encoders) == len(set(encoders))


def test_pulid_v1_and_v1_1_are_two_encoders_of_one_glue_module():
    v1, v1_1 = METHODS["pulid"], METHODS["pulid_v1_1"]
    assert v1.glue() is v1_1.glue() and v1.glue().__name__.endswith("methods.pulid")
    assert (v1.encoder, v1_1.encoder, METHODS["ecomid"].encoder) == ("pulid-v1-idencoder", "pulid-v1.1-idformer",
                                                                     "ecomid-resampler+pulid-v1")
    assert v1.apply_nodes == v1_1.apply_nodes == ("FaceSnapApplyPuLID", "FaceSnapApplyPuLIDAdvanced")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_registered_method_implements_the_interface(name):
    glue = METHODS[name].glue()
    assert interface_problems(glue) == []
    for function in identity_methods.INTERFACE:
        params = list(inspect.signature(getattr(glue, function)).parameters.values())
        assert all(p.kind == p.KEYWORD_ONLY for p in params[1 + (function == "apply"):]), \
            f"{name}.{function}: every argument after the bundle (and identity) is keyword-only"


def test_the_interface_check_has_teeth():
    class Partial:
        @staticmethod
        def encode(bundle, faces):  # faces positional, no apply, no weights_key
            return None

    problems = interface_problems(Partial)
    assert "no apply()" in problems and "no weights_key()" in problems
    assert any(p.startswith("encode() takes 2 positional") for p in problems)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_methods_nodes_are_registered(comfy_host, name):
    method = METHODS[name]
    for node_id in (*method.encode_nodes, *method.apply_nodes):
        assert node_id in comfy_host.node_classes, f"{name}: node {node_id} is not registered"
