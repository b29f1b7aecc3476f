"""Training configuration: nested dataclasses read from YAML (unknown keys are errors, so typos never pass silently)."""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass, field

import yaml

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"


@dataclass
class BaseConfig:
    kind: str = "checkpoint"  # checkpoint (single file) | diffusers (folder) | tiny (random miniature, tests only)
    path: str = ""
    clip_vision: str = ""  # CLIP-ViT-H/14 safetensors, for shards without precomputed clip.npy
    seed: int = 0  # tiny base only


@dataclass
class ModelConfig:
    mixer: dict = field(default_factory=dict)  # MixerConfig fields; empty = the SDXL default
    mixer_preset: str = "sdxl"  # sdxl | tiny
    ffrnet_preset: str = ""  # "" = a full copy of the base's encoder (the paper) | sdxl_light (2 of 10 layers)
    ffrnet_overrides: dict = field(default_factory=dict)  # FFRNetConfig fields over the config derived from the UNet
    ffrnet_init: str = "unet"  # unet | instantid (from instantid_controlnet) | path to a diffusers SDXL ControlNet
    instantid_controlnet: str = ""  # InstantID's IdentityNet: diffusers ControlNetModel folder or .safetensors
    instantid_ip_adapter: str = ""  # InstantID's ip-adapter.bin (or .safetensors): its Resampler teaches f_mix
    id_injector: bool = True
    train_id_injector: bool = True


@dataclass
class DataConfig:
    shards: str = ""
    resolution: int = 1024
    batch_size: int = 7
    num_workers: int = 4
    reference: str = "self"  # self (FaceSnap: the target's own face) | identity (Diff-PC: another photo of the person)


@dataclass
class IDLossConfig:
    mode: str = "none"  # none | x0 (Diff-PC Eq. 19-20) | lightning (FaceSnap Eq. 4, user-supplied SDXL-Lightning UNet)
    weight: float = 0.5  # lambda_id (FaceSnap 0.5, Diff-PC 0.1)
    face_model: str = ""  # torch ArcFace (iresnet) safetensors; see training/README.md
    face_model_arch: str = "r100"  # r100 | r50 | tiny
    lightning_unet: str = ""  # SDXL-Lightning UNet safetensors (ComfyUI / LDM key layout)
    lightning_steps: int = 4
    max_timestep: int = 600  # x0 mode: the x0 estimate is meaningless near pure noise
    every: int = 1  # compute it every N steps (it costs a VAE decode)
    face_gate: str = "none"  # none | dlib | insightface: Diff-PC's M_det, no ID loss where no face is detected
    face_gate_root: str = ""  # insightface: the folder holding models/antelopev2


@dataclass
class DistillConfig:
    """lambda_distill * || f_mix - Resampler(raw ArcFace) ||^2 / || Resampler(raw ArcFace) ||^2 (see warm_start.py)."""

    weight: float = 0.0  # lambda_distill; 0 = off
    decay_steps: int = 0  # 0 = constant weight; N = linear decay to 0 at step N (the Resampler then stops running)


@dataclass
class TrainConfig:
    output_dir: str = "runs/facesnap"
    max_steps: int = 360_000
    lr: float = 1e-5
    weight_decay: float = 1e-2
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"  # no | fp16 | bf16
    gradient_checkpointing: bool = True
    masked_loss: bool = True
    text_dropout: float = 0.10  # FaceSnap: 10 % null text
    feature_dropout: float = 0.05  # Diff-PC: 5 % zeroed ArcFace / CLIP features
    ema_decay: float = 0.0  # 0 disables EMA
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    sample_every: int = 0  # TensorBoard sample grids (0 = off)


@dataclass
class Config:
    base: BaseConfig = field(default_factory=BaseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    id_loss: IDLossConfig = field(default_factory=IDLossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        default = (names[key].default_factory() if names[key].default_factory is not dataclasses.MISSING
                   else names[key].default)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value or {}, f"{where}.{key}")
        elif isinstance(default, tuple):
            kwargs[key] = tuple(value)
        elif isinstance(default, float) and isinstance(value, (int, str)):
            kwargs[key] = float(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _merge(into: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _read_yaml(path: pathlib.Path, chain: tuple[str, ...] = ()) -> dict:
    """A YAML config with its ``preset: <name>`` (``configs/<name>.yaml``, which may name a preset too) under it."""
    data = yaml.safe_load(path.read_text()) or {}
    preset = data.pop("preset", None)
    if not preset:
        return data
    if preset in chain:
        raise ValueError(f"preset {preset!r} inherits itself ({' -> '.join((*chain, preset))})")
    parent = CONFIG_DIR / f"{preset}.yaml"
    if not parent.is_file():
        shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("accelerate_"))
        raise ValueError(f"{path}: unknown preset {preset!r}; shipped presets: {shipped}")
    return _merge(_read_yaml(parent, (*chain, preset)), data)


def load_config(path: str | pathlib.Path, overrides: list[str] | None = None) -> Config:
    """YAML file (``preset: <name>`` inherits ``configs/<name>.yaml``), then ``section.key=value`` overrides."""
    data = _read_yaml(pathlib.Path(path))
    for item in overrides or []:
        dotted, _, raw = item.partition("=")
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return _build(Config, data, "config")


def config_from_dict(data: dict) -> Config:
    return _build(Config, data, "config")
