"""The pack's own socket types. Each carries a Python object defined in ``models/``; none reuses a core type."""

from comfy_api.latest import io

FaceAnalyzer = io.Custom("FACESNAP_FACE_ANALYZER")  # models.face_analysis backend object
Faces = io.Custom("FACESNAP_FACES")  # models.face_analysis.FaceSet
Landmarks = io.Custom("FACESNAP_LANDMARKS")  # models.face_analysis.landmarks72.LandmarkSet
FaceFeatures = io.Custom("FACESNAP_FACE_FEATURES")  # models.identity.facesnap.face_features.FaceFeatures
MorphableModel = io.Custom("FACESNAP_3DMM")  # models.face3d.morphable_model.MorphableModel
FaceSnapModel = io.Custom("FACESNAP_MODEL")  # attribute mixer + FFRNet (+ ID-Injector heads)
Identity = io.Custom("FACESNAP_IDENTITY")  # models.identity.identity.Identity: one person's cond/uncond tokens
# comfy_glue.methods.instantid.InstantIDBundle: Resampler, IP layers, IdentityNet
InstantID = io.Custom("FACESNAP_INSTANTID")
EvaClip = io.Custom("FACESNAP_EVA_CLIP")  # comfy_glue.pulid_features.EVAClipBundle: EVA02-CLIP-L-14-336
FaceParser = io.Custom("FACESNAP_FACE_PARSER")  # comfy_glue.pulid_features.FaceParserBundle: facexlib's BiSeNet
PuLID = io.Custom("FACESNAP_PULID")  # comfy_glue.methods.pulid.PuLIDBundle: ID encoder + ID attention layers
EcomID = io.Custom("FACESNAP_ECOMID")  # comfy_glue.methods.ecomid.EcomIDBundle: Resampler, IdentityNet, PuLID v1
