"""Fast checks of the training building blocks: config loading, Diff-PC reference pairs, base-model detection."""

import json
import pathlib

import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.training.config import load_config
from training_fixtures import write_synthetic_shards

pytestmark = pytest.mark.usefixtures("single_thread")


def test_config_presets_overrides_and_typos(tmp_path):
    user = tmp_path / "my.yaml"
    user.write_text("preset: paper\nbase:\n  path: /models/sdxl.safetensors\ntrain:\n  max_steps: 10\n")
    cfg = load_config(user, ["train.lr=2e-5", "data.batch_size=3"])
    assert cfg.base.path == "/models/sdxl.safetensors" and cfg.train.max_steps == 10
    assert cfg.train.lr == 2e-5 and cfg.data.batch_size == 3
    assert cfg.train.text_dropout == 0.1 and cfg.id_loss.weight == 0.5 and cfg.data.resolution == 1024  # the paper
    user.write_text("train:\n  learning_rate: 1e-5\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(user)


def test_identity_reference_pairs_other_photos_of_the_person(tmp_path):
    from comfyui_facesnap.training.data import ShardDataset

    shards = write_synthetic_shards(tmp_path / "shards", identities=2, per_identity=3)
    own = ShardDataset(str(shards), 64, reference="self")
    pairs = ShardDataset(str(shards), 64, reference="identity")
    for i in range(len(pairs)):
        mine, paired = own[i], pairs[i]
        assert torch.equal(mine["pixels"], paired["pixels"])  # same target
        assert not torch.equal(mine["ref_face"], paired["ref_face"])  # another photo as reference
        partner = next(j for j in range(len(own)) if torch.equal(own[j]["target_face"], paired["ref_face"]))
        assert partner != i and own[partner]["identity"] == mine["identity"]
    sums = [pairs[i]["ref_face"].sum() for i in range(3)]
    assert sums == [pairs[i]["ref_face"].sum() for i in range(3)]  # reproducible


@pytest.mark.comfy
def test_non_sdxl_diffusers_folder_is_rejected(tmp_path):
    from comfyui_facesnap.training.base_model import load_diffusers_folder

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 768, "in_channels": 4}))
    with pytest.raises(ModelFileError, match="not an SDXL base model"):
        load_diffusers_folder(str(tmp_path))


@pytest.mark.comfy
def test_tiny_base_latents_have_sdxl_scale_and_calibration_keeps_the_decoder():
    """Uncalibrated, the random VAE gives latents ~100x too small: the diffusion loss would see noise only."""
    from comfyui_facesnap.training.base_model import build_tiny_base, calibrate_latent_scale_, calibration_images

    base = build_tiny_base(seed=3)
    faces = write_faces_as_pixels()
    latents = base.codec.encode(faces)
    assert 0.7 < float(latents.std()) < 1.4 and abs(float(latents.mean())) < 0.3  # other images than calibration's
    before = base.codec.decode(latents)
    gain = calibrate_latent_scale_(base.codec, faces)
    assert abs(float(base.codec.encode(faces).std()) - 1.0) < 1e-3 and gain != 1.0
    assert torch.allclose(base.codec.decode(base.codec.encode(faces)), before, atol=1e-4)
    assert calibration_images().shape == (16, 3, 64, 64)


def write_faces_as_pixels() -> torch.Tensor:
    """Synthetic face crops (drawn ellipses on flat backgrounds) as (B, 3, 64, 64) in [-1, 1]."""
    import tempfile

    from comfyui_facesnap.training.data import ShardDataset, collate

    with tempfile.TemporaryDirectory() as folder:
        shards = write_synthetic_shards(pathlib.Path(folder) / "shards", identities=3, per_identity=2)
        dataset = ShardDataset(str(shards), 64)
        return collate([dataset[i] for i in range(len(dataset))])["pixels"]


SDXL_UNET_CONFIG = {  # ComfyUI's detected unet_config for SDXL base 1.0
    "in_channels": 4, "model_channels": 320, "channel_mult": [1, 2, 4], "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10], "context_dim": 2048, "num_head_channels": 64, "adm_in_channels": 2816,
}


@pytest.mark.parametrize("preset", ["", "sdxl", "sdxl_light"])
def test_ffrnet_preset_gives_the_named_sdxl_layout(preset):
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNetConfig
    from comfyui_facesnap.training.ffrnet_init import ffrnet_config_for_base

    got = ffrnet_config_for_base(SDXL_UNET_CONFIG, id_injector=True, preset=preset)
    assert got.to_dict() == FFRNetConfig.preset(preset or "sdxl").to_dict()


def test_ffrnet_preset_refuses_a_base_of_another_layout():
    from comfyui_facesnap.training.base_model import TINY_UNET
    from comfyui_facesnap.training.ffrnet_init import ffrnet_config_for_base

    with pytest.raises(ValueError, match="ffrnet_overrides"):
        ffrnet_config_for_base(TINY_UNET, id_injector=True, preset="sdxl_light")
    with pytest.raises(ValueError, match="unknown FFRNet preset"):
        ffrnet_config_for_base(SDXL_UNET_CONFIG, id_injector=True, preset="sdxl_huge")
