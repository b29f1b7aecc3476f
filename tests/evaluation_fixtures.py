"""Tiny local models for the evaluation tests (an open_clip folder, a random-weight FID Inception file) and the
evaluation CLI loaded as a module."""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib

EVAL_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "facesnap_eval.py"

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


def write_tiny_clip(folder: pathlib.Path) -> pathlib.Path:
    """open_clip's local-dir layout: open_clip_config.json beside random weights (safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def write_random_inception(path: pathlib.Path, features: int = 64) -> pathlib.Path:
    """The FID Inception's architecture with PyTorch's random init, saved like the real weights file."""
    import torch
    from safetensors.torch import save_file

    from comfyui_facesnap.evaluation.fid import inception_architecture

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in inception_architecture(features).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@functools.cache
def load_eval_cli():
    """scripts/facesnap_eval.py as a module (once per process)."""
    spec = importlib.util.spec_from_file_location("facesnap_eval", EVAL_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
