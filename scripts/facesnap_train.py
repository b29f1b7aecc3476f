#!/usr/bin/env python
"""FaceSnap training CLI: ``prepare`` (photos -> shards), ``verify-ids`` (Diff-PC's ID verification), ``train``
(accelerate), ``export`` (-> FaceSnap weights).

Run from the repository root (it finds ComfyUI through --comfyui or $COMFYUI_PATH, needed by ``train``):

    python scripts/facesnap_train.py prepare photos/ --output data/shards --identity-from folder
    python scripts/facesnap_train.py verify-ids data/shards
    accelerate launch scripts/facesnap_train.py train --config my.yaml
    python scripts/facesnap_train.py export runs/facesnap --output models/facesnap/my_facesnap.safetensors
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_pack():
    # The pack root may only be on sys.path long enough to import pack_import: its nodes/ would shadow ComfyUI's.
    sys.path.insert(0, str(REPO_ROOT))
    try:
        import pack_import
    finally:
        sys.path.remove(str(REPO_ROOT))
    return pack_import.load_pack()


def _use_comfyui(path: str) -> None:
    from comfyui_facesnap.comfy_glue.boot import ComfyUINotFound, boot

    try:
        boot(path or None)
    except ComfyUINotFound as err:
        raise SystemExit(str(err)) from None


# Imported at module level so that spawned prepare workers (macOS/Windows) can unpickle pack functions.
_load_pack()


def main(argv: list[str] | None = None) -> int:
    from comfyui_facesnap.training import prepare_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", default="", help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="photos -> WebDataset tar shards")
    prepare_dataset.add_arguments(p)

    v = sub.add_parser("verify-ids", help="Diff-PC's ID verification: drop photos that do not match their person")
    v.add_argument("shards", help="the folder of prepared shards (all of them, after every prepare job finished)")
    v.add_argument("--threshold", type=float, default=0.7,
                   help="minimum cosine similarity to the person's main cluster")
    v.add_argument("--clusters", type=int, default=3, help="k of the per-person k-means")

    t = sub.add_parser("train", help="train the mixer and FFRNet (launch with `accelerate launch` for several GPUs)")
    t.add_argument("--config", required=True, help="YAML config (see training/configs/paper.yaml)")
    t.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=1000")

    e = sub.add_parser("export", help="trainer checkpoint -> FaceSnap .safetensors for FaceSnapModelLoader")
    e.add_argument("checkpoint", help="a checkpoints/step_N folder or the training output_dir (uses its latest)")
    e.add_argument("--output", required=True)
    e.add_argument("--raw", action="store_true", help="export the raw weights even when EMA weights exist")
    e.add_argument("--without-ffrnet", action="store_true",
                   help="only mixer + ID-Injector heads (FFRNet shipped separately)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "train" else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "prepare":
        cfg = prepare_dataset.config_from_args(args)
        if cfg.clip_vision:
            _use_comfyui(args.comfyui)
        counts = prepare_dataset.prepare(cfg)
        print("done:", dict(counts))
    elif args.command == "verify-ids":
        from comfyui_facesnap.training.identity_verification import verify_shards

        report = verify_shards(args.shards, args.threshold, args.clusters)
        verified = sum(1 for v in report["identities"].values() if v["verified"])
        print(f"checked {report['checked']} samples of {len(report['identities'])} people ({verified} with enough "
              f"photos to verify); rejected {len(report['rejected'])}; not checked (no identity or ArcFace): "
              f"{report['not_checked']}")
    elif args.command == "train":
        _use_comfyui(args.comfyui)
        from comfyui_facesnap.training.config import load_config
        from comfyui_facesnap.training.train import run

        run(load_config(args.config, args.overrides))
    else:
        from comfyui_facesnap.training.export import export

        path = export(args.checkpoint, args.output, use_ema=not args.raw, include_backbone=not args.without_ffrnet)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
