"""Typed reads of the architecture values a weight file states, checked before anything is built from them.

A weight file names its own layout: InstantID conversions carry ``resampler_config`` and ``unet_config`` in their
metadata, FaceSnap files ``mixer_config`` and ``ffrnet_config``, diffusers ControlNets a ``config.json`` or a
``config`` metadata entry. Every value is checked for its type and a range around the published families (SDXL,
SD1.5, InstantID, FaceSnap, and the tests' tiny models), and products such as heads x width, before any module is
built; then the parameters the layout implies are compared with what the file holds (``layer_counts``). Errors name
the file, the config and the field. The checks of each layout live beside the module they build.
"""

from __future__ import annotations

import math
from dataclasses import fields

from ..errors import ModelFileError

MAX_LEVELS = 6  # SDXL has 3 UNet levels, SD1.5 4
MAX_WIDTH = 8192  # widest published layer: SDXL's 2048-wide context, 1280 x 4 channels


class ConfigValues:
    """Typed reads of one config dict; every failure is a ModelFileError naming ``file_name`` and ``where.key``."""

    def __init__(self, data: dict, where: str, file_name: str, fix: str):
        self.data, self.where, self.file_name, self.fix = data, where, file_name, fix

    def fail(self, key: str, expected: str):
        value = self.data.get(key)
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ModelFileError(f"{self.file_name}: {self.where}.{key} = {shown} is not {expected}", self.fix)

    def refuse(self, message: str):
        raise ModelFileError(f"{self.file_name}: {self.where}: {message}", self.fix)

    def unknown(self, known) -> None:
        extra = sorted(set(self.data) - set(known))
        if extra:
            self.refuse(f"unknown field(s) {', '.join(map(repr, extra[:5]))}")

    def integer(self, key: str, low: int, high: int, default=None, value=None) -> int:
        value = self.data.get(key, default) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"an integer in {low}..{high}")
        return value

    def integers(self, key: str, low: int, high: int, length: int | None = None, default=None,
                 per_level: bool = False) -> list[int]:
        """A list of integers (``length`` of them, or 1..MAX_LEVELS); with ``per_level`` one integer stands for
        all ``length`` levels, as diffusers allows."""
        value = self.data.get(key, default)
        if per_level and isinstance(value, int) and not isinstance(value, bool) and length is not None:
            value = [value] * length
        sizes = f"{length}" if length is not None else f"1..{MAX_LEVELS}"
        if not isinstance(value, (list, tuple)) or not (len(value) == length if length is not None
                                                        else 1 <= len(value) <= MAX_LEVELS):
            self.fail(key, f"a list of {sizes} integers in {low}..{high}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value):
            self.fail(key, f"a list of {sizes} integers in {low}..{high}")
        return list(value)

    def number(self, key: str, low: float, high: float, default=None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low < value < high:
            self.fail(key, f"a number between {low} and {high}")
        return float(value)

    def flag(self, key: str, default=None) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, "true or false")
        return value


def config_defaults(config_class) -> dict:
    """The default value of every field of a config dataclass."""
    return {f.name: getattr(config_class(), f.name) for f in fields(config_class)}
