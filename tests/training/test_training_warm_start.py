"""The warm start from InstantID on the tiny base: FFRNet from a tiny IdentityNet in InstantX's published layout,
the distillation of f_mix toward a tiny Resampler from an ``ip-adapter.bin``, config errors, and resume."""

import math

import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.training.config import CONFIG_DIR, DistillConfig, load_config
from comfyui_facesnap.training.warm_start import distill_weight, distillation_loss, raw_arcface
from training_fixtures import (
    tiny_config,
    train_killed_then_resumed,
    write_synthetic_shards,
    write_tiny_identitynet,
    write_tiny_ip_adapter,
)

pytestmark = [pytest.mark.comfy, pytest.mark.usefixtures("single_thread")]

SYNTHETIC_NORMS = (20.0, 23.0)  # devkit/synthetic_shards.py: person k's raw ArcFace norm is 20 + 3k


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("instantid")
    return {"shards": write_synthetic_shards(root / "shards"), "identitynet": write_tiny_identitynet(root),
            "ip_adapter": write_tiny_ip_adapter(root / "ip-adapter.bin")}


def warm_config(files, output, *overrides):
    return tiny_config(files["shards"], output, "model.ffrnet_init=instantid",
                       f"model.instantid_controlnet={files['identitynet']}",
                       f"model.instantid_ip_adapter={files['ip_adapter']}", "distill.weight=1.0", *overrides)


def no_diffusion_loss(monkeypatch):
    """Make the distillation the only loss (the diffusion term stays in the graph with weight 0)."""
    from comfyui_facesnap.training import train as train_module

    monkeypatch.setattr(train_module, "masked_diffusion_loss", lambda pred, target, mask: pred.float().sum() * 0.0)


def whole_dataset(trainer):
    from comfyui_facesnap.training.data import ShardDataset, collate

    dataset = ShardDataset(trainer.cfg.data.shards, trainer.cfg.data.resolution)
    return collate([dataset[i] for i in range(len(dataset))])


@torch.no_grad()
def distill_on(trainer, batch, teacher=None) -> float:
    """The distillation term of the trainer's mixer over ``batch`` without feature dropout."""
    ids = batch["arcface"]
    clip = trainer.frozen.clip.encode_batch(batch["ref_face"])
    f_mix = trainer.mixer(ids[:, None], clip[:, None])
    target = (teacher or trainer.frozen.teacher)(raw_arcface(batch, "cpu"))
    return float(distillation_loss(f_mix, target).mean())


@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_ffrnet_starts_as_identitynet(files, tmp_path, layout):
    from safetensors.torch import load_file

    from comfyui_facesnap.training.train import Trainer

    weights = files["identitynet"] / "diffusion_pytorch_model.safetensors"
    path = files["identitynet"] if layout == "folder" else weights  # single file: as kept in models/controlnet
    trainer = Trainer(warm_config(files, tmp_path, f"model.instantid_controlnet={path}"))
    published = load_file(str(weights))
    state = trainer.ffrnet.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith("id_injector.")}
    assert backbone.keys() == published.keys()
    assert all(torch.equal(backbone[k], published[k]) for k in published)
    heads = {k: v for k, v in state.items() if k.startswith("id_injector.")}
    assert heads and all(torch.count_nonzero(v) == 0 for v in heads.values())
    assert trainer.ffrnet.config.cross_attention_dim == trainer.mixer.config.dim == 64


def test_distillation_term_uses_the_raw_embedding_and_reaches_only_the_mixer(files, tmp_path, monkeypatch):
    from comfyui_facesnap.models.identity.instantid.resampler import ResamplerConfig
    from comfyui_facesnap.models.identity.instantid.weights import load_instantid
    from comfyui_facesnap.training.base_model import TINY_UNET
    from comfyui_facesnap.training.train import Trainer

    trainer = Trainer(warm_config(files, tmp_path, "train.feature_dropout=0", "distill.weight=0.5"))
    batch = whole_dataset(trainer)
    no_diffusion_loss(monkeypatch)
    loss, logs = trainer.compute_loss(batch)
    term = float(logs["loss/distill"])
    assert math.isfinite(term) and term > 0.1
    assert float(logs["distill/weight"]) == 0.5 and float(logs["loss/total"]) == pytest.approx(0.5 * term)

    # the teacher is the file's Resampler, fed insightface's raw embedding (normalised x stored norm)
    independent = load_instantid(str(files["ip_adapter"]), config=ResamplerConfig.tiny(64), unet_config=TINY_UNET)
    resampler = independent.image_proj.float()
    assert distill_on(trainer, batch, resampler) == pytest.approx(term, rel=1e-4)
    norms = torch.tensor([SYNTHETIC_NORMS[int(i[2:])] for i in batch["identity"]])
    assert torch.allclose(raw_arcface(batch, "cpu").norm(dim=1), norms, rtol=1e-5)
    unit = dict(batch, arcface_norm=torch.ones_like(batch["arcface_norm"]))
    assert abs(distill_on(trainer, unit, resampler) - term) > 1e-3  # the norm matters to the Resampler

    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.mixer.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in trainer.ffrnet.parameters())
    assert all(not p.requires_grad and p.grad is None for p in trainer.frozen.teacher.parameters())
    assert all(p.grad is None for p in trainer.base.model.parameters())


def test_distillation_alone_pulls_f_mix_toward_the_resampler(files, tmp_path, monkeypatch):
    from comfyui_facesnap.training.train import Trainer

    trainer = Trainer(warm_config(files, tmp_path, "train.feature_dropout=0", "train.lr=1e-2", "train.max_steps=10",
                                  "train.checkpoint_every=100"))
    no_diffusion_loss(monkeypatch)
    batch = whole_dataset(trainer)
    before = distill_on(trainer, batch)
    losses = trainer.train()
    after = distill_on(trainer, batch)
    assert all(math.isfinite(x) and x > 0 for x in losses)
    print(f"\ndistillation alone, 10 steps: {before:.3f} -> {after:.3f}; per step {[round(x, 3) for x in losses]}")
    assert after < 0.5 * before, (before, after, losses)


def test_the_schedule_decays_linearly_to_zero():
    assert distill_weight(DistillConfig(weight=2.0), 10**6) == 2.0
    decaying = DistillConfig(weight=2.0, decay_steps=4)
    assert [distill_weight(decaying, s) for s in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]


def sd15_controlnet(root):
    return write_tiny_identitynet(root, addition_embed_type=None, projection_class_embeddings_input_dim=None,
                                  cross_attention_dim=768)


@pytest.mark.parametrize("case, error, match", [
    (lambda f, r: ["model.instantid_controlnet=''"], ValueError, "model.instantid_controlnet is empty"),
    (lambda f, r: ["model.ffrnet_init=instantd"], ValueError, "neither a keyword nor an existing path"),
    (lambda f, r: ["model.instantid_ip_adapter=''"], ValueError, "distill.weight > 0 needs a teacher"),
    (lambda f, r: ["distill.weight=-1"], ValueError, "must be >= 0"),
    (lambda f, r: [f"model.instantid_controlnet={sd15_controlnet(r)}"], ModelFileError,
     "model.instantid_controlnet: .* is a ControlNet for SD1.5, not SDXL"),
    (lambda f, r: [f"model.instantid_controlnet={write_tiny_identitynet(r, cross_attention_dim=48)}"], ModelFileError,
     "model.instantid_controlnet: .* attends to 48-wide tokens; the base UNet and the mixer use 64-wide"),
    (lambda f, r: [f"model.instantid_controlnet={write_tiny_identitynet(r, block_out_channels=(64, 128))}"],
     ModelFileError, r"has encoder channels \[64, 128\], the base UNet \[32, 64\]"),
    (lambda f, r: [f"model.instantid_ip_adapter={write_tiny_ip_adapter(r / 'ip.bin', output_dim=48)}"],
     ModelFileError, "model.instantid_ip_adapter: ip.bin is an IP-Adapter for a 48-wide base model"),
    (lambda f, r: [f"model.instantid_ip_adapter={f['identitynet'] / 'diffusion_pytorch_model.safetensors'}"],
     ModelFileError, "model.instantid_ip_adapter: .* is a ControlNet"),
    (lambda f, r: ["model.mixer={mix_tokens: 8}"], ValueError, "f_mix \\(8 x 64\\)"),
], ids=["no_controlnet", "typo", "no_ip_adapter", "negative", "sd15", "width", "layout", "ip_width", "swapped",
        "tokens"])
def test_config_errors_are_clear(files, tmp_path, case, error, match):
    from comfyui_facesnap.training.train import Trainer

    with pytest.raises(error, match=match):
        Trainer(warm_config(files, tmp_path / "out", *case(files, tmp_path)))
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_shards_without_the_raw_norm_are_refused(files, tmp_path):
    from comfyui_facesnap.training.train import Trainer

    old = write_synthetic_shards(tmp_path / "old", arcface_norm=False)
    trainer = Trainer(warm_config(files, tmp_path / "out", f"data.shards={old}"))
    with pytest.raises(ValueError, match="store no arcface_norm .* re-run prepare"):
        trainer.train()
    trainer = Trainer(warm_config(files, tmp_path / "out2", f"data.shards={old}", "distill.weight=0"))
    assert len(trainer.train(stop_after=1)) == 1  # without the distillation they still train


def test_the_shipped_config_sets_both_and_inherits_the_paper(tmp_path):
    cfg = load_config(CONFIG_DIR / "instantid_warm_start.yaml")
    assert cfg.model.ffrnet_init == "instantid" and cfg.model.instantid_controlnet and cfg.model.instantid_ip_adapter
    assert cfg.distill.weight > 0 and cfg.distill.decay_steps > 0
    assert cfg.train.lr == 1e-5 and cfg.id_loss.mode == "x0" and cfg.data.batch_size == 7  # paper.yaml underneath
    mine = tmp_path / "mine.yaml"
    mine.write_text("preset: instantid_warm_start\nmodel:\n  instantid_ip_adapter: /w/ip-adapter.bin\n")
    cfg = load_config(mine, ["distill.weight=0.25"])
    assert cfg.model.ffrnet_init == "instantid" and cfg.model.instantid_ip_adapter == "/w/ip-adapter.bin"
    assert cfg.distill.weight == 0.25 and cfg.train.max_steps == 360_000
    mine.write_text("preset: instantid_warmstart\n")
    with pytest.raises(ValueError, match="unknown preset 'instantid_warmstart'.*instantid_warm_start"):
        load_config(mine)


@pytest.mark.slow
def test_kill_and_resume_with_the_distillation(files, tmp_path, monkeypatch):
    """The decaying weight and the teacher come back after a kill; a resumed run refuses another teacher."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from comfyui_facesnap.training.train import Trainer

    steps = ["train.max_steps=4", "train.checkpoint_every=2", "distill.decay_steps=3", "train.feature_dropout=0.25"]
    reference = Trainer(warm_config(files, tmp_path / "a", *steps)).train()
    resumed = train_killed_then_resumed(lambda: Trainer(warm_config(files, tmp_path / "b", *steps)), monkeypatch)
    assert resumed == reference[2:]

    events = next((tmp_path / "a" / "logs").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent)).Reload()
    weights = {e.step: e.value for e in acc.Scalars("distill/weight")}  # logged after step s: the weight of s - 1
    assert len(weights) >= 2 and all(w == pytest.approx(1 - (s - 1) / 3) for s, w in weights.items())
    assert 4 not in weights and all(e.value > 0 for e in acc.Scalars("loss/distill"))

    other = write_tiny_ip_adapter(tmp_path / "other.bin", seed=1)
    with pytest.raises(ValueError, match="another Resampler"):
        Trainer(warm_config(files, tmp_path / "b", f"model.instantid_ip_adapter={other}", "train.max_steps=5")).train()
