"""The face-recognition judges against their official code: the networks (full-size seeded random weights in the
published files' layouts) reproduce the reference outputs that scripts/reference_judges.py got from facenet-pytorch,
AdaFace and CurricularFace, and their crops and pixel scaling do too. Then: files are read safely and checked before
use, the right file is found, and the ArcFace and dlib judges agree with the analyzers they reuse."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
import torch

from comfyui_facesnap.devkit.random_judge_weights import (
    CROP_STRIDE,
    FACENET_BOXES,
    FACENET_IMAGE,
    judge_layout,
    layout_digest,
    random_faces,
    random_state_dict,
    seeded_image,
    seeded_keypoints,
    write_published_judge,
)
from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.face_analysis.recognisers import JUDGES, judge_file, judge_status, load_judge

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "judges"
FILES = {"FaceNet": "facenet", "AdaFace": "adaface", "CurricularFace": "curricularface"}


def reference(name: str) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(FIXTURES / f"{FILES[name]}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FILES))
def test_networks_match_the_official_code_on_full_size_random_weights(name, tmp_path):
    """Published layout (names and shapes, digest of the official state dict), published container, same output."""
    tensors, meta = reference(name)
    layout = judge_layout(name)
    assert layout_digest(layout) == meta["layout_digest"] and len(layout) == int(meta["tensors"])
    state = random_state_dict(layout, int(meta["weight_seed"]))
    judge = load_judge(name, path=str(write_published_judge(name, tmp_path, state=state)))
    inputs = random_faces(int(meta["batch"]), int(meta["input_size"]), int(meta["input_seed"]))
    ours, theirs = unit(judge.embed(inputs)), unit(tensors["output"])
    assert (ours - theirs).abs().max() < 1e-5, (ours - theirs).abs().max()
    # the two faces' difference too (random networks map different inputs to nearby embeddings)
    assert torch.allclose(ours[0] - ours[1], theirs[0] - theirs[1], atol=1e-5)


def test_facenet_crop_and_standardisation_match_facenet_pytorch():
    from comfyui_facesnap.models.face_analysis.recognisers.face_crops import facenet_crop

    tensors, _ = reference("FaceNet")
    image = seeded_image(*FACENET_IMAGE)
    for i, (*box, margin) in enumerate(FACENET_BOXES):
        ours = facenet_crop(image, box, margin)[::CROP_STRIDE, ::CROP_STRIDE].transpose(2, 0, 1)
        assert np.array_equal(ours, tensors[f"crop{i}"].numpy()), i
    pixels = np.arange(256, dtype=np.float32)
    assert np.allclose((pixels - 127.5) / 128.0, tensors["standardised"].numpy()[0], atol=1e-7)


def test_alignment_and_channel_order_match_adaface_and_curricularface():
    from comfyui_facesnap.models.face_analysis.align import arcface_matrix
    from comfyui_facesnap.models.face_analysis.recognisers.face_crops import adaface_matrix

    tensors, _ = reference("AdaFace")
    for kps, theirs in zip(seeded_keypoints(), tensors["matrices"].numpy(), strict=True):
        assert np.allclose(adaface_matrix(kps), theirs, rtol=1e-5, atol=1e-4), (adaface_matrix(kps), theirs)
        assert not np.allclose(arcface_matrix(kps), theirs, atol=1e-3)  # insightface's fit is the other way round
    pixels = seeded_image(4, 4).astype(np.float32)
    scaled = (pixels / 255.0 - 0.5) / 0.5
    assert np.allclose(scaled[..., ::-1].transpose(2, 0, 1), tensors["to_input"].numpy()[0], atol=1e-6)  # BGR
    assert np.allclose(scaled.transpose(2, 0, 1), reference("CurricularFace")[0]["to_input"].numpy()[0], atol=1e-6)


def test_judge_inputs_are_the_authors_crops(insightface_images):
    """What each PyTorch judge feeds its network for a real face: FaceNet's box crop, AdaFace's BGR alignment,
    CurricularFace's RGB alignment."""
    import cv2

    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.models.face_analysis.align import arcface_crop
    from comfyui_facesnap.models.face_analysis.recognisers.face_crops import (
        adaface_matrix,
        aligned_input,
        facenet_input,
    )

    photo = np.ascontiguousarray(cv2.imread(str(insightface_images / "t1.jpg"))[..., ::-1])
    face = load_analyzer("dlib").detect(photo)[0]
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    expected = cv2.resize(photo[y1:y2, x1:x2], (160, 160), interpolation=cv2.INTER_AREA)
    assert np.allclose(facenet_input(photo, face), (expected.transpose(2, 0, 1) - 127.5) / 128.0)
    aligned = arcface_crop(photo, face.kps5, 112).astype(np.float32) / 127.5 - 1.0
    assert np.allclose(aligned_input(photo, face, bgr=False), aligned.transpose(2, 0, 1), atol=1e-6)
    adaface = cv2.warpAffine(photo, adaface_matrix(face.kps5), (112, 112)).astype(np.float32) / 127.5 - 1.0
    assert np.allclose(aligned_input(photo, face, bgr=True), adaface[..., ::-1].transpose(2, 0, 1), atol=1e-6)


# ---- reading files -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def curricular_state():
    return random_state_dict(judge_layout("CurricularFace"), 0)


@pytest.mark.slow
def test_published_forms_load_lightning_checkpoint_and_state_dict_conversions(tmp_path, curricular_state):
    from safetensors.torch import save_file

    from comfyui_facesnap.models.face_analysis.recognisers.published_weights import read_published_weights
    from comfyui_facesnap.models.face_analysis.recognisers.specs import ADAFACE, CURRICULARFACE

    layout = judge_layout("CurricularFace")
    pth = write_published_judge("CurricularFace", tmp_path / "pth", state=curricular_state)
    from_pth = read_published_weights(str(pth), CURRICULARFACE, layout)
    assert set(from_pth) == set(layout) and torch.equal(from_pth["body.3.res_layer.1.weight"],
                                                        curricular_state["body.3.res_layer.1.weight"])
    converted = tmp_path / "curricularface_ir101.safetensors"  # a DataParallel-saved state dict, as safetensors
    save_file({f"module.{k}": v for k, v in curricular_state.items()}, str(converted))
    assert torch.equal(read_published_weights(str(converted), CURRICULARFACE, layout)["output_layer.3.weight"],
                       curricular_state["output_layer.3.weight"])
    ada_layout = judge_layout("AdaFace")
    ckpt = write_published_judge("AdaFace", tmp_path / "ckpt", seed=3)  # Lightning: state_dict, model./head., records
    tensors = read_published_weights(str(ckpt), ADAFACE, ada_layout)
    assert set(tensors) == set(ada_layout)  # head.kernel and the training records are dropped


def test_a_checkpoint_holding_python_objects_is_refused_without_running_them(tmp_path):
    import argparse

    from comfyui_facesnap.models.face_analysis.recognisers.published_weights import read_published_weights
    from comfyui_facesnap.models.face_analysis.recognisers.specs import ADAFACE

    path = tmp_path / "adaface_ir101_webface12m.ckpt"
    torch.save({"state_dict": {"model.input_layer.0.weight": torch.zeros(64, 3, 3, 3)},
                "hyper_parameters": argparse.Namespace(arch="ir_101")}, path)
    with pytest.raises(ModelFileError) as err:
        read_published_weights(str(path), ADAFACE, judge_layout("AdaFace"))
    text = str(err.value)
    assert "argparse.Namespace" in text and "stopped without running anything" in text
    assert "input_layer.0.weight" in err.value.fix and "github.com/mk-minchul/AdaFace" in err.value.fix
    assert not any(word in text.lower() for word in ("weights_only", "safe_globals", "trust"))

    class Boom:
        def __reduce__(self):
            return (pathlib.Path.touch, (tmp_path / "pwned",))

    hostile = tmp_path / "CurricularFace_Backbone.pth"
    hostile.write_bytes(pickle.dumps({"input_layer.0.weight": Boom()}, protocol=2))
    with pytest.raises(ModelFileError):
        load_judge("CurricularFace", path=str(hostile))
    assert not (tmp_path / "pwned").exists()


def test_wrong_incomplete_or_damaged_files_name_the_tensor_and_where_to_get_the_right_one(tmp_path, curricular_state):
    from safetensors.torch import save_file

    with pytest.raises(ModelFileError) as err:  # CurricularFace's IR-101 lacks AdaFace's middle BatchNorm
        load_judge("AdaFace", path=str(write_published_judge("CurricularFace", tmp_path / "c", state=curricular_state)))
    assert "has no tensor 'body.0.res_layer.2.bias': it is not the AdaFace network's weights" in str(err.value)
    assert "adaface_ir101_webface12m.ckpt" in err.value.fix
    broken = dict(curricular_state)
    broken["output_layer.3.bias"] = torch.full((512,), float("nan"))
    nan_file = tmp_path / "CurricularFace_Backbone.safetensors"
    save_file(broken, str(nan_file))
    with pytest.raises(ModelFileError, match="NaN"):
        load_judge("CurricularFace", path=str(nan_file))
    half = {k: v for k, v in curricular_state.items() if not k.startswith("output_layer")}
    save_file(half, str(nan_file))
    with pytest.raises(ModelFileError, match="no tensor 'output_layer.0.weight'"):
        load_judge("CurricularFace", path=str(nan_file))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="not a readable torch weights file"):
        load_judge("FaceNet", path=str(tmp_path / "junk.pt"))
    with pytest.raises(ModelFileError) as err:
        load_judge("FaceNet", judge_folders=[tmp_path / "empty"])
    assert "20180402-114759-vggface2.pt" in str(err.value)
    assert "github.com/timesler/facenet-pytorch/releases" in err.value.fix


def test_each_judge_finds_its_published_file_first_and_says_what_is_missing(tmp_path):
    folder = tmp_path / "face_recognition"
    (folder / "old").mkdir(parents=True)
    for name in ("adaface_ir101_ms1mv2.ckpt", "old/adaface_ir101_custom.safetensors", "adaface_ir101_webface12m.ckpt",
                 "CurricularFace_Backbone.pth", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert judge_file(JUDGES["AdaFace"], [folder]).endswith("adaface_ir101_webface12m.ckpt")
    assert judge_file(JUDGES["CurricularFace"], [folder]).endswith("CurricularFace_Backbone.pth")
    assert judge_file(JUDGES["FaceNet"], [folder]) is None
    assert judge_status("AdaFace", [folder]) is None
    why = judge_status("FaceNet", [folder])
    assert "20180402-114759-vggface2.pt" in why and str(folder) in why
    assert "glintr100.onnx" in judge_status("ArcFace", [], [tmp_path])


# ---- the judges that reuse an analyzer's own features ---------------------------------------------------------------
@pytest.fixture(scope="module")
def t1(insightface_images):
    import cv2

    return np.ascontiguousarray(cv2.imread(str(insightface_images / "t1.jpg"))[..., ::-1])


def test_arcface_judge_reuses_the_analyzer_embedding_and_computes_it_alike_for_dlib_faces(tmp_path, t1):
    import dataclasses

    from comfyui_facesnap.devkit.onnx_antelopev2 import make_antelopev2
    from comfyui_facesnap.models.face_analysis import load_analyzer

    root = make_antelopev2(tmp_path / "insightface")
    face = load_analyzer("insightface", insightface_root=root).detect(t1)[0]
    judge = load_judge("ArcFace", insightface_roots=[root])
    as_if_dlib = dataclasses.replace(face, backend="dlib", embedding=None)
    features = judge.features([(t1, face), (t1, as_if_dlib)])
    assert np.allclose(features[0], face.embedding, atol=1e-6) and np.allclose(features[1], features[0], atol=1e-5)


def test_dlib_judge_reuses_descriptors_and_runs_dlib_in_another_analyzers_box(t1):
    import dataclasses

    from comfyui_facesnap.models.face_analysis import load_analyzer

    faces = load_analyzer("dlib").detect(t1)
    judge = load_judge("dlib")
    other = dataclasses.replace(faces[0], backend="insightface", descriptor=None, embedding=np.ones(512))
    features = judge.features([(t1, faces[0]), (t1, other), (t1, faces[1])])
    assert np.allclose(features[0], faces[0].descriptor / np.linalg.norm(faces[0].descriptor), atol=1e-6)
    assert np.allclose(features[1], features[0], atol=1e-6) and features[0] @ features[2] < 0.99
