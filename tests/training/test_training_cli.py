"""The user-facing CLI (scripts/facesnap_train.py) run as users run it: train a tiny model, then export it."""

import os
import pathlib
import subprocess
import sys

import pytest

from comfyui_facesnap.comfy_glue.boot import find_comfyui
from training_fixtures import write_synthetic_shards, write_tiny_identitynet, write_tiny_ip_adapter

pytestmark = [pytest.mark.comfy, pytest.mark.slow]
PACK_ROOT = pathlib.Path(__file__).resolve().parents[2]
COMFY = find_comfyui()  # the host tests/nodes/conftest.py booted
SCRIPT = PACK_ROOT / "scripts" / "facesnap_train.py"


def _run(*args, cwd):
    env = dict(os.environ, COMFYUI_PATH=str(COMFY), OMP_NUM_THREADS="1")  # tiny model: one thread is fastest
    result = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_cli_trains_and_exports(tmp_path):
    from comfyui_facesnap.models.identity.facesnap.checkpoint import load_facesnap

    shards = write_synthetic_shards(tmp_path / "shards")
    config = PACK_ROOT / "training" / "configs" / "tiny.yaml"
    _run("train", "--config", str(config), f"data.shards={shards}", f"train.output_dir={tmp_path / 'run'}",
         "train.max_steps=1", cwd=PACK_ROOT)
    out = tmp_path / "facesnap_tiny.safetensors"
    _run("export", str(tmp_path / "run"), "--output", str(out), cwd=tmp_path)
    mixer, ffrnet, metadata = load_facesnap(str(out))
    assert metadata["trained_steps"] == "1" and ffrnet.id_injector is not None


def test_cli_verifies_identities(tmp_path):
    shards = write_synthetic_shards(tmp_path / "shards", identities=2, per_identity=3)
    result = _run("verify-ids", str(shards), "--threshold", "0.7", cwd=tmp_path)
    assert "checked 6 samples of 2 people (2 with enough photos to verify); rejected 0" in result.stdout
    assert (shards / "identity_verification.json").is_file()


def test_cli_rejects_a_bad_shard_index(tmp_path):
    env = dict(os.environ, COMFYUI_PATH=str(COMFY))
    result = subprocess.run([sys.executable, str(SCRIPT), "prepare", str(tmp_path), "--output", str(tmp_path / "o"),
                             "--num-shards", "2", "--shard-index", "2"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--shard-index must be in [0, 2)" in result.stderr


@pytest.mark.parametrize("warm_start", [False, True], ids=["unet", "instantid"])
def test_two_process_ddp_run_checkpoints_every_rank(tmp_path, warm_start):
    """DDP on CPU (gloo) through torch.distributed.run, the launcher `accelerate launch` uses; also with the InstantID
    warm start (f_mix leaves the DDP-wrapped forward for the distillation term)."""
    import json

    shards = write_synthetic_shards(tmp_path / "shards")
    warm = []
    if warm_start:
        warm = ["model.ffrnet_init=instantid", f"model.instantid_controlnet={write_tiny_identitynet(tmp_path)}",
                f"model.instantid_ip_adapter={write_tiny_ip_adapter(tmp_path / 'ip-adapter.bin')}", "distill.weight=1"]
    env = dict(os.environ, COMFYUI_PATH=str(COMFY), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    # --standalone: the rendezvous takes a free port, so parallel runs and a busy machine cannot collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "train", "--config", str(PACK_ROOT / "training" / "configs" / "tiny.yaml"), f"data.shards={shards}",
           f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", *warm]
    result = subprocess.run(cmd, cwd=PACK_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["world_size"] == 2 and state["micro_step"] == 2
    assert bool(state["distill_teacher"]) == warm_start
    assert (ckpt / "rng_rank0.safetensors").exists() and (ckpt / "rng_rank1.safetensors").exists()
