"""Tiny local models for the evaluation tests (an open_clip folder, a random-weight FID Inception file) and the
evaluation CLI loaded as a module."""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib

EVAL_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "facesnap_eval.py"

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


class ScriptedServer:
    """A ComfyUI server's HTTP answers, scripted: each queued prompt finishes after ``polls`` history requests, with
    the ``execution_start`` / ``execution_success`` timestamps ``seconds`` apart and an image on every node;
    ``/system_stats`` reports the next of ``vram_gb`` (a CUDA device) or a CPU; ``fail`` makes a prompt's run fail;
    no prompt finishes while ``wait_for()`` is False; ``down`` makes every request fail as a dead server's would."""

    def __init__(self, polls: int = 1, seconds: float = 1.5, vram_gb=None, fail: str | None = None, wait_for=None):
        self.polls, self.seconds, self.fail, self.wait_for = polls, seconds, fail, wait_for
        self.vram = iter(vram_gb) if vram_gb is not None else None
        self.queued: list[dict] = []
        self.asked: dict[str, int] = {}
        self.down = False

    def client(self, url: str):
        from comfyui_facesnap.evaluation.comfy_client import ComfyClient, ServerUnreachable

        server = self

        class Client(ComfyClient):
            def _request(self, path, data=None, headers=None):
                if server.down:
                    raise ServerUnreachable(f"cannot reach ComfyUI at {self.url} (connection refused)")
                return json.dumps(server.answer(path, json.loads(data) if data else None)).encode()

            def download(self, image):
                return f"{self.url} {image['filename']}".encode()

        return Client(url)

    def answer(self, path: str, payload):
        if path == "/prompt":
            self.queued.append(payload["prompt"])
            return {"prompt_id": f"p{len(self.queued)}"}
        if path == "/system_stats":
            if self.vram is None:
                return {"devices": [{"type": "cpu", "name": "cpu"}]}
            return {"devices": [{"type": "cuda", "name": "cuda:0 GPU", "torch_vram_total": next(self.vram) * 2**30}]}
        prompt_id = path.rsplit("/", 1)[-1]
        self.asked[prompt_id] = self.asked.get(prompt_id, 0) + 1
        if self.asked[prompt_id] < self.polls or (self.wait_for is not None and not self.wait_for()):
            return {}
        if self.fail:
            return {prompt_id: {"status": {"status_str": "error", "messages": [
                ["execution_error", {"node_type": "KSampler", "exception_message": self.fail}]]}}}
        image = {"images": [{"filename": f"{prompt_id}.png", "subfolder": "", "type": "output"}]}
        return {prompt_id: {"status": {"status_str": "success", "messages": [
            ["execution_start", {"prompt_id": prompt_id, "timestamp": 1000}],
            ["execution_success", {"prompt_id": prompt_id, "timestamp": 1000 + 1000 * self.seconds}]]},
            "outputs": {node: image for node in ["9", *self.queued[int(prompt_id[1:]) - 1]]}}}
