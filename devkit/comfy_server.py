"""A real ComfyUI server process on CPU, for ``make demo`` and ``make browser-test``.

``comfy_server(comfyui, base, log_path)`` starts ``main.py --cpu`` on a free local port with ``base`` as its
``--base-directory``, waits until ``/system_stats`` answers and stops the server when the block ends;
``comfy_servers`` starts several at once (each on its own base directory) and waits for all. ``link_pack``
makes this checkout a custom node of such a base directory. (Scripts that only need ComfyUI's modules in-process
use pack_import.boot_comfyui instead.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-FaceSnap"
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 20
LOG_TAIL_CHARS = 4000
print_flushed = functools.partial(print, flush=True)


@dataclasses.dataclass(frozen=True)
class ComfyServer:
    url: str
    base: pathlib.Path
    log_path: pathlib.Path
    ready_seconds: float  # from process start until /system_stats answered
    pid: int = 0  # the server process (tests kill it to check that a run survives a dying server)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, payload: dict | None = None):
    """GET ``url`` (or POST ``payload`` as JSON) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def link_pack(base: pathlib.Path) -> None:
    """``base/custom_nodes/ComfyUI-FaceSnap`` -> this checkout (a stale link to another checkout is replaced)."""
    link = base / "custom_nodes" / PACK_DIR_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() != PACK_ROOT:
        link.unlink()
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)


def _log_tail(log_path: pathlib.Path) -> str:
    return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def _wait_until_ready(server: subprocess.Popen, url: str, log_path: pathlib.Path, started: float) -> float:
    """Seconds from ``started`` (monotonic, the process start) until the server answered."""
    while time.monotonic() - started < READY_TIMEOUT_S:
        if server.poll() is not None:
            sys.exit(f"ComfyUI exited with code {server.returncode}; log {log_path}:\n{_log_tail(log_path)}")
        try:
            http_json(f"{url}/system_stats")
            return time.monotonic() - started
        except OSError:  # not listening yet (URLError and ConnectionError are OSErrors)
            time.sleep(0.5)
    sys.exit(f"ComfyUI did not answer within {READY_TIMEOUT_S} s; log {log_path}:\n{_log_tail(log_path)}")


@contextlib.contextmanager
def comfy_servers(comfyui: pathlib.Path, bases: Sequence[pathlib.Path], log_paths: Sequence[pathlib.Path],
                  say: Callable[[str], None] = print_flushed,
                  cpu: bool = True) -> Iterator[list[ComfyServer]]:
    """Run one ComfyUI (``comfyui``/main.py) per base directory until the block ends; they start together, and the
    block begins when every one answers (the script exits if one never gets ready). ``cpu=False`` lets ComfyUI pick
    its device (the GPU when there is one)."""
    processes = []
    try:
        for base, log_path in zip(bases, log_paths, strict=True):
            port = free_port()
            command = [sys.executable, str(comfyui / "main.py"), *(["--cpu"] if cpu else []), "--listen", "127.0.0.1",
                       "--port", str(port), "--base-directory", str(base)]
            say(f"starting ComfyUI: {' '.join(command)}\n  log: {log_path}")
            with open(log_path, "w") as log_file:
                server = subprocess.Popen(command, cwd=comfyui, stdout=log_file, stderr=subprocess.STDOUT)
            processes.append((server, f"http://127.0.0.1:{port}", base, log_path, time.monotonic()))
        yield [ComfyServer(url, base, log_path, _wait_until_ready(server, url, log_path, started), server.pid)
               for server, url, base, log_path, started in processes]
    finally:
        for server, *_ in processes:
            server.terminate()
        for server, *_ in processes:
            try:
                server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.contextmanager
def comfy_server(comfyui: pathlib.Path, base: pathlib.Path, log_path: pathlib.Path,
                 say: Callable[[str], None] = print_flushed,
                 cpu: bool = True) -> Iterator[ComfyServer]:
    """Run ComfyUI (``comfyui``/main.py) on ``base`` until the block ends; exits the script if it never gets ready.
    ``cpu=False`` lets ComfyUI pick its device (the GPU when there is one)."""
    with comfy_servers(comfyui, [base], [log_path], say, cpu) as servers:
        yield servers[0]
