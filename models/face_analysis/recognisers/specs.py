"""The face-recognition networks that score likeness ("judges"): what each is, its column name, the files it reads
and where to get them, and which paper scored with it. Pure data, so nodes, the evaluation CLI and the docs list the
same judges.

=================  ==================  ===========================================================  ==================
judge              column              network and weights                                           used by
=================  ==================  ===========================================================  ==================
ArcFace            FaceSim-Arc         antelopev2 glintr100 (insightface ONNX)                      Diff-PC ("Sim")
CurricularFace     FaceSim-Cur         IR-101, the authors' CurricularFace_Backbone.pth (MS1MV2)    PuLID
AdaFace            FaceSim-Ada         IR-101, the authors' adaface_ir101_*.ckpt                    MultiID-Bench
FaceNet            FaceSim-FaceNet     Inception-ResNet-v1, facenet-pytorch's VGGFace2 weights       FaceSnap
dlib               FaceSim-dlib        dlib's 128-D ResNet descriptor (face-recognition-models)     fallback only
=================  ==================  ===========================================================  ==================

glintr100 is also the identity *input* of InstantID, PuLID, PhotoMaker-V2, FaceSnap and Diff-PC, so FaceSim-Arc
flatters them; PuLID scores with CurricularFace for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    metric: str  # the report's column
    feature: str  # what is compared, for reports
    published: tuple[str, ...] = ()  # published file names, preferred first
    stem: str = ""  # any "<stem>*<suffix>" file in the folder is a candidate (e.g. a state-dict conversion)
    source: str = ""  # where to get the published file
    used_by: str = ""  # the papers that score with it
    caveat: str = ""

    def candidates(self, names) -> list[str]:
        """The listed file names this judge would read, preferred first (published names in their order, then any
        other ``stem*`` weights file alphabetically)."""
        if not self.stem:
            return []
        lowered = {n: n.replace("\\", "/").rsplit("/", 1)[-1].lower() for n in names}
        matching = [n for n, base in lowered.items()
                    if base.startswith(self.stem.lower()) and base.endswith(WEIGHT_SUFFIXES)]
        rank = {p.lower(): i for i, p in enumerate(self.published)}
        return sorted(matching, key=lambda n: (rank.get(lowered[n], len(rank)), n))


ARCFACE = JudgeSpec(
    "ArcFace", "FaceSim-Arc", "ArcFace glintr100 embedding",
    source="insightface's antelopev2 pack (glintr100.onnx), in models/insightface/models/antelopev2 as InstantID "
           "uses it",
    used_by="Diff-PC's Sim",
    caveat="antelopev2 is also the identity input of InstantID, PuLID, PhotoMaker-V2, FaceSnap and Diff-PC, so it "
           "flatters them")
CURRICULARFACE = JudgeSpec(
    "CurricularFace", "FaceSim-Cur", "CurricularFace IR-101 embedding",
    published=("CurricularFace_Backbone.pth",), stem="curricularface",
    source="CurricularFace_Backbone.pth from the 'Model' section of github.com/HuangYG123/CurricularFace (IR-101, "
           "Google Drive or Baidu link)",
    used_by="PuLID's FaceSim")
ADAFACE = JudgeSpec(
    "AdaFace", "FaceSim-Ada", "AdaFace IR-101 embedding",
    published=("adaface_ir101_webface12m.ckpt", "adaface_ir101_webface4m.ckpt", "adaface_ir101_ms1mv3.ckpt",
               "adaface_ir101_ms1mv2.ckpt"), stem="adaface_ir101",
    source="an R100 checkpoint (adaface_ir101_webface12m.ckpt recommended) from the 'Pretrained Models' table of "
           "github.com/mk-minchul/AdaFace",
    used_by="one of the three in WithAnyone's MultiID-Bench")
FACENET = JudgeSpec(
    "FaceNet", "FaceSim-FaceNet", "FaceNet (Inception-ResNet-v1, VGGFace2) embedding",
    published=("20180402-114759-vggface2.pt",), stem="20180402-114759-vggface2",
    source="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    used_by="FaceSnap's FaceSim (its Table 1)")
DLIB = JudgeSpec(
    "dlib", "FaceSim-dlib", "dlib 128-D face descriptor",
    source="pip install dlib-bin face-recognition-models   (in ComfyUI's Python environment)",
    used_by="no paper",
    caveat="a fallback on its own scale, NOT comparable with the other FaceSim columns or any paper")

JUDGES = {spec.name: spec for spec in (ARCFACE, CURRICULARFACE, ADAFACE, FACENET, DLIB)}
TORCH_JUDGES = ("CurricularFace", "AdaFace", "FaceNet")  # read from a weights file in the face_recognition folder
