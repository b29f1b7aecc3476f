#!/usr/bin/env python
"""Does the FaceSnap trainer learn, and does the identity pathway condition the output? (CPU, tiny model)

Data (--data):
  photos     single faces cut from insightface's t1.jpg (real photos), prepared by the real pipeline (dlib landmarks,
             ArcFace from a generated random ONNX model unless --arcface names a real one), several augmented crops each;
  synthetic  drawn faces that share one landmark geometry and one caption and differ only in colour (and in a random
             background per photo), so that nothing but the identity features can tell the people apart.
Model: the tiny SDXL of training/configs/tiny.yaml, made a stand-in for a trained SDXL first:
  1. --codec-minutes: its random VAE is fitted to reconstruct the images, and its latent scale calibrated so that
     images encode to unit-variance latents (SDXL's scale factor assumes its own VAE);
  2. --pretrain-minutes: its UNet is fitted, text-conditioned only, to faces (synthetic: eight *other* people,
     each named in its caption, so that cross-attention learns to read its context; photos: the same four faces
     with the shared caption), then frozen and copied into FFRNet as the trainer does with a real base;
  3. --minutes: the mixer, FFRNet and ID-Injector heads are trained by the real Trainer.
The three phases share the 20-minute budget by default (2.5 + 4 + 13.5).

Reports:
  * the masked diffusion loss on a fixed evaluation set (fixed timesteps and noise) before and after training;
  * identity conditioning: images sampled (DDIM, 10 steps, fixed landmarks and caption) for every identity and four
    seeds; d_identity = mean RMS distance between two identities at the same seed, d_seed = mean distance between
    two seeds of the same identity, over the whole image and over the face mask (``_face``); without guidance and
    with --cfg guidance on the identity features (negative = the mixer's output for zeroed features, as the nodes
    sample). Identity conditions the output where d_identity > d_seed.

    python benchmarks/learning_evidence.py --data synthetic [--comfyui PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
T1_FACES = [(67, 283, 175, 390), (1118, 283, 1226, 390), (870, 67, 999, 196), (724, 367, 832, 474)]


def _cli_module():
    spec = importlib.util.spec_from_file_location("facesnap_train_cli", REPO / "scripts" / "facesnap_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # loads the pack as comfyui_facesnap
    return module


def make_photos(folder: pathlib.Path) -> None:
    import cv2
    import insightface

    t1 = cv2.imread(str(pathlib.Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    for i, (x1, y1, x2, y2) in enumerate(T1_FACES):
        pad = int(0.45 * (x2 - x1))
        crop = t1[max(0, y1 - pad): y2 + pad, max(0, x1 - pad): x2 + pad]
        (folder / f"person{i}").mkdir(parents=True)
        cv2.imwrite(str(folder / f"person{i}" / "a.png"), cv2.resize(crop, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))


def arcface_model(path: str, work: pathlib.Path) -> str:
    if path:
        return path
    from comfyui_facesnap.devkit.onnx_antelopev2 import antelopev2_folder, make_antelopev2

    return str(antelopev2_folder(make_antelopev2(work / "insightface")) / "glintr100.onnx")


def eval_set(trainer, dataset, seed: int = 1234):
    import torch

    from comfyui_facesnap.training.data import collate

    g = torch.Generator().manual_seed(seed)
    batch = collate([dataset[i] for i in range(len(dataset))])
    n = len(dataset)
    t = torch.randint(0, len(trainer.alphas), (n,), generator=g)
    noise = torch.randn((n, 4, trainer.cfg.data.resolution // 8, trainer.cfg.data.resolution // 8), generator=g)
    return batch, t, noise


def eval_loss(trainer, batch, t, noise) -> float:
    import torch

    from comfyui_facesnap.training.losses import latent_mask, masked_diffusion_loss

    with torch.no_grad():
        z0 = trainer.base.codec.encode(batch["pixels"]).float()
        a = trainer.alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        context, pooled = trainer.base.text.encode(batch["caption"])
        y = trainer.base.adm(pooled, *batch["pixels"].shape[-2:])
        clip = trainer.frozen.clip.encode_batch(batch["ref_face"])
        eps = trainer.model(trainer.frozen.unet, z_t, t.float(), context, y, batch["control"], batch["arcface"], clip)
        return float(masked_diffusion_loss(eps, noise, latent_mask(batch["mask"], z0.shape[-2:])))


def sample(trainer, batch, identity: int, seed: int, cfg: float = 1.0, steps: int = 10):
    """DDIM from noise with identity ``identity``'s features but the landmarks and caption of sample 0.

    With ``cfg`` > 1, classifier-free guidance on the identity features, as the nodes sample: the negative is the
    same text and landmarks with the mixer's output for zeroed features (what the 5 % feature dropout trains)."""
    import torch

    from comfyui_facesnap.training.losses import predicted_x0

    res = trainer.cfg.data.resolution
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((1, 4, res // 8, res // 8), generator=g)
    guided = cfg != 1.0
    with torch.no_grad():
        context, pooled = trainer.base.text.encode(["a photo of a person"])
        y = trainer.base.adm(pooled, res, res)
        ids = batch["arcface"][identity: identity + 1]
        clip = trainer.frozen.clip.encode_batch(batch["ref_face"][identity: identity + 1])
        hint = batch["control"][:1]
        if guided:  # [positive, negative] in one batch
            context, y, hint = context.repeat(2, 1, 1), y.repeat(2, 1), hint.repeat(2, 1, 1, 1)
            ids, clip = torch.cat([ids, torch.zeros_like(ids)]), torch.cat([clip, torch.zeros_like(clip)])
        times = torch.linspace(len(trainer.alphas) - 1, 0, steps).round().long()
        for k, tk in enumerate(times):
            z_in = z.repeat(2, 1, 1, 1) if guided else z
            eps = trainer.model(trainer.frozen.unet, z_in, tk.float().repeat(len(z_in)), context, y, hint, ids, clip)
            if guided:
                eps = eps[1:] + cfg * (eps[:1] - eps[1:])
            x0 = predicted_x0(z, eps, trainer.alphas[tk].view(1))
            if k + 1 == len(times):
                break
            a_next = trainer.alphas[times[k + 1]]
            z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return trainer.base.codec.decode(x0)[0]


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
    return {"steps": len(losses), "reconstruction_rmse": rmse, "latent_std": float(latents.std()), "calibration_gain": gain}


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


def identity_distances(trainer, batch, people: list[int], cfg: float = 1.0, seeds=(11, 22, 33, 44)) -> tuple[dict, dict]:
    """RMS pixel distances between decoded samples, over the whole image and over the face mask of sample 0
    (whose landmarks every sample uses; the masked loss never trains the background, which the seed decides).
    Returns (distances, the samples by (person, seed))."""
    import torch.nn.functional as F

    outs = {(p, s): sample(trainer, batch, p, s, cfg) for p in people for s in seeds}
    face = F.interpolate(batch["mask"][:1].float(), size=outs[(people[0], seeds[0])].shape[-2:])[0, 0] > 0.5
    report = {}
    for suffix, region in (("", None), ("_face", face)):
        def dist(a, b, region=region):
            diff = a - b if region is None else (a - b)[:, region]
            return float(diff.pow(2).mean().sqrt())
        d_id = [dist(outs[(p, s)], outs[(q, s)]) for p, q in itertools.combinations(people, 2) for s in seeds]
        d_seed = [dist(outs[(p, s)], outs[(p, r)]) for p in people for s, r in itertools.combinations(seeds, 2)]
        report |= {f"d_identity{suffix}": sum(d_id) / len(d_id), f"d_seed{suffix}": sum(d_seed) / len(d_seed)}
    return report, outs


def save_grid(path: str, batch, people: list[int], samples: dict) -> None:
    """One row per person: their reference face, then their samples at each seed (all with sample 0's landmarks)."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    rows = []
    for p in people:
        own = [image for (person, _), image in samples.items() if person == p]
        reference = F.interpolate(batch["ref_face"][p: p + 1], size=own[0].shape[-2:], mode="area")[0] * 2 - 1
        cells = [reference, *own]
        rows.append(np.concatenate([((c.clamp(-1, 1) + 1) * 127.5).byte().permute(1, 2, 0).numpy() for c in cells], 1))
    Image.fromarray(np.concatenate(rows, 0)).resize((rows[0].shape[1] * 2, len(rows) * rows[0].shape[0] * 2),
                                                  Image.NEAREST).save(path)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_pretraining_data(kind: str, work: pathlib.Path, dataset, resolution: int):
    """What the stand-in base is fitted on. Synthetic: eight other people, each named in its caption, so that
    the base's cross-attention learns to read its context (as SDXL's does) without ever seeing the benchmark's
    people. Photos: the benchmark's own faces (t1.jpg has too few others), with the shared caption."""
    if kind != "synthetic":
        return dataset
    from comfyui_facesnap.training.data import ShardDataset
    from comfyui_facesnap.devkit.synthetic_shards import write_synthetic_shards

    write_synthetic_shards(work / "base_shards", identities=8, per_identity=4, seed=1)
    return ShardDataset(str(work / "base_shards"), resolution)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=13.5, help="FaceSnap training time (mixer + FFRNet)")
    parser.add_argument("--codec-minutes", type=float, default=2.5,
                        help="first fit the random tiny VAE to the images and calibrate its latent scale (0 = calibrate only)")
    parser.add_argument("--pretrain-minutes", type=float, default=4.0,
                        help="then fit the random tiny base UNet, text-conditioned, to other faces (0 = keep it random)")
    parser.add_argument("--comfyui", default="")
    parser.add_argument("--arcface", default="", help="a real ArcFace ONNX (default: a generated random one)")
    parser.add_argument("--crops", type=int, default=4, help="augmented crops per photo")
    parser.add_argument("--data", choices=["photos", "synthetic"], default="photos",
                        help="photos: faces from t1.jpg; synthetic: drawn faces that share one landmark geometry and one "
                             "caption and differ only in appearance, so neither the landmark hint nor the text can stand "
                             "in for the identity features")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this tiny model)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cfg", type=float, default=4.0, help="guidance on the identity features when sampling (1 = none)")
    parser.add_argument("--json", default="", help="also write the figures here")
    parser.add_argument("--grid", default="", help="save the samples (guided with --cfg) as a PNG grid (rows: people; reference, then seeds)")
    args = parser.parse_args()
    cli = _cli_module()
    cli._use_comfyui(args.comfyui)
    import torch

    torch.set_num_threads(args.threads)
    from comfyui_facesnap.training import prepare_dataset as prep
    from comfyui_facesnap.training.config import CONFIG_DIR, load_config
    from comfyui_facesnap.training.data import ShardDataset
    from comfyui_facesnap.training.face_crops import CropConfig
    from comfyui_facesnap.training.train import Trainer

    work = pathlib.Path(tempfile.mkdtemp(prefix="facesnap-learning-"))
    if args.data == "photos":
        make_photos(work / "photos")
        counts = prep.prepare(prep.PrepConfig(
            inputs=[str(work / "photos")], output=str(work / "shards"), identity_from="folder", crops_per_image=args.crops,
            backend="dlib", arcface=arcface_model(args.arcface, work), images_per_shard=100,
            # 256² crops (the model sees 64²) with the face filling 12-35 % of them, not 2-30 %: at 64² a face at 2 %
            # is 9 pixels wide; decoding 1024² JPEGs every step would also dominate the CPU time
            crop=CropConfig(size=256, min_face_fraction=0.12, max_face_fraction=0.35)), progress=False)
    else:
        from comfyui_facesnap.devkit.synthetic_shards import write_synthetic_shards

        write_synthetic_shards(work / "shards", identities=4, per_identity=args.crops, caption="a photo of a person")
        counts = {"synthetic": 4 * args.crops}
    cfg = load_config(CONFIG_DIR / "tiny.yaml", [
        f"data.shards={work / 'shards'}", f"train.output_dir={work / 'run'}", f"data.resolution={args.resolution}",
        "data.batch_size=4", f"train.lr={args.lr}", "train.max_steps=1000000", "train.checkpoint_every=1000000",
        "train.log_every=50", "train.gradient_checkpointing=false"])
    trainer = Trainer(cfg)
    dataset = ShardDataset(cfg.data.shards, cfg.data.resolution)
    base_data = base_pretraining_data(args.data, work, dataset, args.resolution)
    codec = fit_codec(trainer, base_data, args.codec_minutes) if args.codec_minutes > 0 else None
    pretrain = pretrain_base(trainer, base_data, args.pretrain_minutes) if args.pretrain_minutes > 0 else None
    log(f"codec {codec}\nbase {pretrain}")
    batch, t, noise = eval_set(trainer, dataset)
    first_of = {}
    for i in range(len(dataset)):
        first_of.setdefault(batch["identity"][i], i)
    people = list(first_of.values())
    before = {"eval_loss": eval_loss(trainer, batch, t, noise), **identity_distances(trainer, batch, people)[0]}
    start, steps, losses = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        losses += trainer.train(stop_after=100)  # each call ends with a checkpoint: not too often
        steps = trainer.step
        if steps % 1000 == 0:
            log(f"step {steps}: loss (last 100) {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    distances, samples = identity_distances(trainer, batch, people)
    after = {"eval_loss": eval_loss(trainer, batch, t, noise), **distances}
    guided = {}
    if args.cfg != 1.0:
        guided[f"cfg{args.cfg:g}"], samples = identity_distances(trainer, batch, people, args.cfg)
    if args.grid:
        save_grid(args.grid, batch, people, samples)
    report = {
        "data": args.data, "samples": len(dataset), "identities": len(people), "prepare": dict(counts), "codec": codec,
        "base_pretraining": pretrain, "steps": steps, "minutes": round((time.time() - start) / 60, 2), "train_loss_first20": sum(losses[:20]) / max(1, len(losses[:20])),
        "train_loss_last20": sum(losses[-20:]) / max(1, len(losses[-20:])), "before": before, "after": after, **guided,
        "identity_conditions_output": {name: {"image": d["d_identity"] > d["d_seed"], "face": d["d_identity_face"] > d["d_seed_face"]}
                                       for name, d in {"no_guidance": after, **guided}.items()},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
