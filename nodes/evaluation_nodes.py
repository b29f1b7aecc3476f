"""Evaluation nodes: score generated images for likeness to the reference faces, to rank seeds inside a graph."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..evaluation.face_similarity import NO_FACE_SCORE, format_report, reference_features, score_images
from ..models.errors import InvalidInputError
from .errors import reports_errors
from .image_tensors import ensure_memory, image_bytes, to_rgb_uint8
from .socket_types import FaceAnalyzer, Faces

CATEGORY = "FaceSnap/Evaluation"


class FaceSimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapFaceSimilarity",
            display_name="FaceSnap Face Similarity",
            category=CATEGORY,
            description="Scores how much the largest face of each image looks like the reference faces: the mean "
                        "cosine of face-recognition features (ArcFace glintr100 with the insightface analyzer, like "
                        "Diff-PC's Sim; FaceSnap's FaceSim used FaceNet; dlib's 128-D descriptor otherwise, a different scale reported as "
                        "FaceSim-dlib). Use it to rank seeds or settings by likeness. An image without a face scores "
                        "-1 and ranks last.",
            inputs=[
                FaceAnalyzer.Input("analyzer", tooltip="The same FaceSnap Face Analyzer Loader that found the "
                                                       "reference faces (features of different backends do not mix)."),
                io.Image.Input("images", tooltip="The generated images (a batch, e.g. one per seed)."),
                Faces.Input("reference_faces", tooltip="Reference faces from FaceSnap Face Crop; several photos of "
                                                       "one person are averaged over."),
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
    def execute(cls, analyzer, images, reference_faces) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise InvalidInputError("the image batch is empty", "connect the generated images (VAE Decode)")
        if images.ndim == 4:  # the ranked copy of the batch and the RGB images the analyzer reads
            count, height, width = images.shape[:3]
            ensure_memory(image_bytes(count, height, width), f"{count} image(s) of {width} x {height} to rank",
                          "the number or the size of the images (score them in smaller batches)")
        references = reference_features(reference_faces, analyzer.name)
        results = score_images(analyzer, to_rgb_uint8(images), references)
        scores = [NO_FACE_SCORE if r.score is None else r.score for r in results]
        report = format_report(results, analyzer.name, len(references))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return io.NodeOutput(scores, report, images[torch.tensor(order)], ui=ui.PreviewText(report))


NODES = [FaceSimilarity]
