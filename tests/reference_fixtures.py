"""The committed reference tensors of the official code (tests/fixtures, written by scripts/reference_*.py)."""

import json
import pathlib

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def load_reference(name: str) -> tuple[dict, dict, dict]:
    """-> (tensors, run: commits and library versions, reference: seeds and what was stored)."""
    from safetensors import safe_open

    with safe_open(str(FIXTURES / name), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        metadata = f.metadata()
    return tensors, json.loads(metadata["run"]), json.loads(metadata["reference"])
