"""Pictures of the Landmark Predictor for the README and the workflow thumbnail, from the nodes' real outputs.

Two people of insightface's t1.jpg are the references; one other person is the drive. For each reference the row
shows: the reference face, the drive face with its detected landmarks, the predicted landmarks (control image),
the predicted landmarks over the drive face, and the 3D render (Diff-PC control).

    python benchmarks/make_readme_images.py [--model ../shared/3dmm/ict_face_narrow.npz]
writes docs/images/predictor_example.png and workflows/facesnap_landmark_predictor.jpg.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCES = (2, 5)  # faces of t1.jpg counted from the left
DRIVE = 1
TILE = 256
LABELS = ("reference", "drive + detected", "predicted landmarks", "predicted on drive", "3D render")


def label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = tile.copy()
    cv2.rectangle(out, (0, 0), (TILE, 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=pathlib.Path, default=ROOT.parent / "shared" / "3dmm" / "ict_face_narrow.npz")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.boot_comfyui(cpu=True)
    import cv2

    import folder_paths

    from comfyui_facesnap.devkit.workflow_files import insightface_images
    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks
    from comfyui_facesnap.models.face_analysis.landmarks72 import draw_control_image
    from comfyui_facesnap.models.face_analysis.select import cut_crops, plan_crops
    from comfyui_facesnap.nodes.image_tensors import to_rgb_uint8
    from comfyui_facesnap.nodes.model_paths import register_model_folders
    from comfyui_facesnap.nodes.predictor_nodes import FaceSnap3DMMLoader, FaceSnapLandmarkPredictor

    register_model_folders()
    folder_paths.add_model_folder_path("3dmm", str(args.model.parent), is_default=True)
    image = cv2.imread(str(insightface_images() / "t1.jpg"))[:, :, ::-1].copy()
    analyzer = load_analyzer("dlib")
    crops, faces = {}, {}
    for index in (*REFERENCES, DRIVE):
        crop, face_set = cut_crops(plan_crops(analyzer, [image], "left_to_right", index, size=TILE))
        crops[index], faces[index] = crop[0], face_set
    model = FaceSnap3DMMLoader.execute("ICT-FaceKit", args.model.name, "generic_model.pkl",
                                         "landmark_embedding.npy")[0]
    drive_points = faces_to_landmarks(faces[DRIVE], "crop").points[0]
    rows = []
    for ref in REFERENCES:
        _, control, render, overlay = FaceSnapLandmarkPredictor.execute(
            model, faces[ref], drive=faces[DRIVE], pose_source="drive", yaw=0.0, pitch=0.0, roll=0.0,
            keep_reference_expression=False, expression_strength=1.0, neutral_reference=False, frame="drive crop",
            width=TILE, height=TILE)
        tiles = [crops[ref], draw_control_image(drive_points, TILE, TILE, canvas=crops[DRIVE]),
                 to_rgb_uint8(control)[0], to_rgb_uint8(overlay)[0], to_rgb_uint8(render)[0]]
        rows.append(np.concatenate([label(t, text) for t, text in zip(tiles, LABELS, strict=True)], 1))
    picture = np.concatenate(rows, 0)
    out = ROOT / "docs" / "images" / "predictor_example.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), picture[:, :, ::-1])
    thumb = ROOT / "workflows" / "facesnap_landmark_predictor.jpg"
    cv2.imwrite(str(thumb), rows[0][:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {out} and {thumb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
