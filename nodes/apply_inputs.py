"""Widgets and outputs the identity apply nodes share (InstantID, PuLID, EcomID), and their one call into a method's
``apply``."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_glue.identity_methods import ApplyRequest
from .image_tensors import check_control_image
from .socket_types import Identity


def window_inputs(method: str) -> list:
    return [io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                           tooltip=f"Sampling progress at which {method} starts acting."),
            io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                           tooltip=f"Sampling progress after which {method} stops acting.")]


def mask_input():
    return io.Mask.Input("mask", optional=True, tooltip="Optional: where the identity goes (1 = full effect), e.g. "
                                                        "one of two people. Over the whole image.")


def model_output():
    return io.Model.Output(display_name="model")


def apply_outputs() -> list:
    return [model_output(), io.Conditioning.Output(display_name="positive"),
            io.Conditioning.Output(display_name="negative")]


def keypoints_input():
    return io.Image.Input("keypoints_image", tooltip="InstantID's 5-keypoint image (FaceSnap Draw Keypoints) at the "
                                                     "output's aspect ratio: where the face goes and how it is turned.")


def control_apply_inputs(attention: str, bundle, encode_node: str) -> list:
    """The inputs of an apply node whose method puts ``attention`` on the MODEL and an IdentityNet on the
    conditioning (InstantID, EcomID): the model, positive and negative, ``bundle`` (the loader's socket input), the
    identity and the keypoint image."""
    return [io.Model.Input("model", tooltip=f"An SDXL model; a copy gets {attention}."),
            *conditioning_inputs("IdentityNet reads"), bundle,
            Identity.Input("identity", tooltip=f"From {encode_node} or FaceSnap Load Identity (an identity made "
                                               "with these files)."),
            keypoints_input()]


def conditioning_inputs(reads: str) -> list:
    return [io.Conditioning.Input("positive", tooltip="Positive (prompt) conditioning of the SDXL model."),
            io.Conditioning.Input("negative", tooltip=f"Negative conditioning; {reads} the identity's negative "
                                                      "tokens there.")]


def apply_method(method, node_id: str, bundle, identity, *, keypoints_image=None, **settings) -> tuple:
    """``method.apply`` (a glue module) with the node's settings, the keypoint image (when the method reads one)
    checked first -> (model, positive, negative)."""
    if keypoints_image is not None:
        check_control_image(keypoints_image, "keypoints_image")
    applied = method.apply(bundle, identity, request=ApplyRequest(control_image=keypoints_image, node_id=node_id,
                                                                  **settings))
    return applied.model, applied.positive, applied.negative
