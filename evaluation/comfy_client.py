"""The evaluation's only contact with ComfyUI: its HTTP API (no ComfyUI import), so it measures what artists run.

Time per image is the server's own execution time of the prompt: the ``timestamp``s (ms) of its
``execution_start`` and ``execution_success`` messages in ``/history`` (queueing and HTTP are excluded; the first
prompt of a server also loads the models). Where a server sends no timestamps, the client's wall time from queueing
to the history entry is used and marked as such.

Peak VRAM is the largest memory PyTorch held on the server's device (``/system_stats`` ``torch_vram_total``, i.e.
``torch.cuda.memory_reserved``) sampled by ``server_pool`` at every poll while the prompt ran. Sampling can miss a
peak shorter than the interval, and reserved memory is at least the allocated memory, so it is close to what
nvidia-smi shows for the process. It is None on CPU servers.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import pathlib
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

HTTP_TIMEOUT_S = 60


class ServerError(RuntimeError):
    """The server refused or failed a request; the message says what it answered."""


class ServerUnreachable(ServerError):
    """The server did not answer at all (refused, reset or timed-out connection): it may have died."""


@dataclass
class RunResult:
    prompt_id: str
    images: list[dict]  # {"filename", "subfolder", "type"} per image of the output node
    seconds: float
    timing: str  # "server" (execution timestamps) or "client" (wall time incl. queueing)
    peak_vram_bytes: int | None
    device: str


class ComfyClient:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = str(uuid.uuid4())

    # ---- plain requests ------------------------------------------------------------------------------------
    def _request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")[:2000]
            raise ServerError(f"{self.url}{path} answered {err.code}: {body}") from err
        except urllib.error.URLError as err:
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.url} ({err.reason})") from err
        except (OSError, http.client.HTTPException) as err:  # reset or timed out after connecting
            raise ServerUnreachable(f"ComfyUI at {self.url} stopped answering ({type(err).__name__})") from err

    def get_json(self, path: str):
        return json.loads(self._request(path))

    def post_json(self, path: str, payload: dict):
        return json.loads(self._request(path, json.dumps(payload).encode(), {"Content-Type": "application/json"}))

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def system_stats(self) -> dict:
        return self.get_json("/system_stats")

    def upload_image(self, path: pathlib.Path, name: str) -> str:
        """Put a photo into the server's input folder (replacing one of that name); returns the name LoadImage takes."""
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             f"Content-Type: {content_type}\r\n\r\n").encode() + pathlib.Path(path).read_bytes() + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        answer = json.loads(self._request("/upload/image", b"".join(parts),
                                          {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def download(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request(f"/view?{query}")

    # ---- one prompt ----------------------------------------------------------------------------------------
    def device_memory(self) -> tuple[str, int | None]:
        """(device name, torch-reserved bytes now); None bytes on a CPU server."""
        device = self.system_stats()["devices"][0]
        if device.get("type") in ("cpu", "mps"):
            return device.get("type", "cpu"), None
        return device.get("name", device.get("type", "?")), int(device.get("torch_vram_total") or 0)

    def queue(self, prompt: dict) -> str:
        """Put ``prompt`` at the end of the server's queue; returns its prompt id."""
        try:
            return self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]
        except ServerUnreachable:
            raise
        except ServerError as err:
            raise ServerError(f"ComfyUI rejected the workflow: {err}") from err

    def history_entry(self, prompt_id: str) -> dict | None:
        """The server's record of a finished prompt, or None while it is queued or running."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    @staticmethod
    def result(prompt_id, entry, output_node, started, device, peak) -> RunResult:
        """The RunResult of a finished history entry; ``started`` (monotonic) is for the client-side fallback."""
        status = entry.get("status", {})
        messages = status.get("messages", [])
        if status.get("status_str") != "success":
            errors = [data for event, data in messages if event == "execution_error"]
            details = "; ".join(f"[{e.get('node_type')}] {e.get('exception_message', '').strip()}" for e in errors)
            raise ServerError(f"the workflow failed on the server: {details or status}")
        stamps = {event: data.get("timestamp") for event, data in messages if isinstance(data, dict)}
        if stamps.get("execution_start") is not None and stamps.get("execution_success") is not None:
            seconds, timing = (stamps["execution_success"] - stamps["execution_start"]) / 1000.0, "server"
        else:
            seconds, timing = time.monotonic() - started, "client"
        images = entry.get("outputs", {}).get(output_node, {}).get("images", [])
        if not images:
            raise ServerError(f"the output node {output_node} saved no image")
        return RunResult(prompt_id, images, seconds, timing, peak, device)
