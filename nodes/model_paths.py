"""The pack's model folders, registered with ComfyUI so that ``extra_model_paths.yaml`` entries are honoured, and the
one way a node input names a file in them.

===================  ==========================================  ==========================================
folder name          default location                            holds
===================  ==========================================  ==========================================
facesnap             ComfyUI/models/facesnap                     this pack's trained weights (.safetensors)
insightface          ComfyUI/models/insightface                  models/antelopev2/*.onnx (as InstantID uses)
3dmm                 ComfyUI/models/3dmm                         ICT-FaceKit / FLAME morphable models, DECA
instantid            ComfyUI/models/instantid                    InstantID's ip-adapter.bin (as cubiq's pack)
facesnap_identities  ComfyUI/models/facesnap_identities          saved identities (FaceSnap Save Identity)
face_recognition     ComfyUI/models/face_recognition             judges' published weights (FaceNet, AdaFace,
                                                                 CurricularFace), for FaceSnap Face Similarity
pulid                ComfyUI/models/pulid                        PuLID's SDXL files (as cubiq's pack)
facexlib             ComfyUI/models/facexlib                     facexlib's parsing_bisenet.pth (as lldacing's
                                                                 PuLID-Flux pack)
===================  ==========================================  ==========================================

EVA02-CLIP-L-14-336 is read from ComfyUI's own ``text_encoders`` folder (``models/clip`` and
``models/text_encoders``, and the ``clip`` / ``text_encoders`` entries of ``extra_model_paths.yaml``), where
lldacing's PuLID-Flux pack reads the same file: one copy serves both.

A file input resolves only to a file that ComfyUI lists in the input's model folders (``get_filename_list``, then
``get_full_path``). A value that is not a relative name inside the folder (empty, absolute, a drive, ``..``) is
refused from its text alone, and a name that is not listed gets the same message whether or not a file of that name
exists anywhere else: a shared workflow can neither read nor probe outside the model folders. Like every ComfyUI
loader, a symbolic link that the folder's owner placed inside a model folder is followed.
"""

from __future__ import annotations

import os
import re

import folder_paths

from ..models.errors import ModelFileError

FOLDERS = {
    "facesnap": {".safetensors"},
    "insightface": {".onnx"},
    "3dmm": {".npz", ".pkl", ".npy", ".safetensors", ".tar"},
    "instantid": {".bin", ".safetensors"},
    "facesnap_identities": {".safetensors"},
    "face_recognition": {".safetensors", ".pt", ".pth", ".ckpt"},
    "pulid": {".bin", ".safetensors"},
    "facexlib": {".pth", ".safetensors"},
}
EVA_CLIP_FOLDER = "text_encoders"  # ComfyUI's, registered by ComfyUI itself (see the module docstring)


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


def default_folder(name: str) -> str:
    """Where the pack writes a download for a model folder: ComfyUI's default path of that folder."""
    return folder_candidates(name)[0]


def file_options(folder: str, extensions: tuple[str, ...], always: tuple[str, ...] = ()) -> list[str]:
    """Dropdown choices: ``always`` (names a saved workflow may hold before the file exists) then the listed files."""
    listed = [name for name in folder_paths.get_filename_list(folder) if name.lower().endswith(extensions)]
    return list(always) + sorted(set(listed) - set(always))


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` cannot be a file inside a model folder, judged from the text alone (no disk access).
    Backslashes stay legal: ComfyUI lists files in subfolders as ``sub\\name`` on Windows."""
    if not name.strip():
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or os.path.isabs(name):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "climbs out of the folder ('..')"
    return None


def resolve_model_file(input_name: str, folder: str, name: str, hint: str) -> str:
    """The full path of ``name`` in the ``folder`` model folders, or a ModelFileError that reveals nothing about the
    disk outside them. ``hint`` says where to get the file."""
    where = ", ".join(folder_candidates(folder))
    reason = unsafe_name_reason(name)
    if reason is not None:
        raise ModelFileError(f"{input_name} {name!r} {reason}; it must name a file inside the {folder} model folders "
                             f"({where})", f"choose a file from the {input_name} dropdown; {hint}")
    path = folder_paths.get_full_path(folder, name) if name in folder_paths.get_filename_list(folder) else None
    if path is None:
        expected = os.path.join(default_folder(folder), name)
        raise ModelFileError(f"{input_name} {name} was not found at {expected} (model folders searched: {where})",
                             hint)
    return path
