"""Identities as data: save one to a small .safetensors, load it back without photos or face models, blend two."""

from __future__ import annotations

import os
import re
import unicodedata

from safetensors import SafetensorError

import folder_paths
from comfy_api.latest import io, ui

from ..models.errors import InvalidInputError
from ..models.identity.identity import blend_identities, load_identity, save_identity
from .errors import reports_errors
from .model_cache import file_identity
from .model_paths import resolve_model_file
from .socket_types import Identity

CATEGORY = "FaceSnap/Identity"
FOLDER = "facesnap_identities"
EXTENSION = ".safetensors"
SEGMENT = re.compile(r"[\w][\w\- .]*")  # one folder or file name: letters, digits, _ - . and spaces (fullmatch)
WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
NAME_FIX = "use a plain name such as 'alice' or 'people/alice' (letters, digits, _ - . and spaces)"
MAX_NAME_BYTES = 255  # a file or folder name on Linux and macOS file systems
SUFFIX_BYTES = len(f"_00000{EXTENSION}")  # what save_path may append to the last segment


def checked_name(name: str) -> list[str]:
    """The path segments of an identity name relative to its folder; anything that could leave it is refused, and so
    is a segment that is too long on disk (255 bytes; letters outside A-Z take 2 to 4) or a control character."""
    parts = name.strip().replace("\\", "/").split("/") if isinstance(name, str) else []
    if isinstance(name, str) and any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise InvalidInputError(f"identity name {name!r} is not allowed: it holds a control character (a line break, "
                                "tab, ...)", NAME_FIX)
    bad = (not parts or len(name) > 200 or ":" in name
           or any(not SEGMENT.fullmatch(p) or p.endswith((" ", ".")) or p.split(".")[0].lower() in WINDOWS_DEVICES
                  for p in parts))
    if bad:
        raise InvalidInputError(f"identity name {name!r} is not allowed", NAME_FIX)
    for index, part in enumerate(parts):
        size = len(part.encode("utf-8")) + (SUFFIX_BYTES if index == len(parts) - 1 else 0)
        if size > MAX_NAME_BYTES:
            raise InvalidInputError(f"identity name {name!r} is not allowed: {part[:20]!r}... takes {size} bytes "
                                    f"as a file or folder name (with {EXTENSION} and a counter), above the "
                                    f"{MAX_NAME_BYTES}-byte limit of file systems",
                                    "use a shorter name (letters outside A-Z take 2 to 4 bytes each)")
    return parts


def _within(folder: str, path: str) -> bool:
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _inside(folder: str, parts: list[str]) -> str:
    path = os.path.join(folder, *parts)
    if not _within(folder, path):
        raise InvalidInputError(f"identity name {'/'.join(parts)!r} leads outside {folder}", NAME_FIX)
    return path


def save_path(name: str, overwrite: bool) -> str:
    """Where FaceSnap Save Identity writes ``name``: inside the first facesnap_identities folder; without
    ``overwrite`` an existing file keeps its name and the new one gets the next free ``_00001`` suffix."""
    parts = checked_name(name[: -len(EXTENSION)] if name.lower().endswith(EXTENSION) else name)
    folder = folder_paths.get_folder_paths(FOLDER)[0]
    path = _inside(folder, parts[:-1] + [parts[-1] + EXTENSION])
    counter = 0
    while not overwrite and os.path.exists(path):
        counter += 1
        path = _inside(folder, parts[:-1] + [f"{parts[-1]}_{counter:05d}{EXTENSION}"])
    return path


def identity_path(name: str) -> str:
    """The file of a FaceSnap Load Identity choice: a listed file of the facesnap_identities folders (the pack's
    shared resolution, which lists only .safetensors there), under the stricter identity names, and never a link
    that leads out of those folders."""
    checked_name(name)
    path = resolve_model_file("identity_name", FOLDER, name, "save it with FaceSnap Save Identity")
    if any(_within(folder, path) for folder in folder_paths.get_folder_paths(FOLDER)):
        return path
    raise InvalidInputError(f"identity {name!r} resolves outside the identity folders", NAME_FIX)


class FaceSnapSaveIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapSaveIdentity",
            display_name="FaceSnap Save Identity",
            category=CATEGORY,
            description="Saves an identity (its tokens, which encoder and weights made them, how many photos) as a "
                        "small .safetensors in ComfyUI/models/facesnap_identities, so the person can be reused with "
                        "FaceSnap Load Identity without the photos or the face models.",
            inputs=[
                Identity.Input("identity", tooltip="The identity to keep (Attribute Mixer, InstantID Encode, Blend)."),
                io.String.Input("name", default="person",
                                tooltip="File name inside models/facesnap_identities, e.g. 'alice' or 'people/alice' "
                                        "(.safetensors is added)."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing file of that name. Off: keep it and save as "
                                         "name_00001, name_00002, ..."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    @reports_errors
    def execute(cls, identity, name: str, overwrite: bool) -> io.NodeOutput:
        path = save_path(name, overwrite)
        folder = folder_paths.get_folder_paths(FOLDER)[0]
        try:
            save_identity(path, identity, {"name": os.path.splitext(os.path.basename(path))[0]})
        except (OSError, SafetensorError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise InvalidInputError(
                f"the identity could not be saved as {os.path.relpath(path, folder)} in {folder}: {reason}",
                "choose another name (a folder in it must not be an existing file), or make the identity folder "
                "writable and free some disk space") from err
        return io.NodeOutput(ui=ui.PreviewText(f"saved {os.path.relpath(path, folder)}: {identity.describe()}"))


class FaceSnapLoadIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapLoadIdentity",
            display_name="FaceSnap Load Identity",
            category=CATEGORY,
            description="Loads an identity saved by FaceSnap Save Identity from ComfyUI/models/facesnap_identities. "
                        "Needs no photos, insightface or CLIP model; apply it with the apply node of the model that "
                        "made it (FaceSnap or InstantID).",
            inputs=[io.Combo.Input("identity_name", options=folder_paths.get_filename_list(FOLDER),
                                   tooltip="A saved identity in models/facesnap_identities.")],
            outputs=[Identity.Output(display_name="identity"), io.String.Output(display_name="info")],
        )

    @classmethod
    def fingerprint_inputs(cls, identity_name: str):
        path = folder_paths.get_full_path(FOLDER, identity_name)
        return file_identity(path) if path else identity_name  # a re-saved file is loaded again

    @classmethod
    @reports_errors
    def execute(cls, identity_name: str) -> io.NodeOutput:
        identity, _ = load_identity(identity_path(identity_name))
        return io.NodeOutput(identity, identity.describe())


class FaceSnapBlendIdentities(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceSnapBlendIdentities",
            display_name="FaceSnap Blend Identities",
            category=CATEGORY,
            description="Mixes two identities token by token: (1 - weight) x identity_a + weight x identity_b (their "
                        "negatives and ArcFace embeddings alike). Both must come from the same encoder and weights.",
            inputs=[
                Identity.Input("identity_a", tooltip="The first person (weight 0 gives this one)."),
                Identity.Input("identity_b", tooltip="The second person (weight 1 gives this one)."),
                io.Float.Input("weight", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of identity_b: 0 = identity_a, 1 = identity_b."),
            ],
            outputs=[Identity.Output(display_name="identity")],
        )

    @classmethod
    @reports_errors
    def execute(cls, identity_a, identity_b, weight: float) -> io.NodeOutput:
        return io.NodeOutput(blend_identities(identity_a, identity_b, weight))


NODES = [FaceSnapSaveIdentity, FaceSnapLoadIdentity, FaceSnapBlendIdentities]
