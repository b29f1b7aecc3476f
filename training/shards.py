"""WebDataset-style tar shards: one sample = files sharing a key prefix (``<key>.<field>``).

Fields written by ``prepare_dataset``:

===============  ====================================================================
``image.jpg``    the 1024² (``--size``) augmented crop, RGB
``face.jpg``     the face region of that crop, square, for the CLIP image encoder
``mask.png``     face mask (L, 0/255) used by the masked diffusion loss
``control.png``  the 72-point landmark control image (``models.face_analysis.landmarks72``)
``json``         caption, identity, landmarks (72, 2), bbox, kps5, source, augmentation, and ``arcface_norm``:
                 the norm of the raw ArcFace output (``arcface.npy`` times it is insightface's ``Face.embedding``,
                 which InstantID's Resampler reads)
``arcface.npy``  (512,) float32 L2-normalised ArcFace embedding (when an ArcFace model ran)
``clip.npy``     (257, 1280) float16 CLIP-ViT-H penultimate tokens of ``face.jpg`` (optional)
===============  ====================================================================

A shard becomes visible only when complete: it is written to ``<name>.tmp`` and renamed, so a crash or a full
disk never leaves a half shard that a resumed run would mistake for a finished one.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import tarfile
from dataclasses import dataclass

import numpy as np

SHARD_PATTERN = "shard-{:06d}.tar"


def encode_image(rgb: np.ndarray, ext: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if ext == "jpg":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    else:
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(data)))  # writable, so torch.from_numpy is safe


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_field(name: str, data: bytes):
    if name == "json":
        return json.loads(data.decode("utf-8"))
    if name.endswith(".npy"):
        return decode_npy(data)
    if name.endswith((".jpg", ".png")):
        return decode_image(data)
    return data


class ShardWriter:
    """Writes one shard atomically: ``with ShardWriter(path) as w: w.write(key, {field: bytes})``."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.count = 0
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> "ShardWriter":
        self._file = open(self.tmp_path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        return self

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        if "." in key:
            raise ValueError(f"sample keys must not contain '.': {key!r}")
        for name, data in fields.items():
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(data)
            info.mtime = 0  # byte-identical shards for identical inputs
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._tar.close()
            self._file.flush()
            if exc_type is None:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()
        if exc_type is None:
            os.replace(self.tmp_path, self.path)
        else:
            self.tmp_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's fields lie inside a shard: {field: (offset, size)}."""

    shard: str
    key: str
    fields: dict


def index_shard(path: pathlib.Path) -> list[SampleRef]:
    """Group a shard's members by key, in file order, recording byte offsets for random access."""
    samples: dict[str, dict] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, field = member.name.partition(".")
            samples.setdefault(key, {})[field] = (member.offset_data, member.size)
    return [SampleRef(str(path), key, fields) for key, fields in samples.items()]


def list_shards(root: pathlib.Path) -> list[pathlib.Path]:
    """Finished shards only (``.tmp`` files are partial writes and ignored)."""
    return sorted(pathlib.Path(root).glob("shard-*.tar"))


def require_shards(root: str | pathlib.Path) -> list[pathlib.Path]:
    """``list_shards``, but an empty folder is an error that says what to run."""
    shards = list_shards(pathlib.Path(root))
    if not shards:
        raise FileNotFoundError(f"no finished shards (shard-*.tar) in {root}; run `facesnap_train.py prepare` first")
    return shards


def read_sample(ref: SampleRef, wanted: set[str] | None = None) -> dict:
    out = {"__key__": ref.key}
    with open(ref.shard, "rb") as f:
        for field, (offset, size) in ref.fields.items():
            if wanted is not None and field not in wanted:
                continue
            f.seek(offset)
            out[field] = decode_field(field, f.read(size))
    return out
