"""Diff-PC's ID verification: k-means per person, photos far from the main cluster are left out of training."""

import json

import numpy as np
import pytest

from comfyui_facesnap.training.data import ShardDataset
from comfyui_facesnap.training.identity_verification import (
    VERIFICATION_FILE,
    representative,
    spherical_kmeans,
    verify,
    verify_shards,
)
from comfyui_facesnap.training.shards import SHARD_PATTERN, ShardWriter, index_shard, read_sample
from training_fixtures import write_synthetic_shards

pytestmark = pytest.mark.usefixtures("single_thread")


def _near(centre: np.ndarray, count: int, spread: float, rng) -> list[np.ndarray]:
    out = centre + spread * rng.normal(size=(count, centre.size))
    return list(out / np.linalg.norm(out, axis=1, keepdims=True))


def test_kmeans_finds_the_majority_person():
    rng = np.random.default_rng(0)
    anna, bert = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 512)))
    embeddings = np.stack(_near(anna, 6, 0.02, rng) + _near(bert, 3, 0.02, rng))
    labels, centres = spherical_kmeans(embeddings, 2, seed=3)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    assert float(representative(embeddings, 2) @ anna) > 0.97  # the largest cluster, not the mean of all
    assert float(embeddings.mean(0) / np.linalg.norm(embeddings.mean(0)) @ anna) < 0.9


def test_verify_rejects_intruders_and_keeps_small_identities_unverified():
    rng = np.random.default_rng(1)
    anna, bert, carl = (v / np.linalg.norm(v) for v in rng.normal(size=(3, 512)))
    samples = [(f"a{i}", "anna", e) for i, e in enumerate(_near(anna, 5, 0.02, rng))]
    samples += [("intruder", "anna", _near(bert, 1, 0.02, rng)[0])]
    samples += [(f"c{i}", "carl", e) for i, e in enumerate(_near(carl, 2, 0.02, rng))]
    report = verify(samples, threshold=0.7)
    assert set(report["rejected"]) == {"intruder"}
    assert report["rejected"]["intruder"]["similarity"] < 0.2
    assert report["identities"]["anna"] == {"samples": 6, "rejected": 1, "verified": True}
    assert report["identities"]["carl"]["verified"] is False


def _raw_fields(ref) -> dict[str, bytes]:
    with open(ref.shard, "rb") as f:
        return {name: (f.seek(offset), f.read(size))[1] for name, (offset, size) in ref.fields.items()}


def test_rejected_samples_are_left_out_of_training(tmp_path):
    shards = write_synthetic_shards(tmp_path / "shards", identities=2, per_identity=4)
    # a photo of person 1 filed under person 0: a wrong search hit in person 0's folder
    wrong = next(ref for ref in index_shard(shards / SHARD_PATTERN.format(0)) if ref.key.startswith("p1"))
    fields = _raw_fields(wrong)
    fields["json"] = json.dumps(dict(read_sample(wrong, {"json"})["json"], identity="id0")).encode()
    with ShardWriter(shards / SHARD_PATTERN.format(1)) as writer:
        writer.write("wronghit", fields)
    assert len(ShardDataset(str(shards), 64)) == 9

    report = verify_shards(shards, threshold=0.7)
    assert list(report["rejected"]) == [f"{SHARD_PATTERN.format(1)}/wronghit"]
    assert (shards / VERIFICATION_FILE).is_file() and report["checked"] == 9
    dataset = ShardDataset(str(shards), 64)
    assert len(dataset) == 8 and "wronghit" not in {dataset[i]["key"] for i in range(len(dataset))}

    verify_shards(shards, threshold=1.01)  # nothing can pass
    with pytest.raises(ValueError, match="lower threshold"):
        ShardDataset(str(shards), 64)


def test_detection_gate_finds_the_face_in_a_real_photo_and_none_in_a_blank(insightface_images):
    """Diff-PC's M_det on the ID loss, with the dlib detector on Tom Hanks' photo and on a flat grey image."""
    import cv2
    import torch

    from comfyui_facesnap.models.face_analysis import load_analyzer
    from comfyui_facesnap.training.losses import detection_gate

    rgb = cv2.cvtColor(cv2.imread(str(insightface_images / "Tom_Hanks_54745.png")), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
    photo = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1
    images = torch.stack([photo, torch.zeros_like(photo)])
    analyzer = load_analyzer("dlib")
    gate, kps = detection_gate(analyzer, images)
    assert gate.tolist() == [1.0, 0.0]
    direct = max(analyzer.detect(rgb, with_embedding=False), key=lambda f: f.area)
    assert np.abs(kps[0].numpy() - direct.kps5).max() < 1.0 and not kps[1].any()
