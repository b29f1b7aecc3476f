#!/usr/bin/env python
"""Does the FaceSnap trainer learn likeness? Identification of generated faces against held-out photos (CPU, tiny model)

Data (--data), K = 4 people each; every person's crops are split by order into --train-crops for training and
--held-out-crops that training never sees (the gallery for identification, and the evaluation loss):
  photos     four faces of insightface's t1.jpg (real photos, one photo per person, so the held-out crops are other
             augmented crops of the same photo), prepared by the real pipeline (dlib landmarks; "ArcFace" from a
             generated random ONNX model unless --arcface names a real one, so the identity features are a fixed
             random projection of the aligned face, not a face-recognition embedding);
  synthetic  drawn faces that share one landmark geometry and one caption and differ only in colour (and in a random
             background per photo), so that nothing but the identity features can tell the people apart.
Model: the tiny SDXL of training/configs/tiny.yaml, made a stand-in for a trained SDXL first, on OTHER people only:
  1. --codec-minutes: its random VAE is fitted to reconstruct the other people's crops and its latent scale
     calibrated so that they encode to unit-variance latents (SDXL's scale factor assumes its own VAE);
  2. --pretrain-minutes: its UNet is fitted, text-conditioned only, to the other people, each named in its caption
     (so that cross-attention learns to read its context), then frozen and copied into FFRNet as the trainer does;
     photos: the other two faces of t1.jpg, Tom_Hanks_54745.png (insightface wheel) and skimage's astronaut;
     synthetic: eight other drawn people;
  3. --minutes: the mixer, FFRNet and ID-Injector heads are trained by the real Trainer on the training crops.
The three phases share the 20-minute budget by default (2.5 + 4 + 13.5).

Samples: DDIM (10 steps, caption "a photo of a person") for every person x --seeds seeds x --drives drive
landmark sets; the drive landmarks are crops of the OTHER people (never of the evaluated ones), the same for everyone,
so the landmark hint cannot tell the people apart. Without guidance and with --cfg guidance on the identity features
only (negative = the mixer's output for zeroed features, as the nodes sample).

Criterion (fixed before any run): each sample is assigned the person whose held-out crops (at the model resolution)
are nearest on average under a fixed metric the model never trained on (evaluation/identification.py):
  dlib    dlib's 128-D face descriptor at the drawn landmarks: the metric of the photos;
  colour  mean RGB inside the landmarks' convex hull: the metric of the synthetic set (its people differ only in
          colour, which dlib's descriptor does not see); it measures colour, not facial features.
Top-1 accuracy vs chance 1/K with an exact one-sided binomial p-value, a Wilson 95 % interval and a K!-gallery
relabelling p-value; "above chance" = both p < 0.05. Beside it, the metric's own ceiling (each real held-out crop
identified among the other held-out crops) and the codec's (the same after a VAE round trip). The masked diffusion
loss on the held-out crops (fixed timesteps and noise) before and after training.

    python benchmarks/learning_evidence.py --data photos [--comfyui PATH] [--json out.json] [--grid out.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import tempfile
import time
from collections import defaultdict

REPO = pathlib.Path(__file__).resolve().parents[1]
CAPTION = "a photo of a person"
# (name, photo, face box x1, y1, x2, y2 or None for the whole photo): the evaluated people and the base's others
T1_FACES = [(67, 283, 175, 390), (1118, 283, 1226, 390), (870, 67, 999, 196), (724, 367, 832, 474)]
EVALUATED_PHOTOS = [(f"person{i}", "t1.jpg", box) for i, box in enumerate(T1_FACES)]
OTHER_PHOTOS = [("other0", "t1.jpg", (450, 295, 557, 402)), ("other1", "t1.jpg", (275, 176, 364, 265)),
                ("other2", "Tom_Hanks_54745.png", None), ("other3", "astronaut", (175, 76, 266, 167))]
PRIMARY_METRIC = {"photos": "dlib", "synthetic": "colour"}
SEEDS = (11, 22, 33, 44, 55, 66, 77, 88)


def _cli_module():
    spec = importlib.util.spec_from_file_location("facesnap_train_cli", REPO / "scripts" / "facesnap_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # loads the pack as comfyui_facesnap
    return module


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def _photo(name: str):
    """RGB uint8: a photo of the insightface wheel, or skimage's astronaut."""
    import cv2

    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    from comfyui_facesnap.devkit.workflow_files import insightface_images

    return cv2.imread(str(insightface_images() / name))[:, :, ::-1]


def make_photos(folder: pathlib.Path, sources, captions: bool = False) -> None:
    """One folder per person with one photo: the face box with a 45 % margin, upscaled 3x (the crops need >= 256
    source pixels). ``captions``: a sidecar caption naming the person ("a photo of person k")."""
    import cv2

    for k, (person, photo, box) in enumerate(sources):
        rgb = _photo(photo)
        if box is None:  # an already tight face photo: widen it with replicated borders
            pad = rgb.shape[0] // 2
            crop = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        else:
            x1, y1, x2, y2 = box
            pad = int(0.45 * (x2 - x1))
            crop = rgb[max(0, y1 - pad): y2 + pad, max(0, x1 - pad): x2 + pad]
        (folder / person).mkdir(parents=True)
        path = folder / person / "a.png"
        cv2.imwrite(str(path), cv2.resize(crop, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)[:, :, ::-1])
        if captions:
            path.with_suffix(".txt").write_text(f"a photo of person {k}")


def split_held_out(source: pathlib.Path, train: pathlib.Path, held_out: pathlib.Path, train_per_identity: int) -> dict:
    """Copy each person's first ``train_per_identity`` samples (in shard order) to ``train``, the rest to
    ``held_out``. The two sets share no crop (checked on the image bytes). Returns {set: {identity: count}}."""
    from comfyui_facesnap.training.shards import SHARD_PATTERN, ShardWriter, index_shard, list_shards

    counts = {"train": defaultdict(int), "held_out": defaultdict(int)}
    images = {"train": set(), "held_out": set()}
    train.mkdir(parents=True, exist_ok=True)
    held_out.mkdir(parents=True, exist_ok=True)
    with ShardWriter(train / SHARD_PATTERN.format(0)) as to_train, \
            ShardWriter(held_out / SHARD_PATTERN.format(0)) as to_held:
        for shard in list_shards(source):
            with open(shard, "rb") as f:
                for ref in index_shard(shard):
                    fields = {}
                    for name, (offset, size) in ref.fields.items():
                        f.seek(offset)
                        fields[name] = f.read(size)
                    identity = json.loads(fields["json"])["identity"]
                    part = "train" if counts["train"][identity] < train_per_identity else "held_out"
                    counts[part][identity] += 1
                    images[part].add(fields["image.jpg"])
                    (to_train if part == "train" else to_held).write(ref.key, fields)
    if images["train"] & images["held_out"]:
        raise AssertionError("a crop is both in the training and the held-out set")
    return {part: dict(c) for part, c in counts.items()}


def arcface_model(path: str, work: pathlib.Path) -> str:
    if path:
        return path
    from comfyui_facesnap.devkit.onnx_antelopev2 import antelopev2_folder, make_antelopev2

    return str(antelopev2_folder(make_antelopev2(work / "insightface")) / "glintr100.onnx")


def prepare_photos(sources, output: pathlib.Path, crops: int, arcface: str, work: pathlib.Path, captions: bool) -> dict:
    from comfyui_facesnap.training import prepare_dataset as prep
    from comfyui_facesnap.training.face_crops import CropConfig

    folder = work / f"photos-{output.name}"
    make_photos(folder, sources, captions)
    return dict(prep.prepare(prep.PrepConfig(
        inputs=[str(folder)], output=str(output), identity_from="folder", crops_per_image=crops, backend="dlib",
        arcface=arcface, images_per_shard=100,
        # 256² crops (the model sees 64²) with the face filling 12-35 % of them, not 2-30 %: at 64² a face at 2 %
        # is 9 pixels wide; decoding 1024² JPEGs every step would also dominate the CPU time
        crop=CropConfig(size=256, min_face_fraction=0.12, max_face_fraction=0.35)), progress=False))


def build_data(kind: str, work: pathlib.Path, train_crops: int, held_out_crops: int, arcface: str) -> dict:
    """Shards: all (every crop of the evaluated people), train, held_out, and base (the other people)."""
    from comfyui_facesnap.devkit.synthetic_shards import write_synthetic_shards

    crops = train_crops + held_out_crops
    if kind == "photos":
        arcface = arcface_model(arcface, work)
        prepared = {"evaluated": prepare_photos(EVALUATED_PHOTOS, work / "all", crops, arcface, work, False),
                    "others": prepare_photos(OTHER_PHOTOS, work / "base", crops, arcface, work, True)}
    else:
        write_synthetic_shards(work / "all", identities=4, per_identity=crops, caption=CAPTION)
        write_synthetic_shards(work / "base", identities=8, per_identity=crops // 2, seed=1)
        prepared = {"evaluated": 4 * crops, "others": 8 * (crops // 2)}
    split = split_held_out(work / "all", work / "train", work / "held_out", train_crops)
    return {"prepared": prepared, "split": split}


def crops_at(root: pathlib.Path, resolution: int) -> list[dict]:
    """Every sample of a shard folder as the model sees it: RGB uint8 at ``resolution``, its landmark hint, and its
    68 landmarks in those pixels."""
    import numpy as np

    from comfyui_facesnap.training.data import ShardDataset
    from comfyui_facesnap.training.shards import read_sample

    dataset = ShardDataset(str(root), resolution)
    out = []
    for i, ref in enumerate(dataset.samples):
        item, meta = dataset[i], read_sample(ref, {"json", "image.jpg"})
        scale = resolution / meta["image.jpg"].shape[0]
        out.append({"rgb": ((item["pixels"].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy(),
                    "control": item["control"], "identity": item["identity"],
                    "landmarks": np.asarray(meta["json"]["landmarks"], np.float64)[:68] * scale})
    return out


# ---------------------------------------------------------------- the stand-in base


def fit_codec(trainer, dataset, minutes: float, lr: float = 1e-3) -> dict:
    """Stand-in for SDXL's trained VAE: fit the tiny autoencoder to reconstruct the faces, then calibrate its latent
    scale so that they encode to unit-variance model latents (what SDXL's scale factor does for its own VAE)."""
    import torch

    from comfyui_facesnap.training.base_model import calibrate_latent_scale_
    from comfyui_facesnap.training.data import collate

    vae = trainer.base.codec.first_stage
    pixels = collate([dataset[i] for i in range(len(dataset))])["pixels"]
    vae.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(7)
    start, losses = time.time(), []
    while time.time() - start < minutes * 60:
        x = pixels[torch.randint(0, len(pixels), (4,), generator=g)]
        x = torch.where(torch.rand((len(x), 1, 1, 1), generator=g) < 0.5, x, x.flip(-1))
        z = vae.encode(x)  # the posterior mean, as LatentCodec.encode (which runs without gradients) uses
        loss = (vae.decode(z) - x).pow(2).mean() + 1e-4 * z.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    vae.requires_grad_(False).eval()
    gain = calibrate_latent_scale_(trainer.base.codec, pixels)
    with torch.no_grad():
        latents = trainer.base.codec.encode(pixels)
        rmse = float((trainer.base.codec.decode(latents) - pixels).pow(2).mean().sqrt())
    return {"steps": len(losses), "reconstruction_rmse": rmse, "latent_std": float(latents.std()),
            "calibration_gain": gain}


def pretrain_base(trainer, dataset, minutes: float, lr: float = 1e-3) -> dict:
    """Stand-in for SDXL's pre-training: fit the tiny base UNet (text-conditioned only) to ``dataset``, then
    freeze it again and copy its encoder into FFRNet, as the trainer does with a real base."""
    import torch

    from comfyui_facesnap.training.data import make_loader
    from comfyui_facesnap.training.ffrnet_init import init_from_unet

    unet = trainer.base.unet
    unet.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
    loader = iter(make_loader(dataset, 4, seed=99, world_size=1, rank=0, start=0, num_workers=0))
    start, losses = time.time(), []
    while time.time() - start < minutes * 60:
        batch = next(loader)
        with torch.no_grad():
            z0 = trainer.base.codec.encode(batch["pixels"]).float()
            context, pooled = trainer.base.text.encode(batch["caption"])
            y = trainer.base.adm(pooled, *batch["pixels"].shape[-2:])
        t = torch.randint(0, len(trainer.alphas), (len(z0),))
        noise = torch.randn_like(z0)
        a = trainer.alphas[t].view(-1, 1, 1, 1)
        eps = unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, timesteps=t.float(), context=context, y=y)
        loss = (eps - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    unet.requires_grad_(False).eval()
    init_from_unet(trainer.ffrnet, unet, trainer.base.unet_config)
    return {"steps": len(losses), "loss_first20": sum(losses[:20]) / max(1, len(losses[:20])),
            "loss_last20": sum(losses[-20:]) / max(1, len(losses[-20:]))}


# ---------------------------------------------------------------- evaluation


def eval_loss(trainer, dataset, seed: int = 1234) -> float:
    """Masked diffusion loss over ``dataset`` at fixed timesteps and noise."""
    import torch

    from comfyui_facesnap.training.data import collate
    from comfyui_facesnap.training.losses import latent_mask, masked_diffusion_loss

    g = torch.Generator().manual_seed(seed)
    batch = collate([dataset[i] for i in range(len(dataset))])
    n, res = len(dataset), trainer.cfg.data.resolution
    t = torch.randint(0, len(trainer.alphas), (n,), generator=g)
    noise = torch.randn((n, 4, res // 8, res // 8), generator=g)
    trainer.model.eval()
    with torch.no_grad():
        z0 = trainer.base.codec.encode(batch["pixels"]).float()
        a = trainer.alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        context, pooled = trainer.base.text.encode(batch["caption"])
        y = trainer.base.adm(pooled, res, res)
        clip = trainer.frozen.clip.encode_batch(batch["ref_face"])
        eps = trainer.model(trainer.frozen.unet, z_t, t.float(), context, y, batch["control"], batch["arcface"], clip)
        return float(masked_diffusion_loss(eps, noise, latent_mask(batch["mask"], z0.shape[-2:])))


def sample(trainer, hints, ids, clip, noise, cfg: float = 1.0, steps: int = 10, chunk: int = 32):
    """DDIM from ``noise`` (B, 4, r, r) with landmark hints (B, 3, R, R), ArcFace (B, 512) and CLIP tokens; the
    caption is CAPTION for all. Returns decoded images in [-1, 1].

    With ``cfg`` > 1, classifier-free guidance on the identity features, as the nodes sample: the negative is the
    same text and landmarks with the mixer's output for zeroed features (what the 5 % feature dropout trains)."""
    import torch

    from comfyui_facesnap.training.losses import predicted_x0

    if len(noise) > chunk:
        return torch.cat([sample(trainer, hints[i: i + chunk], ids[i: i + chunk], clip[i: i + chunk],
                                 noise[i: i + chunk], cfg, steps, chunk) for i in range(0, len(noise), chunk)])
    res, b, guided = hints.shape[-1], len(noise), cfg != 1.0
    trainer.model.eval()
    with torch.no_grad():
        context, pooled = trainer.base.text.encode([CAPTION])
        context, y = context.expand(b, -1, -1), trainer.base.adm(pooled, res, res).expand(b, -1)
        if guided:  # [positives, negatives] in one batch
            context, y, hints = context.repeat(2, 1, 1), y.repeat(2, 1), hints.repeat(2, 1, 1, 1)
            ids, clip = torch.cat([ids, torch.zeros_like(ids)]), torch.cat([clip, torch.zeros_like(clip)])
        z = noise
        times = torch.linspace(len(trainer.alphas) - 1, 0, steps).round().long()
        for k, tk in enumerate(times):
            z_in = z.repeat(2, 1, 1, 1) if guided else z
            eps = trainer.model(trainer.frozen.unet, z_in, tk.float().repeat(len(z_in)), context, y, hints, ids, clip)
            if guided:
                eps = eps[b:] + cfg * (eps[:b] - eps[b:])
            x0 = predicted_x0(z, eps, trainer.alphas[tk].view(1))
            if k + 1 == len(times):
                break
            a_next = trainer.alphas[times[k + 1]]
            z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return trainer.base.codec.decode(x0)


def to_uint8(images):
    """(B, 3, H, W) in [-1, 1] -> list of (H, W, 3) uint8."""
    return list(((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


class Metrics:
    """The fixed metrics (evaluation/identification.py) and the held-out gallery under each."""

    def __init__(self, gallery: list[dict]):
        import numpy as np

        from comfyui_facesnap.evaluation.identification import DlibDescriptor, mean_colour_in_landmarks

        self.functions = {"dlib": DlibDescriptor(), "colour": mean_colour_in_landmarks}
        self.gallery = gallery
        self.labels = [c["identity"] for c in gallery]
        self.names = sorted(set(self.labels))
        self.features = {m: np.stack([f(c["rgb"], c["landmarks"]) for c in gallery]) for m, f in self.functions.items()}

    def features_of(self, images, landmarks) -> dict:
        import numpy as np

        return {m: np.stack([f(image, points) for image, points in zip(images, landmarks, strict=True)])
                for m, f in self.functions.items()}

    def identify(self, truth, images, landmarks) -> dict:
        from comfyui_facesnap.evaluation.identification import identification_summary, identify

        features = self.features_of(images, landmarks)
        return {m: identification_summary(truth, identify(features[m], self.features[m], self.labels), self.names)
                for m in self.functions}

    def ceilings(self, trainer) -> dict:
        """Real held-out crops identified among the other held-out crops (the metric's ceiling), and the same
        crops after a round trip through the stand-in VAE (the codec's ceiling)."""
        import torch

        from comfyui_facesnap.evaluation.identification import identification_summary, identify

        pixels = torch.stack([torch.from_numpy(c["rgb"]).permute(2, 0, 1).float() / 127.5 - 1 for c in self.gallery])
        with torch.no_grad():
            round_trips = to_uint8(trainer.base.codec.decode(trainer.base.codec.encode(pixels)))
        probes = self.features_of(round_trips, [c["landmarks"] for c in self.gallery])
        out = {}
        for m in self.functions:
            real = identify(self.features[m], self.features[m], self.labels, leave_one_out=True)
            codec = identify(probes[m], self.features[m], self.labels, leave_one_out=True)
            out[m] = {"real_held_out": identification_summary(self.labels, real, self.names),
                      "codec_round_trip": identification_summary(self.labels, codec, self.names)}
        return out


def identification(trainer, people: dict, drives: list[dict], metrics: Metrics, cfg: float, seeds) -> tuple[dict, list]:
    """Sample every person x seed x drive; identify each sample. Returns (summaries by metric, samples)."""
    import torch

    res = trainer.cfg.data.resolution
    names = sorted(people)
    noise = {s: torch.randn((1, 4, res // 8, res // 8), generator=torch.Generator().manual_seed(s)) for s in seeds}
    rows = [(p, s, d) for d in range(len(drives)) for p in names for s in seeds]
    images = to_uint8(sample(
        trainer, torch.stack([drives[d]["control"] for _, _, d in rows]),
        torch.stack([people[p]["arcface"] for p, _, _ in rows]), torch.cat([people[p]["clip"] for p, _, _ in rows]),
        torch.cat([noise[s] for _, s, _ in rows]), cfg))
    summary = metrics.identify([p for p, _, _ in rows], images, [drives[d]["landmarks"] for _, _, d in rows])
    return summary, list(zip(rows, images, strict=True))


def reference_features(trainer, train_set) -> dict:
    """Each person's conditioning: the ArcFace feature and CLIP tokens of their first training crop."""
    people = {}
    for i in range(len(train_set)):
        item = train_set[i]
        if item["identity"] not in people:
            people[item["identity"]] = {"arcface": item["arcface"], "ref_face": item["ref_face"],
                                        "clip": trainer.frozen.clip.encode_batch(item["ref_face"][None])}
    return people


def save_grid(path: str, people: dict, drives: list[dict], samples: list, seed: int) -> None:
    """Top row: the drive landmark hints. Then one row per person: their reference face, then their guided samples
    at ``seed`` for each drive."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    by_key = {(p, s, d): image for (p, s, d), image in samples}
    side = drives[0]["control"].shape[-1]
    rows = [np.concatenate([np.full((side, side, 3), 255, np.uint8)]
                           + [(d["control"].permute(1, 2, 0) * 255).byte().numpy() for d in drives], 1)]
    for name in sorted(people):
        face = F.interpolate(people[name]["ref_face"][None], size=(side, side), mode="area")[0]
        cells = [(face.permute(1, 2, 0) * 255).round().byte().numpy()]
        rows.append(np.concatenate(cells + [by_key[(name, seed, d)] for d in range(len(drives))], 1))
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


# ---------------------------------------------------------------- run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["photos", "synthetic"], default="photos")
    parser.add_argument("--minutes", type=float, default=13.5, help="FaceSnap training time (mixer + FFRNet)")
    parser.add_argument("--codec-minutes", type=float, default=2.5,
                        help="first fit the random tiny VAE to the other people and calibrate its latent scale "
                             "(0 = calibrate only)")
    parser.add_argument("--pretrain-minutes", type=float, default=4.0,
                        help="then fit the random tiny base UNet, text-conditioned, to the other people "
                             "(0 = keep it random)")
    parser.add_argument("--comfyui", default="")
    parser.add_argument("--arcface", default="", help="a real ArcFace ONNX (default: a generated random one)")
    parser.add_argument("--train-crops", type=int, default=16, help="augmented training crops per person")
    parser.add_argument("--held-out-crops", type=int, default=8, help="augmented held-out crops per person")
    parser.add_argument("--seeds", type=int, default=8,
                        help=f"sampling seeds per person and drive (at most {len(SEEDS)})")
    parser.add_argument("--drives", type=int, default=4, help="drive landmark sets (crops of the other people)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this tiny model)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cfg", type=float, default=5.0,
                        help="guidance on the identity features (the shipped workflows' KSampler cfg)")
    parser.add_argument("--json", default="", help="also write the figures here")
    parser.add_argument("--grid", default="",
                        help="save guided samples as a PNG grid (rows: people; reference, then drives)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli = _cli_module()
    cli._use_comfyui(args.comfyui)
    import torch

    torch.set_num_threads(args.threads)
    from comfyui_facesnap.training.config import CONFIG_DIR, load_config
    from comfyui_facesnap.training.data import ShardDataset
    from comfyui_facesnap.training.train import Trainer

    began = time.time()
    seeds = SEEDS[: args.seeds]
    work = pathlib.Path(tempfile.mkdtemp(prefix="facesnap-learning-"))
    data = build_data(args.data, work, args.train_crops, args.held_out_crops, args.arcface)
    cfg = load_config(CONFIG_DIR / "tiny.yaml", [
        f"data.shards={work / 'train'}", f"train.output_dir={work / 'run'}", f"data.resolution={args.resolution}",
        "data.batch_size=4", f"train.lr={args.lr}", "train.max_steps=1000000", "train.checkpoint_every=1000000",
        "train.log_every=50", "train.gradient_checkpointing=false"])
    trainer = Trainer(cfg)
    train_set, held_set = (ShardDataset(str(work / name), args.resolution) for name in ("train", "held_out"))
    base_set = ShardDataset(str(work / "base"), args.resolution)
    codec = fit_codec(trainer, base_set, args.codec_minutes) if args.codec_minutes > 0 else None
    pretrain = pretrain_base(trainer, base_set, args.pretrain_minutes) if args.pretrain_minutes > 0 else None
    log(f"codec {codec}\nbase {pretrain}")

    metrics = Metrics(crops_at(work / "held_out", args.resolution))
    base_crops = crops_at(work / "base", args.resolution)
    drives = [next(c for c in base_crops if c["identity"] == name)
              for name in sorted({c["identity"] for c in base_crops})]
    drives = drives[: args.drives]
    people = reference_features(trainer, train_set)
    ceilings = metrics.ceilings(trainer)

    def evaluate() -> tuple[dict, list]:
        out = {"eval_loss_held_out": eval_loss(trainer, held_set), "eval_loss_train": eval_loss(trainer, train_set)}
        out["no_guidance"], _ = identification(trainer, people, drives, metrics, 1.0, seeds)
        out[f"guidance_{args.cfg:g}"], samples = identification(trainer, people, drives, metrics, args.cfg, seeds)
        return out, samples

    before, _ = evaluate()
    log(f"before: held-out loss {before['eval_loss_held_out']:.4f}")
    start, steps, losses = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        losses += trainer.train(stop_after=100)  # each call ends with a checkpoint: not too often
        steps = trainer.step
        if steps % 1000 == 0:
            log(f"step {steps}: loss (last 100) {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    train_minutes = round((time.time() - start) / 60, 2)
    after, samples = evaluate()
    if args.grid:
        save_grid(args.grid, people, drives, samples, seeds[0])
    primary = PRIMARY_METRIC[args.data]
    report = {
        "data": args.data, "settings": vars(args), "identities": len(people), "data_sets": data,
        "samples_per_condition": len(people) * len(seeds) * len(drives),
        "codec": codec, "base_pretraining": pretrain, "steps": steps, "train_minutes": train_minutes,
        "train_loss_first20": sum(losses[:20]) / max(1, len(losses[:20])),
        "train_loss_last20": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "primary_metric": primary, "metric_ceilings": ceilings, "before": before, "after": after,
        "verdict": {condition: after[condition][primary]["above_chance"]
                    for condition in after if "guidance" in condition},
        "total_minutes": round((time.time() - began) / 60, 2),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
