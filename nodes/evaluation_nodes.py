"""Evaluation nodes: score generated images for likeness to the reference faces, to rank seeds inside a graph."""

from __future__ import annotations

import torch

import folder_paths
from comfy_api.latest import io, ui

from ..evaluation.face_similarity import NO_FACE_SCORE, analyzer_judge, format_report, reference_features, score_images
from ..models.errors import InvalidInputError, ModelFileError
from ..models.face_analysis.recognisers import JUDGES, judge_status, load_judge
from ..models.face_analysis.recognisers.specs import TORCH_JUDGES
from .errors import reports_errors
from .image_tensors import ensure_memory, image_bytes, to_rgb_uint8
from .model_paths import folder_candidates
from .socket_types import FaceAnalyzer, Faces

CATEGORY = "FaceSnap/Evaluation"
FROM_ANALYZER = "analyzer"  # the connected analyzer's own features (ArcFace for insightface, dlib's descriptor)
JUDGE_FOLDER = "face_recognition"


def judge_weights(name: str) -> str | None:
    """The listed file of a PyTorch judge in the face_recognition folders (published name first), or None."""
    names = JUDGES[name].candidates(folder_paths.get_filename_list(JUDGE_FOLDER))
    return folder_paths.get_full_path(JUDGE_FOLDER, names[0]) if names else None


def installed_judges() -> list[str]:
    roots = folder_candidates("insightface")
    return [name for name in JUDGES if (judge_weights(name) is not None if name in TORCH_JUDGES
                                        else judge_status(name, insightface_roots=roots) is None)]


def installed_judge(name: str, analyzer):
    """The judge ``name``, loaded for this run (nothing but the node's own call holds it, so a cache could not keep
    it without keeping it alive itself; ComfyUI reruns the node only when its inputs change); a clear error when
    its files are not installed."""
    if name not in JUDGES:
        raise InvalidInputError(f"judge = {name!r} is not a judge",
                                f"pick one of: {FROM_ANALYZER}, {', '.join(JUDGES)}")
    if name not in installed_judges():
        where = ", ".join(folder_candidates(JUDGE_FOLDER if name in TORCH_JUDGES else "insightface"))
        raise ModelFileError(f"the {name} judge is not installed (looked in {where})", f"get {JUDGES[name].source}")
    import comfy.model_management

    path = judge_weights(name) if name in TORCH_JUDGES else None
    provider = "CUDA" if "CUDAExecutionProvider" in getattr(analyzer, "providers", ()) else "CPU"
    device = str(comfy.model_management.get_torch_device())
    roots = folder_candidates("insightface")
    return load_judge(name, insightface_roots=roots, device=device, provider=provider, path=path)


class FaceSnapFaceSimilarity(io.ComfyNode):
    RESOLVED_INPUTS = ("judge",)  # its choices are the installed judges; installed_judge names what is missing

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapFaceSimilarity",
            display_name="FaceSnap Face Similarity",
            category=CATEGORY,
            description="Scores how much the largest face of each image looks like the reference faces: the mean "
                        "cosine of face-recognition features. The judge picks the recognition network: the "
                        "analyzer's own (ArcFace glintr100 with insightface, as Diff-PC's Sim; dlib's 128-D "
                        "descriptor otherwise, a different scale), or CurricularFace (PuLID's), AdaFace or FaceNet "
                        "(FaceSnap's FaceSim) from their published weights in models/face_recognition. Use it to "
                        "rank seeds or settings by likeness. An image without a face scores -1 and ranks last.",
            inputs=[
                FaceAnalyzer.Input("analyzer", tooltip="The same FaceSnap Face Analyzer Loader that found the "
                                                       "reference faces (features of different backends do not mix)."),
                io.Image.Input("images", tooltip="The generated images (a batch, e.g. one per seed)."),
                Faces.Input("reference_faces", tooltip="Reference faces from FaceSnap Face Crop; several photos of "
                                                       "one person are averaged over."),
                io.Combo.Input("judge", options=[FROM_ANALYZER, *installed_judges()], default=FROM_ANALYZER,
                               optional=True,
                               tooltip="Which face-recognition network scores. analyzer: the analyzer's own feature. "
                                       "The others are listed when installed: ArcFace (antelopev2 glintr100), "
                                       "CurricularFace_Backbone.pth, adaface_ir101_*.ckpt or "
                                       "20180402-114759-vggface2.pt (FaceNet) in models/face_recognition, dlib. "
                                       "Scores of different judges are on different scales."),
            ],
            outputs=[
                io.Float.Output(display_name="scores", is_output_list=True,
                                tooltip="One likeness score per image, in batch order (cosine; -1: no face)."),
                io.String.Output(display_name="report", tooltip="The images ranked by likeness, as text."),
                io.Image.Output(display_name="images_by_likeness", tooltip="The images sorted, most alike first."),
            ],
            is_output_node=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, analyzer, images, reference_faces, judge: str = FROM_ANALYZER) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise InvalidInputError("the image batch is empty", "connect the generated images (VAE Decode)")
        if images.ndim == 4:  # the ranked copy of the batch and the RGB images the analyzer reads
            count, height, width = images.shape[:3]
            ensure_memory(image_bytes(count, height, width), f"{count} image(s) of {width} x {height} to rank",
                          "the number or the size of the images (score them in smaller batches)")
        scorer = None if judge == FROM_ANALYZER else installed_judge(judge, analyzer)
        spec = analyzer_judge(analyzer.name) if scorer is None else scorer.spec
        references = reference_features(reference_faces, analyzer.name, scorer)
        results = score_images(analyzer, to_rgb_uint8(images), references, scorer)
        scores = [NO_FACE_SCORE if r.score is None else r.score for r in results]
        report = format_report(results, spec, len(references))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return io.NodeOutput(scores, report, images[torch.tensor(order)], ui=ui.PreviewText(report))


NODES = [FaceSnapFaceSimilarity]
