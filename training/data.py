"""Reading prepared shards for training, in a deterministic order that a resumed run continues exactly.

The order is a pure function of (seed, position): epoch ``e`` is ``randperm(n, seed + e)``, every micro-batch
takes the next ``world_size * batch_size`` indices and each rank its own slice. Resuming at micro-batch ``k``
therefore needs nothing but ``k``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch

from .identity_verification import VERIFICATION_FILE, rejected_ids, sample_id
from .shards import index_shard, read_sample, require_shards

FIELDS = {"image.jpg", "mask.png", "control.png", "face.jpg", "json", "arcface.npy", "clip.npy"}


class ShardDataset(torch.utils.data.Dataset):
    def __init__(self, root: str, resolution: int, reference: str = "self", seed: int = 0):
        shards = require_shards(root)
        rejected = rejected_ids(root)  # Diff-PC's ID verification, when `facesnap_train.py verify-ids` ran
        self.samples = [ref for shard in shards for ref in index_shard(shard)
                        if sample_id(shard, ref.key) not in rejected]
        if not self.samples:
            raise ValueError(f"every sample in {root} was rejected by {VERIFICATION_FILE}; "
                             "re-run verify-ids with a lower threshold")
        self.resolution = resolution
        self.reference = reference
        self.seed = seed
        self.by_identity: dict[str, list[int]] = defaultdict(list)
        if reference == "identity":
            for i, ref in enumerate(self.samples):
                identity = read_sample(ref, {"json"})["json"].get("identity", "")
                if identity:
                    self.by_identity[identity].append(i)
        elif reference != "self":
            raise ValueError(f"data.reference must be self or identity, not {reference!r}")

    def __len__(self) -> int:
        return len(self.samples)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if image.shape[0] == self.resolution:
            return image
        return cv2.resize(image, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA)

    def _reference_index(self, index: int, identity: str) -> int:
        """Diff-PC's pairs: another photo of the same person, chosen reproducibly; itself when it is alone."""
        pool = [i for i in self.by_identity.get(identity, []) if self.samples[i].fields.keys() >= {"arcface.npy"}]
        others = [i for i in pool if i != index]
        if not others:
            return index
        digest = hashlib.sha1(f"{self.seed}:{index}".encode()).digest()
        return others[int.from_bytes(digest[:4], "little") % len(others)]

    def __getitem__(self, index: int) -> dict:
        s = read_sample(self.samples[index], FIELDS)
        meta = s["json"]
        size = s["image.jpg"].shape[0]
        scale = self.resolution / size
        ref, ref_meta = s, meta
        if self.reference == "identity" and meta.get("identity"):
            ref_index = self._reference_index(index, meta["identity"])
            if ref_index != index:
                ref = read_sample(self.samples[ref_index], {"face.jpg", "arcface.npy", "clip.npy", "json"})
                ref_meta = ref["json"]
        item = {
            "pixels": torch.from_numpy(self._resize(s["image.jpg"])).permute(2, 0, 1).float() / 127.5 - 1.0,
            "mask": torch.from_numpy(self._resize(s["mask.png"])).float()[None] / 255.0,
            "control": torch.from_numpy(self._resize(s["control.png"])).permute(2, 0, 1).float() / 255.0,
            "target_face": torch.from_numpy(s["face.jpg"]).permute(2, 0, 1).float() / 255.0,
            "ref_face": torch.from_numpy(ref["face.jpg"]).permute(2, 0, 1).float() / 255.0,
            "kps5": torch.tensor(meta["kps5"], dtype=torch.float32) * scale,
            "ref_face_kps5": torch.tensor(ref_meta["face_kps5"], dtype=torch.float32),
            "bbox": torch.tensor(meta["bbox"], dtype=torch.float32) * scale,
            "caption": meta.get("caption", ""),
            "identity": meta.get("identity", ""),
            "key": s["__key__"],
        }
        arcface = ref.get("arcface.npy")
        item["has_arcface"] = arcface is not None
        item["arcface"] = torch.from_numpy(arcface).float() if arcface is not None else torch.zeros(512)
        # the raw embedding's norm (for InstantID's Resampler); 0 in shards prepared before it was stored
        item["arcface_norm"] = torch.tensor(float(ref_meta.get("arcface_norm", 0.0)) if arcface is not None else 0.0)
        if "clip.npy" in ref:
            item["clip"] = torch.from_numpy(ref["clip.npy"].astype(np.float32))
        return item


def collate(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], bool):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    if "clip" in out and len(out["clip"]) != len(items):
        raise ValueError("some samples have precomputed CLIP tokens and some do not; re-run prepare with --clip-vision")
    return out


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Endless batches of this rank's indices, starting at global micro-batch ``start``."""

    def __init__(self, size: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0, start: int = 0):
        if size < batch_size * world_size:
            raise ValueError(f"the dataset has {size} samples, fewer than one global batch "
                             f"({batch_size} x {world_size})")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.world_size, self.rank, self.start = world_size, rank, start

    def _epoch(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        per_epoch = self.size // global_batch  # the tail of each epoch is dropped so every batch is full
        step = self.start
        while True:
            epoch, within = divmod(step, per_epoch)
            order = self._epoch(epoch)
            begin = within * global_batch + self.rank * self.batch_size
            yield order[begin : begin + self.batch_size]
            step += 1


def make_loader(dataset: ShardDataset, batch_size: int, seed: int, world_size: int, rank: int, start: int,
                num_workers: int):
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, world_size, rank, start)
    # An own generator: creating the iterator must not draw from the global RNG, or a resumed run would diverge.
    generator = torch.Generator().manual_seed(seed + rank)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, generator=generator)
