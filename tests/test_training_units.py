"""Fast checks of the training building blocks: config loading, Diff-PC reference pairs, base-model detection."""

import json

import pytest
import torch
from training_fixtures import single_thread, write_synthetic_shards  # noqa: F401 (autouse fixture)

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.training.config import load_config


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
    assert [pairs[i]["ref_face"].sum() for i in range(3)] == [pairs[i]["ref_face"].sum() for i in range(3)]  # reproducible


@pytest.mark.comfy
def test_non_sdxl_diffusers_folder_is_rejected(tmp_path):
    from comfyui_facesnap.training.base_model import load_diffusers_folder

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 768, "in_channels": 4}))
    with pytest.raises(ModelFileError, match="not an SDXL base model"):
        load_diffusers_folder(str(tmp_path))
