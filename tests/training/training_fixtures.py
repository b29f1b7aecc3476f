"""The tiny trainer config and models shared by the training tests (shards: devkit; the single-thread fixture:
conftest.py)."""

from __future__ import annotations

import pathlib

import pytest
import torch

from comfyui_facesnap.devkit.synthetic_shards import mean_face_68, write_synthetic_shards  # noqa: F401
from comfyui_facesnap.training.config import CONFIG_DIR, load_config


def tiny_config(shards: pathlib.Path, output: pathlib.Path, *overrides: str):
    return load_config(CONFIG_DIR / "tiny.yaml", [f"data.shards={shards}", f"train.output_dir={output}", *overrides])


def train_killed_then_resumed(make_trainer, monkeypatch, kill_at: int = 3) -> list[float]:
    """Train ``make_trainer()`` until it is killed in its ``kill_at``-th step, then resume with a fresh
    ``make_trainer()`` (same output folder); returns the resumed run's losses."""
    crashing = make_trainer()
    real, calls = crashing.compute_loss, []

    def killed(batch):
        calls.append(1)
        if len(calls) == kill_at:
            raise KeyboardInterrupt("killed")
        return real(batch)

    monkeypatch.setattr(crashing, "compute_loss", killed)
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    return make_trainer().train()


def write_tiny_identitynet(folder: pathlib.Path, seed: int = 0, **config) -> pathlib.Path:
    """InstantID's IdentityNet as InstantX publishes it (``ControlNetModel/`` holding diffusers' ``config.json`` and
    ``diffusion_pytorch_model.safetensors``), at the tiny base's width, written by diffusers itself; every tensor is
    random (the zero convs too, as in a trained ControlNet). ``config`` overrides diffusers ControlNetModel fields."""
    import diffusers

    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig

    kwargs = {**ControlNetConfig.tiny().diffusers_kwargs(), **config}
    torch.manual_seed(seed)
    net = diffusers.ControlNetModel(**kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    net.save_pretrained(folder / "ControlNetModel")
    return folder / "ControlNetModel"


def write_tiny_ip_adapter(path: pathlib.Path, seed: int = 0, output_dim: int = 64) -> pathlib.Path:
    """InstantID's ``ip-adapter.bin`` for the tiny base: ``{"image_proj": Resampler, "ip_adapter": IP layers}`` saved
    with torch.save as InstantID does, the Resampler random with a non-trivial output LayerNorm (gain and offset)."""
    from comfyui_facesnap.models.identity.instantid.resampler import ResamplerConfig
    from comfyui_facesnap.models.identity.instantid.weights import InstantIDAdapter
    from comfyui_facesnap.training.base_model import TINY_UNET

    torch.manual_seed(seed)
    adapter = InstantIDAdapter(ResamplerConfig.tiny(output_dim), TINY_UNET)
    with torch.no_grad():
        adapter.image_proj.norm_out.weight.uniform_(0.5, 2.0)
        adapter.image_proj.norm_out.bias.normal_(0.0, 0.5)
    state = adapter.state_dict()
    torch.save({part: {k.split(".", 1)[1]: v.clone() for k, v in state.items() if k.startswith(part + ".")}
                for part in ("image_proj", "ip_adapter")}, path)
    return path
