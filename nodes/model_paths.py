"""The pack's model folders, registered with ComfyUI so that ``extra_model_paths.yaml`` entries are honoured.

===================  ==========================================  ==========================================
folder name          default location                            holds
===================  ==========================================  ==========================================
facesnap             ComfyUI/models/facesnap                     this pack's trained weights (.safetensors)
insightface          ComfyUI/models/insightface                  models/antelopev2/*.onnx (as InstantID uses)
3dmm                 ComfyUI/models/3dmm                         ICT-FaceKit / FLAME morphable models
instantid            ComfyUI/models/instantid                    InstantID's ip-adapter.bin (as cubiq's pack)
facesnap_identities  ComfyUI/models/facesnap_identities          saved identities (FaceSnap Save Identity)
===================  ==========================================  ==========================================
"""

from __future__ import annotations

import os

import folder_paths

FOLDERS = {
    "facesnap": {".safetensors"},
    "insightface": {".onnx"},
    "3dmm": {".npz", ".pkl", ".npy", ".safetensors"},
    "instantid": {".bin", ".safetensors"},
    "facesnap_identities": {".safetensors"},
}


def register_model_folders() -> None:
    for name, extensions in FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, name)
        # Paths from extra_model_paths.yaml may already be listed; keep them and add the default first.
        folder_paths.add_model_folder_path(name, default, is_default=True)
        paths, exts = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(exts) | extensions)


def folder_candidates(name: str) -> list[str]:
    """Every directory ComfyUI knows for a model folder, default first."""
    return list(folder_paths.get_folder_paths(name))
