#!/usr/bin/env python
"""Does the FaceSnap trainer learn, and does the identity pathway condition the output? (CPU, tiny model)

Data: single faces cut from insightface's t1.jpg (real photos), prepared by the real pipeline (dlib landmarks,
ArcFace from a generated random ONNX model unless --arcface names a real one), several augmented crops each.
Model: the tiny SDXL of training/configs/tiny.yaml. Its random UNet is first fitted to the same faces for
--pretrain-minutes (a stand-in for SDXL's pre-training; frozen afterwards), then the mixer and FFRNet are
trained for --minutes.

Reports:
  * the masked diffusion loss on a fixed evaluation set (fixed timesteps and noise) before and after training;
  * identity conditioning: images sampled (DDIM, fixed landmarks and caption) for every identity and two seeds;
    d_identity = mean distance between two identities at the same seed, d_seed = mean distance between two
    seeds of the same identity. Identity conditions the output when d_identity > d_seed.

    python benchmarks/learning_evidence.py --minutes 20 [--comfyui PATH] [--json out.json]
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
    sys.path.insert(0, str(REPO / "tests"))
    from onnx_fixtures import antelopev2_folder, make_antelopev2

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


def sample(trainer, batch, identity: int, seed: int, steps: int = 10):
    """DDIM from noise with identity ``identity``'s features but the landmarks and caption of sample 0."""
    import torch

    from comfyui_facesnap.training.losses import predicted_x0

    res = trainer.cfg.data.resolution
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((1, 4, res // 8, res // 8), generator=g)
    with torch.no_grad():
        context, pooled = trainer.base.text.encode(["a photo of a person"])
        y = trainer.base.adm(pooled, res, res)
        ids = batch["arcface"][identity: identity + 1]
        clip = trainer.frozen.clip.encode_batch(batch["ref_face"][identity: identity + 1])
        hint = batch["control"][:1]
        times = torch.linspace(len(trainer.alphas) - 1, 0, steps).round().long()
        for k, tk in enumerate(times):
            eps = trainer.model(trainer.frozen.unet, z, tk.float().view(1), context, y, hint, ids, clip)
            x0 = predicted_x0(z, eps, trainer.alphas[tk].view(1))
            if k + 1 == len(times):
                break
            a_next = trainer.alphas[times[k + 1]]
            z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return trainer.base.codec.decode(x0)[0]


def pretrain_base(trainer, dataset, minutes: float, lr: float = 1e-3) -> dict:
    """Stand-in for SDXL's pre-training: fit the tiny base UNet (text-conditioned only) to the same faces, then
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


def identity_distances(trainer, batch, people: list[int], seeds=(11, 22)) -> dict:
    """RMS pixel distances between decoded samples, over the whole image and over the face mask of sample 0
    (whose landmarks every sample uses; the masked loss never trains the background, which the seed decides)."""
    import torch.nn.functional as F

    outs = {(p, s): sample(trainer, batch, p, s) for p in people for s in seeds}
    face = F.interpolate(batch["mask"][:1].float(), size=outs[(people[0], seeds[0])].shape[-2:])[0, 0] > 0.5
    report = {}
    for suffix, region in (("", None), ("_face", face)):
        def dist(a, b, region=region):
            diff = a - b if region is None else (a - b)[:, region]
            return float(diff.pow(2).mean().sqrt())
        d_id = [dist(outs[(p, s)], outs[(q, s)]) for p, q in itertools.combinations(people, 2) for s in seeds]
        d_seed = [dist(outs[(p, seeds[0])], outs[(p, seeds[1])]) for p in people]
        report |= {f"d_identity{suffix}": sum(d_id) / len(d_id), f"d_seed{suffix}": sum(d_seed) / len(d_seed)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="FaceSnap training time (with --pretrain-minutes <= 20)")
    parser.add_argument("--pretrain-minutes", type=float, default=5.0,
                        help="first fit the random tiny base UNet to the faces (0 = keep it random)")
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
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args()
    cli = _cli_module()
    cli._use_comfyui(args.comfyui)
    import torch

    torch.set_num_threads(args.threads)
    from comfyui_facesnap.training import prepare_dataset as prep
    from comfyui_facesnap.training.config import CONFIG_DIR, load_config
    from comfyui_facesnap.training.data import ShardDataset
    from comfyui_facesnap.training.train import Trainer

    work = pathlib.Path(tempfile.mkdtemp(prefix="facesnap-learning-"))
    if args.data == "photos":
        make_photos(work / "photos")
        counts = prep.prepare(prep.PrepConfig(
            inputs=[str(work / "photos")], output=str(work / "shards"), identity_from="folder", crops_per_image=args.crops,
            backend="dlib", arcface=arcface_model(args.arcface, work), images_per_shard=100), progress=False)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from training_fixtures import write_synthetic_shards

        write_synthetic_shards(work / "shards", identities=4, per_identity=args.crops, caption="a photo of a person")
        counts = {"synthetic": 4 * args.crops}
    cfg = load_config(CONFIG_DIR / "tiny.yaml", [
        f"data.shards={work / 'shards'}", f"train.output_dir={work / 'run'}", f"data.resolution={args.resolution}",
        "data.batch_size=4", f"train.lr={args.lr}", "train.max_steps=1000000", "train.checkpoint_every=1000000",
        "train.log_every=50", "train.gradient_checkpointing=false"])
    trainer = Trainer(cfg)
    dataset = ShardDataset(cfg.data.shards, cfg.data.resolution)
    pretrain = pretrain_base(trainer, dataset, args.pretrain_minutes) if args.pretrain_minutes > 0 else None
    batch, t, noise = eval_set(trainer, dataset)
    first_of = {}
    for i in range(len(dataset)):
        first_of.setdefault(batch["identity"][i], i)
    people = list(first_of.values())
    before = {"eval_loss": eval_loss(trainer, batch, t, noise), **identity_distances(trainer, batch, people)}
    start, steps, losses = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        losses += trainer.train(stop_after=20)
        steps = trainer.step
    after = {"eval_loss": eval_loss(trainer, batch, t, noise), **identity_distances(trainer, batch, people)}
    report = {
        "data": args.data, "samples": len(dataset), "identities": len(people), "prepare": dict(counts), "base_pretraining": pretrain,
        "steps": steps,
        "minutes": round((time.time() - start) / 60, 2), "train_loss_first20": sum(losses[:20]) / max(1, len(losses[:20])),
        "train_loss_last20": sum(losses[-20:]) / max(1, len(losses[-20:])), "before": before, "after": after,
        "identity_conditions_output": after["d_identity"] > after["d_seed"],
    }
    print(json.dumps(report, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
