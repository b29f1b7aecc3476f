"""The trainer on a tiny random SDXL: finite loss, frozen base, exact resume, masked loss, non-SDXL rejection,
export."""

import math

import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.training.losses import masked_diffusion_loss
from identity_graphs import identity_workflow_graph
from training_fixtures import (
    tiny_config,
    train_killed_then_resumed,
    write_synthetic_shards,
)

pytestmark = [pytest.mark.comfy, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def host(identity_workflow_host):
    """The identity workflow's host (tests/nodes/conftest.py), for the exported weights."""
    return identity_workflow_host


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"))


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """Three steps with EMA and a frozen ID-Injector; returns the trainer, losses and the weights before."""
    from comfyui_facesnap.training.train import Trainer

    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_config(shards, out, "train.ema_decay=0.5", "model.train_id_injector=false",
                                  "train.sample_every=3"))
    before = {"unet": _snapshot(trainer.base.model), "vae": _snapshot(trainer.base.codec),
              "mixer": _snapshot(trainer.mixer), "ffrnet": _snapshot(trainer.ffrnet)}
    losses = trainer.train()
    return trainer, losses, before, out


def test_three_steps_train_only_the_trainable_parts(trained):
    trainer, losses, before, _ = trained
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    for name, module in (("unet", trainer.base.model), ("vae", trainer.base.codec)):
        after = module.state_dict()
        assert all(torch.equal(before[name][k], after[k].to(before[name][k])) for k in before[name]), f"{name} changed"
    for name, module in (("mixer", trainer.mixer), ("ffrnet", trainer.ffrnet)):
        after = module.state_dict()
        changed = {k for k in before[name] if not torch.equal(before[name][k], after[k])}
        assert changed, f"no {name} parameter was updated"
    injector = {k: v for k, v in trainer.ffrnet.state_dict().items() if k.startswith("id_injector.")}
    assert injector and all(torch.count_nonzero(v) == 0 for v in injector.values())  # frozen at its zero init


def test_checkpoint_is_complete_and_atomic(trained):
    _, _, _, out = trained
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_00000003"
    names = {p.name for p in (ckpts / "step_00000003").iterdir()}
    assert {"trainable.safetensors", "ema.safetensors", "optimizer.safetensors", "optimizer.json", "state.json",
            "rng_rank0.safetensors", "rng_rank0.json"} <= names
    assert not list(ckpts.glob("*.tmp"))
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0}).Reload()
    assert {"loss/total", "loss/diffusion", "lr"} <= set(acc.Tags()["scalars"])
    assert "samples" in " ".join(acc.Tags()["images"])  # the sample grid


@pytest.mark.slow
def test_kill_and_resume_reproduce_the_loss_sequence(shards, tmp_path, monkeypatch):
    from comfyui_facesnap.training.train import Trainer

    steps = ["train.max_steps=4", "train.checkpoint_every=2", "train.text_dropout=0.5", "train.feature_dropout=0.5"]
    reference = Trainer(tiny_config(shards, tmp_path / "a", *steps)).train()
    resumed = train_killed_then_resumed(lambda: Trainer(tiny_config(shards, tmp_path / "b", *steps)), monkeypatch)
    assert resumed == reference[2:]


def test_masked_loss_ignores_pixels_outside_the_mask():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    perturbed = pred.clone()
    perturbed[..., :2, :] += 10.0  # outside the mask
    assert torch.equal(masked_diffusion_loss(pred, target, mask), masked_diffusion_loss(perturbed, target, mask))
    perturbed[..., 3, 3] += 10.0  # inside
    assert masked_diffusion_loss(perturbed, target, mask) > masked_diffusion_loss(pred, target, mask)
    assert not torch.equal(masked_diffusion_loss(pred, target, None), masked_diffusion_loss(perturbed, target, None))


def test_non_sdxl_base_is_rejected_before_training(shards, tmp_path):
    from safetensors.torch import save_file

    from comfyui_facesnap.training.train import Trainer

    fake = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(8, 768)},
              str(fake))
    cfg = tiny_config(shards, tmp_path / "out", "base.kind=checkpoint", f"base.path={fake}")
    with pytest.raises(ModelFileError, match="not an SDXL base model"):
        Trainer(cfg)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_ffrnet_can_start_from_a_diffusers_controlnet(shards, tmp_path):
    from safetensors.torch import save_file

    from comfyui_facesnap.training.train import Trainer

    donor = Trainer(tiny_config(shards, tmp_path / "donor")).ffrnet
    weights = {k: v.clone() + 0.01 for k, v in donor.state_dict().items() if not k.startswith("id_injector.")}
    save_file(weights, str(tmp_path / "controlnet.safetensors"))
    trainer = Trainer(tiny_config(shards, tmp_path / "out", f"model.ffrnet_init={tmp_path / 'controlnet.safetensors'}"))
    state = trainer.ffrnet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert all(torch.count_nonzero(v) == 0 for k, v in state.items() if k.startswith("id_injector."))


def test_export_writes_what_the_loader_reads(trained, tmp_path):
    from safetensors.torch import load_file

    from comfyui_facesnap.models.identity.facesnap.checkpoint import load_facesnap
    from comfyui_facesnap.training.export import export

    _, _, _, out = trained
    for use_ema in (True, False):
        path = export(str(out), str(tmp_path / f"facesnap_tiny_{use_ema}.safetensors"), use_ema=use_ema)
        mixer, ffrnet, metadata = load_facesnap(str(path))
        name = f"{'ema' if use_ema else 'trainable'}.safetensors"
        source = load_file(str(out / "checkpoints" / "step_00000003" / name))
        assert metadata["weights"] == ("ema" if use_ema else "raw") and metadata["trained_steps"] == "3"
        for k, v in mixer.state_dict().items():
            if f"mixer.{k}" in source:
                assert torch.equal(v, source[f"mixer.{k}"])
        for k, v in ffrnet.state_dict().items():
            if f"ffrnet.{k}" in source:
                assert torch.equal(v, source[f"ffrnet.{k}"])


@pytest.mark.parametrize("mode", ["x0", pytest.param("lightning", marks=pytest.mark.slow)])
def test_id_loss_branches_train(shards, tmp_path, monkeypatch, mode):
    """Diff-PC's x0 branch and FaceSnap's few-step branch (a copy of the tiny UNet stands in for SDXL-Lightning)."""
    from comfyui_facesnap.training import train as train_module
    from comfyui_facesnap.training.base_model import build_tiny_base

    monkeypatch.setattr(train_module, "load_lightning_unet", lambda path: build_tiny_base(seed=5).model)
    cfg = tiny_config(shards, tmp_path, f"id_loss.mode={mode}", "id_loss.face_model_arch=tiny",
                      "id_loss.max_timestep=999",
                      "id_loss.lightning_steps=2", "train.max_steps=2")
    trainer = train_module.Trainer(cfg)
    seen = []
    real = trainer.compute_loss

    def spy(batch):
        loss, logs = real(batch)
        seen.append(logs)
        return loss, logs

    monkeypatch.setattr(trainer, "compute_loss", spy)
    losses = trainer.train()
    assert all(math.isfinite(x) for x in losses)
    id_terms = [float(logs["loss/id"]) for logs in seen]
    assert len(id_terms) == 2 and all(0.0 <= x <= 2.0 for x in id_terms)
    assert all(abs(float(logs["loss/total"]) - float(logs["loss/diffusion"]) - 0.5 * float(logs["loss/id"])) < 1e-5
               for logs in seen)


class CountingDetector:
    def __init__(self, analyzer):
        self.analyzer, self.shapes = analyzer, []

    def detect(self, image, **kwargs):
        self.shapes.append(image.shape)
        return self.analyzer.detect(image, **kwargs)


def test_face_gate_zeroes_the_id_loss_where_no_face_is_found(shards, tmp_path):
    """Diff-PC Eq. 20: M_det (dlib here) times 1 - cos. The tiny model's x0 images hold no face, so the gated ID
    loss must be exactly 0 where the ungated one is positive; the detector sees every generated image."""
    from comfyui_facesnap.training import train as train_module

    cfg = tiny_config(shards, tmp_path, "id_loss.mode=x0", "id_loss.face_model_arch=tiny", "id_loss.max_timestep=999",
                      "id_loss.face_gate=dlib", "train.max_steps=1")
    trainer = train_module.Trainer(cfg)
    trainer.frozen.face_gate = counting = CountingDetector(trainer.frozen.face_gate)
    batch = next(iter(trainer._loader()))
    torch.manual_seed(0)
    _, gated = trainer.compute_loss(batch)
    trainer.frozen.face_gate = None
    torch.manual_seed(0)
    _, plain = trainer.compute_loss(batch)
    assert counting.shapes == [(64, 64, 3)] * cfg.data.batch_size
    assert float(gated["id/face_detected"]) == 0.0 and float(gated["loss/id"]) == 0.0
    assert float(plain["loss/id"]) > 0.01
    with pytest.raises(ValueError, match="face_gate"):
        train_module.load_face_gate(tiny_config(shards, tmp_path, "id_loss.mode=x0", "id_loss.face_gate=retinaface"))


@pytest.mark.slow
def test_exported_weights_sample_through_ksampler(trained, host, tmp_path):
    """The full round trip: trainer checkpoint -> export -> FaceSnapModelLoader -> FFRNet + ID-Injector -> KSampler."""
    import numpy as np
    from PIL import Image

    import folder_paths

    from comfyui_facesnap.training.export import export

    _, _, _, out = trained
    export(str(out), str(tmp_path / "trained_tiny.safetensors"))
    folder_paths.add_model_folder_path("facesnap", str(tmp_path))
    executor = host.run(identity_workflow_graph(facesnap_name="trained_tiny.safetensors"))
    images = executor.history_result["outputs"]["15"]["images"]
    picture = np.asarray(Image.open(host.output_dir / images[0]["subfolder"] / images[0]["filename"]))
    assert picture.shape == (128, 128, 3) and picture.std() > 0
