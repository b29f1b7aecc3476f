"""The tiny trainer config and the single-thread fixture shared by the training tests (shards: devkit)."""

from __future__ import annotations

import pathlib

import pytest
import torch

from comfyui_facesnap.devkit.synthetic_shards import mean_face_68, write_synthetic_shards  # noqa: F401
from comfyui_facesnap.training.config import CONFIG_DIR, load_config


def tiny_config(shards: pathlib.Path, output: pathlib.Path, *overrides: str):
    return load_config(CONFIG_DIR / "tiny.yaml", [f"data.shards={shards}", f"train.output_dir={output}", *overrides])


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The tiny models are dominated by per-op overhead: one torch thread is several times faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
