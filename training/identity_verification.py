"""Diff-PC's ID verification (§4.6): keep only the photos of a person that really show that person.

Per identity, the ArcFace embeddings are clustered with k-means; the centre of the largest cluster is the
person's representative embedding, and samples whose cosine similarity to it is at most ``threshold`` (0.7 in the
paper) are rejected. Web-scraped folders often hold other people (co-stars, wrong search hits): they form the
smaller clusters.

The result is a file beside the shards, ``identity_verification.json``; ``ShardDataset`` leaves out the samples it
rejects. Shards are never rewritten, so the step can be re-run with another threshold.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict

import numpy as np

from .shards import index_shard, read_sample, require_shards

VERIFICATION_FILE = "identity_verification.json"


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def spherical_kmeans(embeddings: np.ndarray, clusters: int, seed: int = 0,
                     iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """k-means on the unit sphere (cosine similarity), k-means++ seeding. Returns (labels (N,), centres (k, D))."""
    x = _normalise(np.asarray(embeddings, dtype=np.float64))
    k = max(1, min(clusters, len(x)))
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    while len(centres) < k:
        distance = np.clip(1.0 - (x @ np.stack(centres).T).max(1), 0.0, None)
        if distance.sum() <= 0:
            break  # fewer distinct points than clusters
        centres.append(x[rng.choice(len(x), p=distance / distance.sum())])
    centres = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new_labels = (x @ centres.T).argmax(1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        centres = np.stack([_normalise(x[labels == c].mean(0)) if (labels == c).any() else centres[c]
                            for c in range(len(centres))])
    return labels, centres


def representative(embeddings: np.ndarray, clusters: int = 3, seed: int = 0) -> np.ndarray:
    """The centre of the largest k-means cluster (ties: the lowest cluster index)."""
    labels, centres = spherical_kmeans(embeddings, clusters, seed)
    return centres[np.bincount(labels, minlength=len(centres)).argmax()]


def verify(samples: list[tuple[str, str, np.ndarray]], threshold: float = 0.7, clusters: int = 3,
           seed: int = 0) -> dict:
    """``samples``: (sample id, identity, embedding). Returns {"rejected": {id: {...}}, "identities": {...}}.

    Identities with fewer than 3 embedded samples cannot form a majority and are kept unverified."""
    by_identity: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for sample_id, identity, embedding in samples:
        by_identity[identity].append((sample_id, embedding))
    rejected, summary = {}, {}
    for identity, members in sorted(by_identity.items()):
        if len(members) < 3:
            summary[identity] = {"samples": len(members), "rejected": 0, "verified": False}
            continue
        embeddings = _normalise(np.stack([e for _, e in members]).astype(np.float64))
        centre = representative(embeddings, clusters, seed)
        similarity = embeddings @ centre
        outliers = similarity <= threshold
        for (sample_id, _), s, out in zip(members, similarity, outliers, strict=True):
            if out:
                rejected[sample_id] = {"identity": identity, "similarity": round(float(s), 4)}
        summary[identity] = {"samples": len(members), "rejected": int(outliers.sum()), "verified": True}
    return {"rejected": rejected, "identities": summary}


def sample_id(shard: str | pathlib.Path, key: str) -> str:
    return f"{pathlib.Path(shard).name}/{key}"


def verify_shards(root: str | pathlib.Path, threshold: float = 0.7, clusters: int = 3, seed: int = 0) -> dict:
    """Run the verification over every finished shard in ``root`` and write ``identity_verification.json`` there."""
    root = pathlib.Path(root)
    samples, unlabelled = [], 0
    for shard in require_shards(root):
        for ref in index_shard(shard):
            s = read_sample(ref, {"json", "arcface.npy"})
            identity = s["json"].get("identity", "")
            if not identity or "arcface.npy" not in s:
                unlabelled += 1
                continue
            samples.append((sample_id(shard, ref.key), identity, s["arcface.npy"]))
    report = verify(samples, threshold, clusters, seed)
    report |= {"threshold": threshold, "clusters": clusters, "checked": len(samples), "not_checked": unlabelled}
    tmp = root / (VERIFICATION_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(root / VERIFICATION_FILE)
    return report


def rejected_ids(root: str | pathlib.Path) -> set[str]:
    path = pathlib.Path(root) / VERIFICATION_FILE
    if not path.is_file():
        return set()
    return set(json.loads(path.read_text())["rejected"])
