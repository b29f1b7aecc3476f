"""Nodes kept only so that saved workflows keep loading and running (``deprecations.py`` names each one's
replacement). ComfyUI hides them from the Add Node menu; their ids and inputs never change."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_glue.methods import facesnap
from .errors import reports_errors
from .facesnap_nodes import (
    CATEGORY,
    advanced_inputs,
    apply_identity,
    apply_identity_advanced,
    conditioning_inputs,
    conditioning_outputs,
    landmark_inputs,
    mask_input,
    uncond_inputs,
)
from .socket_types import FaceFeatures

SUPERSEDED = ("Kept so that saved workflows keep loading and running; new graphs use FaceSnap Attribute Mixer + "
              "{new}, which make the same result and let the identity be saved, loaded and blended.")


def features_input():
    return FaceFeatures.Input("face_features", tooltip="From FaceSnap Face Encode.")


def _apply_features(node_id: str, facesnap_model, face_features, **settings):
    """The face-features apply nodes: the mixer's identity, applied like the identity apply nodes do."""
    facesnap_model.require_ffrnet()
    identity = facesnap.encode_features(facesnap_model, features=face_features)
    return apply_identity(node_id, facesnap_model, identity, **settings)


class FaceSnapApplyFFRNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyFFRNet",
            display_name="FaceSnap Apply FFRNet",
            category=CATEGORY,
            description="Adds FaceSnap's FFRNet ControlNet to the conditioning, fed the face features through the "
                        "Facial Attribute Mixer. " + SUPERSEDED.format(new="FaceSnap Apply Identity"),
            inputs=[*conditioning_inputs(features_input()), *landmark_inputs(), mask_input()],
            outputs=conditioning_outputs(),
            is_deprecated=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, face_features, landmark_image, strength, start_percent,
                end_percent, mask=None) -> io.NodeOutput:
        if strength == 0:
            return io.NodeOutput(positive, negative)
        return io.NodeOutput(*_apply_features(
            "FaceSnapApplyFFRNet", facesnap_model, face_features, positive=positive, negative=negative,
            landmark_image=landmark_image, strength=strength, start=start_percent, end=end_percent, mask=mask))


class FaceSnapApplyFFRNetAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyFFRNetAdvanced",
            display_name="FaceSnap Apply FFRNet (Advanced)",
            category=CATEGORY,
            description="FaceSnap Apply FFRNet with separate strengths for the positive and the negative, and "
                        "optional noise on the negative's identity-free tokens. "
                        + SUPERSEDED.format(new="FaceSnap Apply Identity (Advanced)"),
            inputs=[*conditioning_inputs(features_input()),
                    *landmark_inputs("cond_strength", "FFRNet/ID-Injector strength on the positive."),
                    *uncond_inputs("uncond_noise"), mask_input()],
            outputs=conditioning_outputs(),
            is_deprecated=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, face_features, landmark_image, cond_strength, start_percent,
                end_percent, uncond_strength, uncond_noise, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*_apply_features(
            "FaceSnapApplyFFRNetAdvanced", facesnap_model, face_features, positive=positive, negative=negative,
            landmark_image=landmark_image, strength=cond_strength, start=start_percent, end=end_percent, mask=mask,
            uncond_strength=uncond_strength, uncond_token_noise=uncond_noise))


class FaceSnapApplyIdentityAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapApplyIdentityAdvanced",
            display_name="FaceSnap Apply Identity (Advanced, old)",
            category=CATEGORY,
            description="FaceSnap Apply Identity (Advanced) with the token noise under its old name, uncond_noise "
                        "(InstantID's uncond_noise is another noise). Kept so that saved workflows keep loading and "
                        "running; new graphs use FaceSnap Apply Identity (Advanced), which makes the same result.",
            inputs=advanced_inputs("uncond_noise"),
            outputs=conditioning_outputs(),
            is_deprecated=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, positive, negative, facesnap_model, identity, landmark_image, cond_strength, start_percent,
                end_percent, uncond_strength, uncond_noise, positive_only=False, allow_other_weights=False,
                mask=None) -> io.NodeOutput:
        return io.NodeOutput(*apply_identity_advanced(
            "FaceSnapApplyIdentityAdvanced", positive, negative, facesnap_model, identity, landmark_image,
            cond_strength, start_percent, end_percent, uncond_strength, uncond_noise, positive_only,
            allow_other_weights, mask))


NODES = [FaceSnapApplyFFRNet, FaceSnapApplyFFRNetAdvanced, FaceSnapApplyIdentityAdvanced]
