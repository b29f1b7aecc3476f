"""Thumbnails for the example workflows (``make workflows``): tiles of real outputs of this pack's own nodes.

The weight-free part of each workflow (face crop, landmarks, Landmark Predictor, 3D render) runs through ComfyUI's
executor on the faces of insightface's t1.jpg, with the dlib analyzer, and the images are tiled with OpenCV into
workflows/<name>.jpg. workflows/facesnap_landmarks.jpg belongs to the landmark workflow and is left alone.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))

TILE = 256
REFERENCE = 2  # the faces of t1.jpg, counted from the left
DRIVE = 4
OPENPOSE_STYLE = "openpose_face_head_xinsir"  # as the OpenPose workflows (scripts/build_workflows.py)
SHARED_3DMM = pathlib.Path(os.environ.get("FACESNAP_3DMM_DIR", PACK_ROOT.parent / "shared" / "3dmm"))


class Thumbnails:
    def __init__(self, workdir: pathlib.Path):
        from comfyui_facesnap.devkit.comfy_host import ComfyHost
        from comfyui_facesnap.devkit.workflow_files import insightface_images

        self.host = ComfyHost(PACK_ROOT, workdir)
        shutil.copyfile(insightface_images() / "t1.jpg", self.host.input_dir / "t1.jpg")
        if SHARED_3DMM.is_dir():  # the converted ICT-FaceKit model of the dev/CI machine (never in the repo)
            import folder_paths

            folder_paths.add_model_folder_path("3dmm", str(SHARED_3DMM))

    def run(self, build) -> dict[str, list[np.ndarray]]:
        """``build(graph)`` adds nodes and returns {name: IMAGE output}; returns {name: RGB uint8 images}."""
        import cv2

        from comfy_execution.graph_utils import GraphBuilder

        graph = GraphBuilder(prefix="")  # plain ids; the default prefix is global state the executor changes
        wanted = build(graph)
        savers = {name: graph.node("SaveImage", images=output, filename_prefix=f"thumb/{name}")
                  for name, output in wanted.items()}
        prompt = graph.finalize()
        valid, error, _, node_errors = self.host.validate(prompt)
        if not valid or node_errors:  # validate_prompt drops invalid outputs and still says valid
            raise RuntimeError(f"thumbnail graph is invalid: {error} {node_errors}")
        executor = self.host.run(prompt)
        images = {}
        for name, saver in savers.items():
            saved = executor.history_result["outputs"][saver.id]["images"]
            paths = [self.host.output_dir / item["subfolder"] / item["filename"] for item in saved]
            images[name] = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
        return images


def add(graph, class_type: str, **inputs):
    """A node with every widget not given set to its default, as the UI would send it."""
    import nodes

    from comfyui_facesnap.devkit.ui_workflow import input_specs, node_info

    for spec in input_specs(node_info(class_type, nodes.NODE_CLASS_MAPPINGS[class_type])):
        if spec.is_widget and spec.name not in inputs and "default" in spec.options:
            inputs[spec.name] = spec.options["default"]
    return graph.node(class_type, **inputs)


def faces(graph, index: int, margin: float = 0.5):
    photo = graph.node("LoadImage", image="t1.jpg")
    analyzer = add(graph, "FaceSnapFaceAnalyzerLoader", backend="dlib")
    return add(graph, "FaceSnapFaceCrop", analyzer=analyzer.out(0), image=photo.out(0), selection="left_to_right",
               index=index, size=TILE, margin=margin)


def landmarks(graph, crop):
    return add(graph, "FaceSnapDrawLandmarks", faces=crop.out(1), frame="crop")


def portrait(graph):
    crop = faces(graph, REFERENCE)
    drawn = landmarks(graph, crop)
    return {"crop": crop.out(0), "overlay": drawn.out(1), "control": drawn.out(0)}


def multi_reference(graph):
    crops = {f"crop_{i}": faces(graph, REFERENCE, margin).out(0) for i, margin in enumerate((0.3, 0.5, 0.8))}
    return {**crops, "control": landmarks(graph, faces(graph, REFERENCE)).out(0)}


def predict(graph, drive: bool, **pose):
    return run_predictor(graph, drive, **pose)[0]


def run_predictor(graph, drive: bool, **pose):
    """The Landmark Predictor on a face of t1.jpg: ({name: IMAGE output}, the predictor node)."""
    reference = faces(graph, REFERENCE)
    model = add(graph, "FaceSnap3DMMLoader", model="ICT-FaceKit")
    inputs = {"model": model.out(0), "reference": reference.out(1), "pose_source": "drive" if drive else "manual",
              "frame": "canvas", "width": TILE, "height": TILE, **pose}
    if drive:
        driver = faces(graph, DRIVE)
        inputs["drive"] = driver.out(1)
    predictor = add(graph, "FaceSnapLandmarkPredictor", **inputs)
    images = {"reference": reference.out(0), "control": predictor.out(1), "render": predictor.out(2)}
    if drive:
        images["drive"] = driver.out(0)
    return images, predictor


def keypoints(graph, **inputs):
    return add(graph, "FaceSnapDrawKeypoints", **inputs)


def instantid_portrait(graph):
    crop = faces(graph, REFERENCE)
    drawn = keypoints(graph, faces=crop.out(1), frame="crop")
    return {"crop": crop.out(0), "overlay": drawn.out(1), "keypoints": drawn.out(0)}


def instantid_pose(graph, drive: bool, **pose):
    images, predictor = run_predictor(graph, drive, **pose)
    images["keypoints"] = keypoints(graph, landmarks=predictor.out(0)).out(0)
    return images


def tile(images: list[np.ndarray]) -> np.ndarray:
    import cv2

    tiles = [cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA) for image in images]
    return cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR)


THUMBNAILS = {
    "facesnap_portrait": (portrait, ["crop", "overlay", "control"]),
    "facesnap_multi_reference": (multi_reference, ["crop_0", "crop_1", "crop_2", "control"]),
    "facesnap_pose_from_drive": (lambda graph: predict(graph, True), ["reference", "drive", "control"]),
    "facesnap_manual_pose": (lambda graph: predict(graph, False, yaw=30.0, pitch=-5.0, roll=0.0),
                             ["reference", "control", "render"]),
    "facesnap_diffpc_render": (lambda graph: predict(graph, True), ["reference", "drive", "render"]),
    "instantid_portrait": (instantid_portrait, ["crop", "overlay", "keypoints"]),
    "instantid_pose_from_drive": (lambda graph: instantid_pose(graph, True), ["reference", "drive", "keypoints"]),
    "instantid_manual_pose": (lambda graph: instantid_pose(graph, False, yaw=30.0, pitch=-5.0, roll=0.0),
                              ["reference", "render", "keypoints"]),
    "instantid_openpose_expression": (lambda graph: instantid_pose(graph, True, style=OPENPOSE_STYLE),
                                      ["reference", "drive", "control", "keypoints"]),
    "openpose_face_manual_pose": (lambda graph: instantid_pose(graph, False, yaw=30.0, pitch=-5.0, roll=0.0,
                                                               style=OPENPOSE_STYLE),
                                  ["reference", "control", "keypoints"]),
    "pulid_portrait": (instantid_portrait, ["crop", "overlay"]),  # the face and the 5 keypoints PuLID aligns it by
    "pulid_pose_from_drive": (lambda graph: predict(graph, True, style=OPENPOSE_STYLE),
                              ["reference", "drive", "control"]),
    "ecomid_portrait": (instantid_portrait, ["crop", "overlay", "keypoints"]),
    "ecomid_pose_from_drive": (lambda graph: instantid_pose(graph, True), ["reference", "drive", "keypoints"]),
}


def main() -> int:
    import cv2

    pack_import.boot_comfyui(cpu=True)
    thumbnails = Thumbnails(pathlib.Path(tempfile.mkdtemp(prefix="facesnap-thumbnails-")))
    for name, (build, order) in THUMBNAILS.items():
        if sys.argv[1:] and name not in sys.argv[1:]:  # `make_thumbnails.py NAME ...`: only those
            continue
        images = thumbnails.run(build)
        path = PACK_ROOT / "workflows" / f"{name}.jpg"
        cv2.imwrite(str(path), tile([images[key][0] for key in order]), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
