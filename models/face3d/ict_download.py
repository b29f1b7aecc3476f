"""Download the ICT-FaceKit face model (MIT licence) once and convert it into the npz the pack loads.

Upstream keeps the 158 OBJs the converter reads (about 405 MB of text) as plain git blobs, not Git LFS, so the raw
file URLs serve them. They are fetched into a work folder next to the target, each as ``<name>.part`` renamed once
complete; an interrupted download resumes there (HTTP Range) on the next attempt. The converter verifies its output
before it takes its final name, and the work folder is removed afterwards.
"""

from __future__ import annotations

import http.client
import pathlib
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from ..errors import ModelFileError
from .morphable_model import ICT_UPSTREAM, convert_ict_facekit, ict_manual_hint

# The upstream commit the converter was verified against: its FaceXModel/ OBJs convert to exactly the arrays of the
# reference conversion. FaceXModel/ last changed in aa8c241 (2020-07-23); this is master as of 2020-12-01.
ICT_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
ICT_BASE_URL = f"https://raw.githubusercontent.com/ICT-VGL/ICT-FaceKit/{ICT_COMMIT}/FaceXModel/"
ICT_EXPRESSIONS = (
    "PupilDilate_L PupilDilate_R browDown_L browDown_R browInnerUp_L browInnerUp_R browOuterUp_L browOuterUp_R "
    "cheekPuff_L cheekPuff_R cheekRaiser_L cheekRaiser_R cheekSquint_L cheekSquint_R eyeBlink_L eyeBlink_R "
    "eyeLookDown_L eyeLookDown_R eyeLookIn_L eyeLookIn_R eyeLookOut_L eyeLookOut_R eyeLookUp_L eyeLookUp_R "
    "eyeSquint_L eyeSquint_R eyeWide_L eyeWide_R jawForward jawLeft jawOpen jawRight mouthClose mouthDimple_L "
    "mouthDimple_R mouthFrown_L mouthFrown_R mouthFunnel mouthLeft mouthLowerDown_L mouthLowerDown_R mouthPress_L "
    "mouthPress_R mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmile_L "
    "mouthSmile_R mouthStretch_L mouthStretch_R mouthUpperUp_L mouthUpperUp_R noseSneer_L noseSneer_R"
).split()
ICT_OBJ_FILES = ("generic_neutral_mesh.obj", *(f"identity{i:03d}.obj" for i in range(100)),
                 *(f"{name}.obj" for name in ICT_EXPRESSIONS))
ICT_DOWNLOAD_BYTES = 404_607_860  # the 158 OBJs at ICT_COMMIT; only sizes the progress bar
CHUNK = 1 << 20
# Transient failures worth another attempt; anything else (404, 403, ...) will not change by retrying.
RETRY_HTTP_CODES = {408, 425, 429, 500, 502, 503, 504}
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
ProgressCallback = Callable[[int, int], None]


class _Progress:
    """A tqdm byte bar on the console plus an optional ``callback(done, total)`` (e.g. ComfyUI's node bar)."""

    def __init__(self, total: int | None, show: bool, callback: ProgressCallback | None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="ICT-FaceKit download",
                        disable=not show)
        self.total, self.done, self.callback = total, 0, callback

    def add(self, count: int) -> None:
        self.done += count
        self.bar.update(count)
        if self.callback is not None:
            self.callback(self.done, max(self.total or 0, self.done, 1))

    def close(self) -> None:
        self.bar.close()


def _download_error(url: str, reason: object, out_path: pathlib.Path, work_dir: pathlib.Path) -> ModelFileError:
    return ModelFileError(
        f"could not download the ICT-FaceKit face model: {url} failed ({reason})",
        f"check the internet connection and try again (finished files in {work_dir} are kept, so the download "
        f"resumes), or by hand: {ict_manual_hint(out_path)}",
    )


def _fetch_once(url: str, part: pathlib.Path, timeout: float, progress: _Progress) -> None:
    """Append the rest of ``url`` to ``part`` (or restart it when the server ignores the Range request)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ComfyUI-FaceSnap"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if offset and response.status != 206:
            progress.add(-offset)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                progress.add(len(chunk))
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise http.client.IncompleteRead(b"", expected - size)


def download_file(url: str, dest: pathlib.Path, progress: _Progress, retries: int, timeout: float,
                  retry_wait: float) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``; raises the last network error after ``retries`` retries."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress)
            part.replace(dest)
            return
        except urllib.error.HTTPError as err:
            if err.code == 416:  # a stale .part longer than the file: start it again
                progress.add(-part.stat().st_size)
                part.unlink()
            elif err.code not in RETRY_HTTP_CODES:
                raise
            if attempt == retries:
                raise
        except NETWORK_ERRORS as err:
            offline = isinstance(getattr(err, "reason", None), socket.gaierror)  # no DNS: retrying will not help
            if offline or attempt == retries:
                raise
        time.sleep(retry_wait * (attempt + 1))


def download_ict_facekit(out_path: str | pathlib.Path, base_url: str = ICT_BASE_URL, *, retries: int = 3,
                         timeout: float = 60.0, retry_wait: float = 2.0, progress: bool = True,
                         on_progress: ProgressCallback | None = None,
                         total_bytes: int | None = ICT_DOWNLOAD_BYTES) -> pathlib.Path:
    """Fetch the upstream ``FaceXModel/`` OBJs from ``base_url``, convert and verify them into ``out_path``.

    Raises ModelFileError with the manual route (exact path) when the network fails or the files do not convert.
    """
    out_path = pathlib.Path(out_path)
    work_dir = out_path.with_name(out_path.stem + ".download")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelFileError(f"cannot create {work_dir} ({err})", f"make {out_path.parent} writable, or by hand: "
                             f"{ict_manual_hint(out_path)}") from err
    bar = _Progress(total_bytes, progress, on_progress)
    try:
        for name in ICT_OBJ_FILES:
            dest = work_dir / name
            if dest.is_file():  # finished by an earlier, interrupted run
                bar.add(dest.stat().st_size)
                continue
            url = urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", urllib.parse.quote(name))
            try:
                download_file(url, dest, bar, retries, timeout, retry_wait)
            except urllib.error.HTTPError as err:
                raise _download_error(url, f"HTTP {err.code} {err.reason}", out_path, work_dir) from err
            except NETWORK_ERRORS as err:
                reason = err.reason if isinstance(err, urllib.error.URLError) else str(err) or type(err).__name__
                raise _download_error(url, reason, out_path, work_dir) from err
            except OSError as err:  # the disk, not the network
                raise ModelFileError(f"cannot write {dest} ({err})", f"make {work_dir.parent} writable with about "
                                     f"{ICT_DOWNLOAD_BYTES / 1e6:.0f} MB free (removed after converting)") from err
    finally:
        bar.close()
        if not any(work_dir.iterdir()):
            work_dir.rmdir()
    try:
        convert_ict_facekit(work_dir, out_path, progress=progress)
    except ModelFileError as err:
        shutil.rmtree(work_dir, ignore_errors=True)  # bad content would only convert wrongly again
        raise ModelFileError(f"the downloaded ICT-FaceKit files did not convert: {err.message}",
                             f"run again to download them afresh from {ICT_UPSTREAM}, or by hand: "
                             f"{ict_manual_hint(out_path)}") from err
    shutil.rmtree(work_dir, ignore_errors=True)
    return out_path
