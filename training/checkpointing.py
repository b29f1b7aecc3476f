"""Trainer checkpoints: everything needed for an exact resume, written atomically (no pickle outside engine/).

``<output_dir>/checkpoints/step_00001000/``:
    trainable.safetensors   mixer.* and ffrnet.* (raw weights)
    ema.safetensors         the EMA weights (when EMA is on), full shapes
    ema_rank<k>.safetensors FSDP only: rank k's EMA shards, for resuming
    optimizer.safetensors   optimizer tensors; optimizer.json holds the rest of its state dict
    engine/                 DeepSpeed / FSDP only: accelerate's own sharded state (replaces optimizer.*)
    rng_rank<k>.safetensors torch CPU (+ CUDA) RNG state of every rank
    state.json              step, data position, scheduler, Python/NumPy RNG, configs
A directory is written as ``step_N.tmp`` and renamed when complete; ``latest`` (written atomically) names the
newest one. A crash or full disk mid-write leaves only a ``.tmp`` that is ignored and later removed.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _atomic_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        meta["state"][str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().contiguous().cpu()
                meta["state"][str(pid)][name] = "__tensor__"
            else:
                meta["state"][str(pid)][name] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {name: tensors[f"{pid}.{name}"] if value == "__tensor__" else value
                           for name, value in entries.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict, dict]:
    """(tensors, json) capturing torch, CUDA, NumPy and Python RNG states."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def checkpoint_dir(output_dir: str) -> pathlib.Path:
    return pathlib.Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str) -> pathlib.Path | None:
    root = checkpoint_dir(output_dir)
    pointer = root / "latest"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def _sharded(accelerator) -> bool:
    """DeepSpeed and FSDP shard optimizer state; their own (accelerate) checkpoint format is used for it."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def _fsdp(accelerator) -> bool:
    """FSDP also shards the parameters, so the EMA of each process holds shards too."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def save_checkpoint(accelerator, output_dir: str, step: int, model, optimizer, scheduler, ema, state: dict,
                    keep: int) -> pathlib.Path:
    root = checkpoint_dir(output_dir)
    name = f"step_{step:08d}"
    final, tmp = root / name, root / f"{name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    sharded = _sharded(accelerator)
    if sharded:
        accelerator.save_state(str(tmp / "engine"), safe_serialization=True)  # collective: every rank writes its shard
    full_weights = accelerator.get_state_dict(model)  # gathered on rank 0 (collective under FSDP/ZeRO-3)
    if ema is not None:
        fsdp = _fsdp(accelerator)
        if fsdp:  # every rank keeps its own shards for resuming
            save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()},
                      str(tmp / f"ema_rank{accelerator.process_index}.safetensors"))
        full_ema = ema.full_state_dict(accelerator.unwrap_model(model), lambda: accelerator.get_state_dict(model), fsdp)
    rng_tensors, rng_meta = rng_state()
    save_file(rng_tensors, str(tmp / f"rng_rank{accelerator.process_index}.safetensors"))
    _atomic_text(tmp / f"rng_rank{accelerator.process_index}.json", json.dumps(rng_meta))
    if accelerator.is_main_process:
        save_file({k: v.detach().contiguous().cpu() for k, v in full_weights.items()},
                  str(tmp / "trainable.safetensors"))
        if ema is not None:  # full shapes, for export
            save_file({k: v.contiguous().cpu() for k, v in full_ema.items()}, str(tmp / "ema.safetensors"))
        if not sharded:
            opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        full = dict(state, step=step, scheduler=scheduler.state_dict(), world_size=accelerator.num_processes)
        (tmp / "state.json").write_text(json.dumps(full, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _atomic_text(root / "latest", name)
        done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: pathlib.Path, model, optimizer, scheduler, ema) -> dict:
    """Restore weights, optimizer, scheduler, EMA and this rank's RNG; returns state.json."""
    state = json.loads((path / "state.json").read_text())
    if state["world_size"] != accelerator.num_processes:
        raise RuntimeError(f"{path} was written by {state['world_size']} processes, this run has "
                           f"{accelerator.num_processes}: the data order would differ; resume with the same number of "
                           "processes")
    if _sharded(accelerator):
        accelerator.load_state(str(path / "engine"))  # weights, sharded optimizer, scheduler
    else:
        accelerator.unwrap_model(model).load_state_dict(load_file(str(path / "trainable.safetensors")))
        optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                                                       json.loads((path / "optimizer.json").read_text())))
        scheduler.load_state_dict(state["scheduler"])
    rank = accelerator.process_index
    ema_file = path / (f"ema_rank{rank}.safetensors" if _fsdp(accelerator) else "ema.safetensors")
    if ema is not None and ema_file.exists():
        ema.load_state_dict(load_file(str(ema_file)))
    set_rng_state(load_file(str(path / f"rng_rank{rank}.safetensors")),
                  json.loads((path / f"rng_rank{rank}.json").read_text()))
    return state
