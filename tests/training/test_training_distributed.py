"""The multi-GPU paths, as far as a CPU can check them: the shipped DeepSpeed ZeRO-2 launch config through accelerate's
own launcher code (no DeepSpeed run: DeepSpeed is not installed here), and the EMA under FSDP with torch's FSDP on
CPU (gloo, two processes). accelerate itself enables FSDP only on GPUs, so the trainer's FSDP run is not tested."""

import pathlib
import socket
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEEPSPEED_YAML = ROOT / "training" / "configs" / "accelerate_deepspeed_zero2.yaml"


def launched_deepspeed_plugin(monkeypatch, *launch_args):
    """The DeepSpeedPlugin each training process builds after ``accelerate launch --config_file <yaml>``: the
    launcher's own argument handling and environment (accelerate.commands.launch.launch_command, without
    starting anything), then the plugin from that environment."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(DEEPSPEED_YAML), *launch_args, "scripts/facesnap_train.py", "train"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    assert args.use_deepspeed and args.zero_stage == 2
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)  # as launch_command sets it
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    return DeepSpeedPlugin()


def training_config(*overrides):
    from comfyui_facesnap.training.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / "paper.yaml", list(overrides))


def test_deepspeed_gets_batch_accumulation_and_clipping_before_prepare(monkeypatch):
    """accelerate.prepare raises ValueError when train_micro_batch_size_per_gpu is still "auto" and no DataLoader is
    passed (the trainer passes none); the trainer fills it, and the accumulation and clipping, from its config."""
    from comfyui_facesnap.training.distributed import fill_deepspeed_config

    plugin = launched_deepspeed_plugin(monkeypatch)
    assert plugin.is_auto("train_micro_batch_size_per_gpu")  # what made prepare() raise
    cfg = training_config("data.batch_size=7", "train.gradient_accumulation_steps=4", "train.max_grad_norm=0.5")
    config = fill_deepspeed_config(plugin, cfg, accelerate_accumulation=4)
    assert not plugin.is_auto("train_micro_batch_size_per_gpu")
    assert config["train_micro_batch_size_per_gpu"] == 7 and plugin.get_value("gradient_accumulation_steps") == 4
    assert config["gradient_clipping"] == 0.5 and config["zero_optimization"]["stage"] == 2


def test_a_conflicting_launch_setting_is_refused(monkeypatch):
    from comfyui_facesnap.training.distributed import fill_deepspeed_config

    plugin = launched_deepspeed_plugin(monkeypatch, "--gradient_accumulation_steps", "2")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        fill_deepspeed_config(plugin, training_config("train.gradient_accumulation_steps=4"), accelerate_accumulation=2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fsdp_ema_worker(rank: int, port: int) -> None:
    """One of two FSDP processes: EMA of the shards, then the full averaged tensors, compared with an unsharded run."""
    import copy
    import datetime
    import functools
    import os

    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

    sys.path.insert(0, str(ROOT))
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.load_pack()
    from comfyui_facesnap.training.modules import EMA

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        module[2].bias.requires_grad_(False)  # frozen parameters stay out of the EMA
        reference = copy.deepcopy(module)
        wrapped = FSDP(module, use_orig_params=True, device_id=torch.device("cpu"),
                       auto_wrap_policy=functools.partial(size_based_auto_wrap_policy, min_num_params=50))
        local = wrapped.module  # what accelerator.unwrap_model returns: nested FSDP units inside, flat shards
        assert any("_fsdp_wrapped_module" in name for name, _ in local.named_parameters())
        assert local[0].weight.shape != reference[0].weight.shape  # a shard, not the (16, 8) weight
        try:  # the old order: an EMA of the full module, updated from the shards
            EMA(reference, 0.5).update(local)
            raise AssertionError("an EMA with full shapes accepted sharded parameters")
        except RuntimeError:
            pass

        ema, expected = EMA(local, 0.5), EMA(reference, 0.5)
        for step in range(3):
            with torch.no_grad():
                for params in (local.parameters(), reference.parameters()):
                    for k, p in enumerate(params):
                        p.add_(0.1 * (step + 1) * (k + 1))
            ema.update(local)
            expected.update(reference)

        def gather():
            config = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
            with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, config):
                return wrapped.state_dict()

        full = ema.full_state_dict(local, gather, sharded=True)
        assert set(full) == set(expected.state_dict()) == {"0.weight", "0.bias", "2.weight"}
        for name, value in expected.state_dict().items():
            torch.testing.assert_close(full[name], value)
        for name, value in gather().items():  # the trained weights are back in place
            torch.testing.assert_close(value, reference.state_dict()[name])
    finally:
        # neither process tears gloo down while the other still talks to it (it aborts otherwise); a rank that
        # failed above makes the other fail here within a minute instead of hanging
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        dist.destroy_process_group()


def test_ema_under_fsdp_averages_shards_and_saves_full_tensors():
    import torch.multiprocessing as mp

    mp.spawn(_fsdp_ema_worker, args=(_free_port(),), nprocs=2, join=True)
