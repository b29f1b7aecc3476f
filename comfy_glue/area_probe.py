"""Where each batch chunk of a ControlNet call lies in the latent, without hooks.

ComfyUI crops the latent to a cond's area (ConditioningSetArea / ...Percentage) before it calls the cond's ControlNets
and tells them nothing about the crop. What it does hand on per cond is ``model_conds``: every entry's
``process_cond(batch_size, area=...)`` receives the cond's resolved, clamped area (latent units, (h, w, y, x)), and the
results reach ``get_control`` batched in its ``cond`` argument. ``AreaProbe`` is such an entry. The apply functions put
it on every cond they attach an identity control to; the control reads each chunk's area from the batch it serves
(``chunk_areas``) and removes the entry (``drop``), so the model itself never receives it.
"""

from __future__ import annotations

import torch

import comfy.conds

PROBE_KEY = "facesnap_area"
NO_AREA = (-1, -1, -1, -1)


class AreaProbe(comfy.conds.CONDRegular):
    """A ``model_conds`` entry whose processed value is each batch row's area, or ``NO_AREA``."""

    def __init__(self, cond: torch.Tensor | None = None):
        super().__init__(torch.tensor([NO_AREA]) if cond is None else cond)

    def process_cond(self, batch_size, area=None, **kwargs):
        row = tuple(int(v) for v in area) if area is not None and len(area) == 4 else NO_AREA
        return self._copy_with(torch.tensor([row]).repeat(batch_size, 1))


def with_probe(options: dict) -> dict:
    """A copy of a conditioning entry's options with the probe among its ``model_conds``."""
    out = options.copy()
    out["model_conds"] = {**options.get("model_conds", {}), PROBE_KEY: AreaProbe()}
    return out


def chunk_areas(cond: dict, chunks: int) -> list[tuple[int, int, int, int] | None]:
    """Each chunk's area (h, w, y, x) in latent units, or None (the whole latent, or a cond without the probe)."""
    rows = cond.get(PROBE_KEY)
    if rows is None or rows.shape[0] % chunks:
        return [None] * chunks
    per = rows.shape[0] // chunks
    areas = [tuple(int(v) for v in rows[i * per]) for i in range(chunks)]
    return [None if area == NO_AREA else area for area in areas]


def drop(cond: dict) -> None:
    cond.pop(PROBE_KEY, None)
