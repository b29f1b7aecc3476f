"""Pieces shared by the hostile-input tests of the nodes: a 3DMM loader prompt, a stand-in ICT-FaceKit file, and one
persistent executor as a server keeps it."""

from __future__ import annotations

import pathlib

import numpy as np


def write_ict_npz(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A stand-in with the converted ICT-FaceKit layout (random shapes): enough for the loader's checks."""
    from comfyui_facesnap.models.face3d.ict_download import ICT_EXPRESSIONS
    from comfyui_facesnap.models.face3d.morphable_model import ICT_NARROW_FACE_VERTICES

    rng = np.random.default_rng(seed)
    shape = (ICT_NARROW_FACE_VERTICES, 3)
    np.savez(path, neutral=rng.normal(size=shape).astype(np.float32), tris=np.array([[0, 1, 2], [2, 3, 4]], np.int32),
             id_basis=rng.normal(scale=0.01, size=(100, *shape)).astype(np.float16),
             exp_basis=rng.normal(scale=0.01, size=(len(ICT_EXPRESSIONS), *shape)).astype(np.float16),
             exp_names=np.array(ICT_EXPRESSIONS))
    return path


class Session:
    """One persistent PromptExecutor, as a server keeps it."""

    def __init__(self, host):
        from comfyui_facesnap.devkit.comfy_host import _StubServer, new_executor

        self.host, self.server = host, _StubServer()
        self.executor = new_executor(self.server)

    def run(self, prompt: dict) -> tuple[bool, dict]:
        """(success, error): validation errors come back as {'validation': node_errors}. Like a server, each run
        gets its own copy of the prompt (the executor writes fingerprints into it)."""
        import copy
        import uuid

        prompt = copy.deepcopy(prompt)
        valid = self.host.validate(prompt)
        if not valid[0] or valid[3]:
            return False, {"validation": valid[3], "message": str(valid[1])}
        self.executor.execute(prompt, str(uuid.uuid4()), {}, valid[2])
        errors = [data for event, data in self.executor.status_messages if event == "execution_error"]
        return self.executor.success, (errors[0] if errors else {})

    def ui(self, node_id: str) -> dict:
        return self.executor.history_result["outputs"].get(node_id, {})


def loader_prompt(model="ICT-FaceKit", ict_file="ict_face_narrow.npz", flame_file="generic_model.pkl",
                  flame_landmarks="landmark_embedding.npy", deca_file="none", download_if_missing=False) -> dict:
    return {
        "1": {"class_type": "FaceSnap3DMMLoader",
              "inputs": {"model": model, "ict_file": ict_file, "flame_file": flame_file,
                         "flame_landmarks": flame_landmarks, "download_if_missing": download_if_missing,
                         "deca_file": deca_file}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
