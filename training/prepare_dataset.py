"""Dataset preparation: folders of photos -> WebDataset-style tar shards (see ``shards.py`` for the sample fields).

Inputs are listed and de-duplicated (by content hash) identically on every machine, then cut into fixed groups of
``--images-per-shard`` photos, so shard ``i`` always holds the same photos. ``--num-shards N --shard-index k`` makes
this machine do shards ``i % N == k``; ``--workers`` processes run shards in parallel; finished shards are skipped,
so re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing as mp
import os
import pathlib
import queue
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from .face_crops import CropConfig, make_crop
from .images import IMAGE_SUFFIXES, SkipImage, file_digest, load_rgb
from .shards import SHARD_PATTERN, ShardWriter, encode_image, encode_npy

log = logging.getLogger("facesnap.prepare")


@dataclass
class InputImage:
    path: str
    digest: str
    caption: str = ""
    identity: str = ""


@dataclass
class PrepConfig:
    inputs: list[str]
    output: str
    identity_from: str = "none"  # "none" | "folder" (first folder below the input root) | "csv"
    csv_path: str = ""  # columns: path (relative to the input root or absolute), identity, optional caption
    default_caption: str = "a photo of a person"
    images_per_shard: int = 1000
    crops_per_image: int = 1  # the paper's 160k photos -> 800k samples is 5
    num_shards: int = 1  # machines
    shard_index: int = 0
    workers: int = 1
    seed: int = 0
    backend: str = "insightface"
    insightface_root: str = ""
    arcface: str = ""  # ArcFace ONNX used when the detector gives no embedding (dlib)
    clip_vision: str = ""  # CLIP-ViT-H safetensors for precomputed tokens (needs ComfyUI)
    crop: CropConfig = field(default_factory=CropConfig)


# ---------------------------------------------------------------- listing


def _read_csv(path: str) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "path" not in rows[0]:
        raise ValueError(f"{path}: the CSV needs a 'path' column (and 'identity', optionally 'caption')")
    return {row["path"]: row for row in rows}


def list_inputs(cfg: PrepConfig) -> tuple[list[InputImage], list[tuple[str, str]]]:
    """All input photos in a stable order, and the duplicates dropped as (path, reason)."""
    table = _read_csv(cfg.csv_path) if cfg.csv_path else {}
    found: list[InputImage] = []
    for root in map(pathlib.Path, cfg.inputs):
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            rel = path.relative_to(root)
            row = table.get(rel.as_posix()) or table.get(str(path)) or {}
            sidecar = path.with_suffix(".txt")
            caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else row.get("caption", "")
            if cfg.identity_from == "folder":
                identity = rel.parts[0] if len(rel.parts) > 1 else ""
            elif cfg.identity_from == "csv":
                identity = row.get("identity", "")
            else:
                identity = ""
            found.append(InputImage(str(path), file_digest(path), caption or cfg.default_caption, identity))
    unique, dropped, seen = [], [], {}
    for item in found:
        if item.digest in seen:
            dropped.append((item.path, f"duplicate of {seen[item.digest]}"))
        else:
            seen[item.digest] = item.path
            unique.append(item)
    return unique, dropped


def plan_shards(images: list[InputImage], cfg: PrepConfig) -> dict[int, list[InputImage]]:
    n = cfg.images_per_shard
    shards = {i // n: images[i : i + n] for i in range(0, len(images), n)}
    return {i: group for i, group in shards.items() if i % cfg.num_shards == cfg.shard_index}


# ---------------------------------------------------------------- per-process face models

_MODELS: dict = {}  # this process's face models: {"key": model_key(cfg), "models": {...}}


def model_key(cfg: PrepConfig) -> tuple:
    """The settings that decide which models a preparation loads."""
    return cfg.backend, cfg.insightface_root, cfg.arcface, cfg.clip_vision


def _models(cfg: PrepConfig) -> dict:
    """The models for ``cfg``, loaded once per process (workers reuse them across shards). A later prepare() in the
    same process with other model settings loads its own and releases the previous ones."""
    key = model_key(cfg)
    if _MODELS.get("key") == key:
        return _MODELS["models"]
    _MODELS.clear()
    from ..models.face_analysis import load_analyzer

    kwargs = {"backend": cfg.backend, "provider": "CPU"}
    if cfg.insightface_root:
        kwargs["insightface_root"] = cfg.insightface_root
    models = {"analyzer": load_analyzer(**kwargs)}
    if cfg.arcface:
        from .arcface_onnx import ArcFaceEmbedder

        models["arcface"] = ArcFaceEmbedder(cfg.arcface)
    if cfg.clip_vision:
        from .clip_tokens import ClipTokenEncoder

        models["clip"] = ClipTokenEncoder(cfg.clip_vision)
    _MODELS.update(key=key, models=models)
    return models


def process_image(item: InputImage, cfg: PrepConfig, models: dict) -> list[tuple[str, dict[str, bytes]]]:
    """The samples (key, fields) of one photo, or ``SkipImage``."""
    from ..models.face_analysis.landmarks72 import draw_control_image

    rgb = load_rgb(pathlib.Path(item.path))
    faces = models["analyzer"].detect(rgb, with_embedding=cfg.backend == "insightface")
    if not faces:
        raise SkipImage("no face")
    if len(faces) > 1:
        raise SkipImage("several faces", f"{len(faces)} faces")
    face = faces[0]
    embedding, norm = face.embedding, face.embedding_norm
    if embedding is None and "arcface" in models:
        embedding, norm = models["arcface"].embed(rgb, face.kps5)
    rng = np.random.default_rng([cfg.seed, int(item.digest[:12], 16)])
    samples, skipped = [], None
    for k in range(cfg.crops_per_image):
        try:  # the random shift can push one crop's photo coverage under the limit while others pass
            crop = make_crop(rgb, face.bbox, face.landmarks, face.kps5, cfg.crop, rng)
        except SkipImage as skip:
            skipped = skip
            continue
        meta = {
            "caption": item.caption,
            "identity": item.identity,
            "source": item.path,
            "landmarks": crop.landmarks.round(3).tolist(),
            "kps5": crop.kps5.round(3).tolist(),
            "face_kps5": crop.face_kps5.round(3).tolist(),
            "bbox": crop.bbox.round(3).tolist(),
            "matrix": crop.matrix.tolist(),
            "face_fraction": round(crop.face_fraction, 5),
            "rotation": round(crop.rotation, 3),
            "backend": face.backend,
        }
        if norm is not None:  # the raw embedding is arcface.npy * arcface_norm (InstantID's Resampler reads it)
            meta["arcface_norm"] = float(norm)
        fields = {
            "image.jpg": encode_image(crop.image, "jpg"),
            "face.jpg": encode_image(crop.face, "jpg"),
            "mask.png": encode_image(crop.mask, "png"),
            "control.png": encode_image(draw_control_image(crop.landmarks, cfg.crop.size, cfg.crop.size), "png"),
            "json": json.dumps(meta).encode("utf-8"),
        }
        if embedding is not None:
            fields["arcface.npy"] = encode_npy(np.asarray(embedding, np.float32))
        if "clip" in models:
            fields["clip.npy"] = encode_npy(models["clip"].encode(crop.face).astype(np.float16))
        samples.append((f"{item.digest[:16]}-{k}", fields))
    if not samples:
        raise skipped
    return samples


def write_shard(shard_id: int, items: list[InputImage], cfg: PrepConfig, events=None) -> Counter:
    """Build one shard (atomically) plus its report of kept and dropped photos."""
    out = pathlib.Path(cfg.output)
    models = _models(cfg)
    counts: Counter = Counter()
    report = {"kept": [], "dropped": []}
    with ShardWriter(out / SHARD_PATTERN.format(shard_id)) as writer:
        for item in items:
            try:
                for key, fields in process_image(item, cfg, models):
                    writer.write(key, fields)
                outcome = "kept"
                report["kept"].append(item.path)
            except SkipImage as skip:
                outcome = skip.reason
                report["dropped"].append({"path": item.path, "reason": skip.reason, "detail": skip.detail})
                log.warning("dropped %s: %s", item.path, skip)
            counts[outcome] += 1
            if events is not None:
                events.put(outcome)
    report_path = out / SHARD_PATTERN.format(shard_id).replace(".tar", ".report.json")
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, report_path)
    return counts


def _worker(args):
    shard_id, items, cfg, events = args
    return write_shard(shard_id, items, cfg, events)


def _mp_context():
    # fork keeps the pack (registered in sys.modules by pack_import) importable in the children.
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def prepare(cfg: PrepConfig, progress: bool = True) -> Counter:
    """Run (or resume) this machine's share of the dataset. Returns counts of kept photos and drop reasons."""
    from tqdm import tqdm

    out = pathlib.Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.backend == "dlib" and not cfg.arcface:
        log.warning("dlib gives no ArcFace embedding and --arcface is not set: samples will have no identity embedding")
    images, duplicates = list_inputs(cfg)
    totals: Counter = Counter()
    for path, reason in duplicates:
        log.warning("dropped %s: %s", path, reason)
        totals["duplicate"] += 1
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    planned = plan_shards(images, cfg)
    todo = {i: group for i, group in planned.items() if not (out / SHARD_PATTERN.format(i)).exists()}
    done_images = sum(len(g) for i, g in planned.items() if i not in todo)
    bar = tqdm(total=sum(len(g) for g in planned.values()), initial=done_images, disable=not progress, unit="img",
               desc="prepare")
    if cfg.workers <= 1:
        for shard_id, items in todo.items():
            counts = write_shard(shard_id, items, cfg)
            totals.update(counts)
            bar.update(sum(counts.values()))
            bar.set_postfix(dict(totals))
    else:
        ctx = _mp_context()
        events = ctx.Manager().Queue()
        with ctx.Pool(cfg.workers) as pool:
            result = pool.map_async(_worker, [(i, g, cfg, events) for i, g in todo.items()])
            while not (result.ready() and events.empty()):
                try:
                    outcome = events.get(timeout=0.2)
                except queue.Empty:
                    continue
                totals[outcome] += 1
                bar.update(1)
                bar.set_postfix(dict(totals))
            result.get()  # re-raises a worker's crash
    bar.close()
    return totals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PrepConfig(inputs=[], output="")
    c = CropConfig()
    parser.add_argument("inputs", nargs="+", help="folders of photos (sub-folders are searched)")
    parser.add_argument("--output", required=True, help="folder for shard-NNNNNN.tar files")
    parser.add_argument("--identity-from", choices=["none", "folder", "csv"], default=d.identity_from)
    parser.add_argument("--csv", dest="csv_path", default="", help="CSV with path, identity[, caption] columns")
    parser.add_argument("--default-caption", default=d.default_caption,
                        help="caption when no <image>.txt sidecar exists")
    parser.add_argument("--images-per-shard", type=int, default=d.images_per_shard)
    parser.add_argument("--crops-per-image", type=int, default=d.crops_per_image,
                        help="augmented crops per photo (paper: 5)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of machines sharing the work")
    parser.add_argument("--shard-index", type=int, default=0, help="this machine's index in [0, num-shards)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["insightface", "dlib"], default=d.backend)
    parser.add_argument("--insightface-root", default="", help="folder holding models/antelopev2")
    parser.add_argument("--arcface", default="",
                        help="ArcFace ONNX (e.g. antelopev2/glintr100.onnx) for the dlib backend")
    parser.add_argument("--clip-vision", default="",
                        help="CLIP-ViT-H/14 safetensors: precompute the 257x1280 face tokens")
    parser.add_argument("--size", type=int, default=c.size)
    parser.add_argument("--max-rotation", type=float, default=c.max_rotation)
    parser.add_argument("--pad-mode", choices=sorted(["reflect", "edge", "constant"]), default=c.pad_mode)


def config_from_args(args: argparse.Namespace) -> PrepConfig:
    if not 0 <= args.shard_index < args.num_shards:
        raise SystemExit(f"--shard-index must be in [0, {args.num_shards})")
    crop = CropConfig(size=args.size, max_rotation=args.max_rotation, pad_mode=args.pad_mode)
    return PrepConfig(
        inputs=args.inputs, output=args.output, identity_from=args.identity_from, csv_path=args.csv_path,
        default_caption=args.default_caption, images_per_shard=args.images_per_shard,
        crops_per_image=args.crops_per_image, num_shards=args.num_shards, shard_index=args.shard_index,
        workers=args.workers, seed=args.seed, backend=args.backend,
        insightface_root=args.insightface_root, arcface=args.arcface, clip_vision=args.clip_vision, crop=crop,
    )
