"""Replaced node ids. Saved workflows name nodes by id and fill inputs by name, so neither may simply change.

To rename a node or change its input names: register the new node under a new id, keep the old class registered
with ``is_deprecated=True`` in its schema (ComfyUI hides it from the Add Node menu but still loads old workflows)
and add ``"OldId": "NewId"`` below. tests/package/test_stable_ids.py enforces this against tests/node_ids.json.
"""

DEPRECATED_IDS: dict[str, str] = {
    # identities became data: FaceSnap Attribute Mixer + the identity apply nodes do the same
    "FaceSnapApplyFFRNet": "FaceSnapApplyIdentity",
    "FaceSnapApplyFFRNetAdvanced": "FaceSnapApplyIdentityAdvancedV2",
    # FaceSnap's token noise got its own name (uncond_token_noise); InstantID's uncond_noise is another noise
    "FaceSnapApplyIdentityAdvanced": "FaceSnapApplyIdentityAdvancedV2",
}
