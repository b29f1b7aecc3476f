"""Trainer checkpoint -> the FaceSnap ``.safetensors`` that the FaceSnapModelLoader node reads (``save_facesnap``)."""

from __future__ import annotations

import json
import pathlib

from safetensors.torch import load_file

from ..models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
from ..models.identity.facesnap.checkpoint import save_facesnap
from ..models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig
from .checkpointing import latest_checkpoint


def resolve_checkpoint(path: str) -> pathlib.Path:
    """A checkpoint directory, or a training output directory (its latest checkpoint)."""
    p = pathlib.Path(path)
    if (p / "state.json").exists():
        return p
    latest = latest_checkpoint(str(p))
    if latest is None:
        raise FileNotFoundError(f"{path} is neither a trainer checkpoint (state.json) nor an output dir with "
                                "checkpoints/latest")
    return latest


def export(checkpoint: str, output: str, use_ema: bool = True, include_backbone: bool = True) -> pathlib.Path:
    """Write the FaceSnap file; EMA weights are used when present unless ``use_ema`` is False."""
    ckpt = resolve_checkpoint(checkpoint)
    state = json.loads((ckpt / "state.json").read_text())
    configs = state["model_configs"]
    mixer = FacialAttributeMixer(MixerConfig.from_dict(configs["mixer"]))
    ffrnet = FFRNet(FFRNetConfig.from_dict(configs["ffrnet"]))
    weights = load_file(str(ckpt / "trainable.safetensors"))
    source = "raw"
    if use_ema and (ckpt / "ema.safetensors").exists():
        weights.update(load_file(str(ckpt / "ema.safetensors")))  # EMA covers the trainable tensors; buffers stay raw
        source = "ema"
    mixer.load_state_dict({k[len("mixer."):]: v for k, v in weights.items() if k.startswith("mixer.")})
    ffrnet.load_state_dict({k[len("ffrnet."):]: v for k, v in weights.items() if k.startswith("ffrnet.")})
    metadata = {
        "trained_steps": state["step"],
        "weights": source,
        "base": state["config"]["base"]["kind"] + (":" + pathlib.Path(state["config"]["base"]["path"]).name
                                                   if state["config"]["base"]["path"] else ""),
        "training_config": json.dumps(state["config"]),
    }
    out = pathlib.Path(output)
    tmp = out.with_name(out.name + ".tmp")
    save_facesnap(str(tmp), mixer, ffrnet, metadata, include_backbone=include_backbone)
    tmp.replace(out)
    return out
