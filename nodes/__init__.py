"""ComfyUI adapters. Each module holds a few small V3 nodes that call into ``models/``."""

from __future__ import annotations

import importlib

# Each module defines NODES = [...]; the order is the order of the "Add Node" menu.
NODE_MODULES = ["face_nodes", "predictor_nodes", "facesnap_nodes", "identity_data_nodes", "instantid_nodes",
                "evaluation_nodes", "deprecated_nodes"]


def all_nodes() -> list:
    nodes = []
    for name in NODE_MODULES:
        nodes.extend(importlib.import_module(f".{name}", __name__).NODES)
    return nodes
