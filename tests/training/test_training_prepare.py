"""Dataset preparation on real photos (dlib + a generated ArcFace ONNX): valid shards, drop reasons, resume, full
disk."""

import errno
import json
import pathlib
import tarfile

import cv2
import numpy as np
import pytest

from comfyui_facesnap.devkit.onnx_antelopev2 import antelopev2_folder, make_antelopev2
from comfyui_facesnap.models.face_analysis.landmarks72 import draw_control_image
from comfyui_facesnap.training import prepare_dataset as prep
from comfyui_facesnap.training.shards import index_shard, list_shards, read_sample

# dlib boxes of three well separated faces in insightface's t1.jpg (x1, y1, x2, y2)
T1_FACES = [(67, 283, 175, 390), (1118, 283, 1226, 390), (870, 67, 999, 196)]


def _single_face(t1: np.ndarray, box, upscale: float = 3.0) -> np.ndarray:
    x1, y1, x2, y2 = box
    pad = int(0.45 * (x2 - x1))
    crop = t1[max(0, y1 - pad): y2 + pad, max(0, x1 - pad): x2 + pad]
    return cv2.resize(crop, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, insightface_images):
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    t1_bgr = cv2.imread(str(insightface_images / "t1.jpg"))
    for person, box in zip(["anna", "bert", "carl"], T1_FACES, strict=True):
        (root / person).mkdir()
        cv2.imwrite(str(root / person / "a.png"), _single_face(t1_bgr, box))
    (root / "anna" / "a.txt").write_text("a smiling woman, studio light")
    (root / "anna" / "copy.png").write_bytes((root / "anna" / "a.png").read_bytes())  # duplicate
    bad = root / "bad"
    bad.mkdir()
    (bad / "group.jpg").write_bytes((insightface_images / "t1.jpg").read_bytes())  # six faces
    (bad / "noface.jpg").write_bytes((insightface_images / "mask_white.jpg").read_bytes())
    (bad / "small.png").write_bytes((insightface_images / "Tom_Hanks_54745.png").read_bytes())  # 112 x 112 photo
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    data = (root / "bert" / "a.png").read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(_single_face(t1_bgr, T1_FACES[0])[:, :, ::-1]).convert("CMYK").save(bad / "cmyk.jpg")
    cv2.imwrite(str(bad / "deep.png"), _single_face(t1_bgr, T1_FACES[1]).astype(np.uint16) * 257)
    return root


@pytest.fixture(scope="module")
def arcface_onnx(tmp_path_factory):
    return antelopev2_folder(make_antelopev2(tmp_path_factory.mktemp("insightface"))) / "glintr100.onnx"


def _config(inputs, out, arcface, **kw):
    kw = {"images_per_shard": 4, "workers": 1, **kw}
    return prep.PrepConfig(inputs=[str(inputs)], output=str(out), identity_from="folder", backend="dlib",
                           arcface=str(arcface), **kw)


@pytest.fixture(scope="module")
def prepared(inputs, arcface_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    counts = prep.prepare(_config(inputs, out, arcface_onnx, workers=2), progress=False)
    return out, counts


def test_shards_hold_valid_samples(prepared):
    out, counts = prepared
    assert counts["kept"] == 3, counts
    shards = list_shards(out)
    assert shards and all(tarfile.is_tarfile(s) for s in shards)
    refs = [r for s in shards for r in index_shard(s)]
    assert len(refs) == 3
    identities = set()
    for ref in refs:
        s = read_sample(ref)
        meta = s["json"]
        identities.add(meta["identity"])
        assert s["image.jpg"].shape == (1024, 1024, 3)
        assert s["face.jpg"].shape == (224, 224, 3)
        lm = np.array(meta["landmarks"])
        assert lm.shape == (72, 2) and (lm > 0).all() and (lm < 1024).all()
        np.testing.assert_array_equal(s["control.png"], draw_control_image(lm, 1024, 1024))
        mask = s["mask.png"] > 0
        assert 0.02 <= mask.mean() < 0.9
        assert mask[int(lm[30, 1]), int(lm[30, 0])]  # the nose tip lies inside the face mask
        assert meta["face_fraction"] >= 0.02
        emb = s["arcface.npy"]
        assert emb.shape == (512,) and abs(np.linalg.norm(emb) - 1) < 1e-4
        assert meta["arcface_norm"] > 0  # emb * arcface_norm: the raw embedding InstantID's Resampler reads
        if meta["identity"] == "anna":
            assert meta["caption"] == "a smiling woman, studio light"
        else:
            assert meta["caption"] == "a photo of a person"
    assert identities == {"anna", "bert", "carl"}


def test_arcface_embedder_gives_the_raw_embedding_as_unit_vector_and_norm(inputs, arcface_onnx):
    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.models.face_analysis.align import arcface_crop
    from comfyui_facesnap.training.arcface_onnx import ArcFaceEmbedder

    rgb = cv2.imread(str(inputs / "bert" / "a.png"))[:, :, ::-1].copy()
    (face,) = load_analyzer("dlib").detect(rgb, with_embedding=False)
    embedder = ArcFaceEmbedder(str(arcface_onnx))
    unit, norm = embedder.embed(rgb, face.kps5)
    raw = embedder.model.get_feat(arcface_crop(rgb[:, :, ::-1].copy(), face.kps5, 112)).ravel()
    assert abs(np.linalg.norm(unit) - 1) < 1e-5 and norm > 0
    np.testing.assert_allclose(unit * norm, raw, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # insightface's own norm_crop, used as the reference
def test_insightface_samples_keep_the_raw_embedding(insightface_images, tmp_path):
    """The insightface backend (antelopev2 stand-ins, which find one face anywhere): arcface.npy x arcface_norm is
    insightface's own ``Face.embedding``, the raw vector InstantID's Resampler reads."""
    from insightface.app.common import Face
    from insightface.model_zoo import model_zoo

    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.training.shards import decode_field

    root = make_antelopev2(tmp_path / "insightface")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "t1.jpg").write_bytes((insightface_images / "t1.jpg").read_bytes())
    cfg = prep.PrepConfig(inputs=[str(tmp_path / "photos")], output=str(tmp_path / "out"), backend="insightface",
                          insightface_root=str(root))
    (item,), _ = prep.list_inputs(cfg)
    analyzer = load_analyzer("insightface", insightface_root=root, provider="CPU")
    (_, fields), = prep.process_image(item, cfg, {"analyzer": analyzer})
    meta, unit = decode_field("json", fields["json"]), decode_field("arcface.npy", fields["arcface.npy"])

    bgr = cv2.imread(item.path)
    (record,) = analyzer.detect(bgr[:, :, ::-1].copy())
    face = Face(bbox=record.bbox, kps=record.kps5, det_score=record.score)
    model_zoo.get_model(str(root / "models" / "antelopev2" / "glintr100.onnx"),
                        providers=["CPUExecutionProvider"]).get(bgr, face)  # insightface's own path
    assert abs(meta["arcface_norm"] - 1.0) > 0.05  # the stand-in's raw embedding is not unit length
    np.testing.assert_allclose(unit * meta["arcface_norm"], face.embedding, rtol=1e-5, atol=1e-5)


def test_stored_landmarks_match_the_face_in_the_crop(prepared):
    """Re-detecting the augmented (scaled, rotated, padded) crop finds the face where the stored landmarks say."""
    from comfyui_facesnap.models.face_analysis import load_analyzer

    out, _ = prepared
    sample = read_sample(index_shard(list_shards(out)[0])[0])
    faces = load_analyzer("dlib").detect(sample["image.jpg"], with_embedding=False)
    assert len(faces) == 1
    stored = np.array(sample["json"]["landmarks"])
    face_size = np.ptp(stored[:17, 0])
    assert np.abs(faces[0].landmarks - stored).mean() < 0.06 * face_size


def test_dropped_images_carry_their_reason(prepared):
    out, counts = prepared
    reasons = {}
    for report in out.glob("shard-*.report.json"):
        for item in json.loads(report.read_text())["dropped"]:
            reasons[pathlib.Path(item["path"]).name] = item["reason"]
    assert reasons == {
        "group.jpg": "several faces", "noface.jpg": "no face", "small.png": "crop short side < 256",
        "corrupt.jpg": "corrupt image",
        "truncated.png": "corrupt image", "cmyk.jpg": "CMYK image", "deep.png": "16-bit image",
    }
    assert counts["duplicate"] == 1 and counts["several faces"] == 1


def test_rerun_skips_finished_shards(prepared, inputs, arcface_onnx):
    out, _ = prepared
    before = {s.name: s.stat().st_mtime_ns for s in list_shards(out)}
    counts = prep.prepare(_config(inputs, out, arcface_onnx), progress=False)
    assert set(counts) == {"duplicate"}  # nothing re-processed
    assert {s.name: s.stat().st_mtime_ns for s in list_shards(out)} == before


def test_machine_split_covers_every_shard_once(inputs, arcface_onnx, tmp_path):
    images, _ = prep.list_inputs(_config(inputs, tmp_path, arcface_onnx))
    halves = [prep.plan_shards(images, _config(inputs, tmp_path, arcface_onnx, num_shards=2, shard_index=k))
              for k in (0, 1)]
    assert sorted([*halves[0], *halves[1]]) == sorted(prep.plan_shards(images, _config(inputs, tmp_path, arcface_onnx)))
    assert not set(halves[0]) & set(halves[1])


def test_full_disk_leaves_no_finished_shard(inputs, arcface_onnx, tmp_path, monkeypatch):
    from comfyui_facesnap.training import shards

    real_write = shards.ShardWriter.write

    def failing_write(self, key, fields):
        if self.count >= 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, key, fields)

    monkeypatch.setattr(shards.ShardWriter, "write", failing_write)
    with pytest.raises(OSError):
        prep.prepare(_config(inputs, tmp_path, arcface_onnx, images_per_shard=100), progress=False)
    assert list_shards(tmp_path) == [] and not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(shards.ShardWriter, "write", real_write)
    counts = prep.prepare(_config(inputs, tmp_path, arcface_onnx, images_per_shard=100), progress=False)
    assert counts["kept"] == 3 and len(list_shards(tmp_path)) == 1


@pytest.mark.comfy
def test_clip_tokens_are_precomputed_with_comfyui_clip_vision(inputs, tmp_path):
    """--clip-vision stores the penultimate CLIP tokens of the face crop (tiny CLIP-vision: 5 x 32 instead of
    257 x 1280)."""
    from comfy_test_nodes.tiny_models import tiny_clip_vision
    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.training.clip_tokens import ClipTokenEncoder

    cfg = prep.PrepConfig(inputs=[str(inputs)], output=str(tmp_path), backend="dlib")
    images, _ = prep.list_inputs(cfg)
    item = next(i for i in images if i.path.endswith("bert/a.png"))
    encoder = ClipTokenEncoder(tiny_clip_vision())
    (key, fields), = prep.process_image(item, cfg, {"analyzer": load_analyzer("dlib"), "clip": encoder})
    from comfyui_facesnap.training.shards import decode_field

    tokens = decode_field("clip.npy", fields["clip.npy"])
    face = decode_field("face.jpg", fields["face.jpg"])
    assert tokens.shape == (5, 32) and tokens.dtype == np.float16
    np.testing.assert_allclose(tokens, encoder.encode(face), atol=2e-2)
    assert "arcface.npy" not in fields  # dlib gives no ArcFace embedding and no --arcface model was set


def test_a_second_prepare_uses_its_own_models(inputs, arcface_onnx, tmp_path, monkeypatch):
    """One process, two preparations: the second has no --arcface, so its samples carry no embedding (the face
    models used to be cached once per process, whatever the second configuration said)."""
    photos = tmp_path / "photos" / "bert"
    photos.mkdir(parents=True)
    (photos / "a.png").write_bytes((inputs / "bert" / "a.png").read_bytes())

    def fields(out, arcface):
        cfg = _config(photos.parent, out, arcface)
        assert prep.prepare(cfg, progress=False)["kept"] == 1
        (shard,) = list_shards(out)
        return set(index_shard(shard)[0].fields)

    assert "arcface.npy" in fields(tmp_path / "with", arcface_onnx)
    assert "arcface.npy" not in fields(tmp_path / "without", "")
    loaded = []
    monkeypatch.setattr("comfyui_facesnap.models.face_analysis.load_analyzer",
                        lambda backend, **kw: loaded.append(backend) or backend)
    other = prep.PrepConfig(inputs=[], output=str(tmp_path), backend="insightface")
    assert prep._models(other)["analyzer"] == "insightface" and prep._models(other)["analyzer"] == "insightface"
    assert loaded == ["insightface"]  # loaded once for that configuration
