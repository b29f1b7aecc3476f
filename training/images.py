"""Reading source photos for dataset preparation: every unusable file becomes a ``SkipImage`` with its reason."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


class SkipImage(Exception):
    """An input image is dropped; ``reason`` is the short label counted in the progress bar."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is always the first chunk: 8-byte signature, 4 length, 4 type, 4 width, 4 height, then the bit depth.
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[24]
    return None


def load_rgb(path: pathlib.Path) -> np.ndarray:
    """Decode an 8-bit RGB/greyscale photo to (H, W, 3) uint8, or raise ``SkipImage``.

    CMYK and 16-bit files are refused rather than converted: their colours would need a colour-managed conversion
    that the training data should not silently depend on.
    """
    from PIL import Image, UnidentifiedImageError

    data = pathlib.Path(path).read_bytes()
    depth = _png_bit_depth(data)
    if depth is not None and depth > 8:
        raise SkipImage("16-bit image", f"PNG bit depth {depth}")
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = img.mode
            if mode == "CMYK":
                raise SkipImage("CMYK image", "convert it to sRGB first")
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise SkipImage("16-bit image", f"mode {mode}")
            img.load()  # raises on truncated data (Pillow does not load truncated images by default)
            rgb = img.convert("RGB")
    except SkipImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SkipImage("corrupt image", f"{type(err).__name__}: {err}") from err
    return np.asarray(rgb, dtype=np.uint8)
