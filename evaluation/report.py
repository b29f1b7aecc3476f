"""The run's outputs: results.json, a markdown table laid out like FaceSnap's Table 1 (plus Diff-PC's face-control
errors), a per-image CSV and a contact sheet (per mode and person: the reference photo, then every generation)."""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Sequence

import numpy as np

UP, DOWN = "\u2191", "\u2193"  # the table's better-direction arrows (escaped: ASCII source for Windows code pages)

NOT_RUN = "n/a"
THUMB = 192
LABEL_H = 22


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    return NOT_RUN if value is None else f"{value:.{digits}f}{unit}"


def _fmt_fid(value) -> str:
    """One decimal as the papers print FID; small values (tiny test models) keep three significant digits."""
    return NOT_RUN if value is None else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _by_metric() -> dict:
    from ..models.face_analysis.recognisers import JUDGES

    return {spec.metric: spec for spec in JUDGES.values()}


def copy_paste_column(summary: dict[str, dict], metrics: Sequence[str]) -> str | None:
    """The copy-paste column the table shows: the first judge's that has a value, else the first judge's."""
    names = [m.replace("FaceSim", "CopyPaste") for m in metrics]
    return next((n for n in names if any(s.get(n) is not None for s in summary.values())), names[0] if names else None)


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def table1(summary: dict[str, dict], metrics: Sequence[str]) -> list[str]:
    copy = copy_paste_column(summary, metrics)
    header = ["Method", f"CLIP-T{UP}", f"CLIP-face{UP}", *(f"{m}{UP}" for m in metrics),
              *([f"{copy}{DOWN}"] if copy else []), f"FID{DOWN}", f"Time{DOWN}", f"VRAM{DOWN}"]
    rows = [[mode, _fmt(s["CLIP-T"]), _fmt(s["CLIP-face"]), *(_fmt(s.get(m)) for m in metrics),
             *([_fmt(s.get(copy))] if copy else []), _fmt_fid(s["FID"]), _fmt(s["seconds_per_image"], 1, "s"),
             _fmt(s["peak_vram_gb"], 1, "GB")] for mode, s in summary.items()]
    return _table("Table 1 layout (FaceSnap): universal recontextualization", header, rows)


def unsplash50_tables(summary: dict[str, dict]) -> list[str]:
    """The Unsplash-50 columns of PuLID's Table 1 (FaceSim as a cosine, CurricularFace; CLIP-I as a cosine) and of
    Diff-PC's Table 3 (Sim in percent, ArcFace antelopev2)."""
    pulid = [[mode, _fmt(_cosine(s.get("FaceSim-Cur")), 3), _fmt(s["CLIP-T"], 2), _fmt(_cosine(s.get("CLIP-I")), 3)]
             for mode, s in summary.items()]
    diffpc = [[mode, _fmt(s.get("FaceSim-Arc")), _fmt(s["Expr"], 3), _fmt(s["Pose"], 2), _fmt(s["CLIP-T"])]
              for mode, s in summary.items()]
    return [*_table("Unsplash-50, PuLID's Table 1 layout (FaceSim: CurricularFace cosine)",
                    ["Method", f"FaceSim{UP}", f"CLIP-T{UP}", f"CLIP-I{UP}"], pulid),
            *_table("Unsplash-50, Diff-PC's Table 3 layout (Sim: ArcFace antelopev2, in percent)",
                    ["Method", f"Sim{UP}", f"Expr{DOWN}", f"Pose{DOWN}", f"CLIP-T{UP}"], diffpc)]


def _cosine(percent):
    return None if percent is None else percent / 100.0


def markdown_table(summary: dict[str, dict], metrics: Sequence[str], notes: dict[str, str], settings: dict) -> str:
    specs = _by_metric()
    lines = table1(summary, metrics)
    lines += _table("Face control and shape (Diff-PC), through the pack's 3DMM fit",
                    ["Method", "control", f"Pose{DOWN} (\u00b0)", f"Expr{DOWN}", f"Shape{DOWN}", "faces found"],
                    [[mode, s["control"] or "none", _fmt(s["Pose"], 2), _fmt(s["Expr"], 3), _fmt(s["Shape"], 3),
                      f"{s['faces_found']}/{s['images']}"] for mode, s in summary.items()])
    if settings.get("protocol") == "unsplash50":
        lines += unsplash50_tables(summary)
    lines += [
        "- CLIP-T: 100 x cosine of the CLIP features of the prompt and the whole image "
        f"({settings.get('clip', NOT_RUN)}).",
        "- CLIP-face: 100 x cosine of the CLIP features of the reference and generated face crops (mean over the "
        "person's reference photos).",
        *(f"- {m}: 100 x cosine of the {specs[m].feature}, mean over the person's reference photos; as "
          f"{specs[m].used_by}" + (f"; {specs[m].caveat}." if specs[m].caveat else ".") for m in metrics),
        "- CopyPaste: FaceSim to the reference photos minus the highest FaceSim to the person's held-out photos "
        "(x 100, same judge); above 0 the face is closer to the photo given than to the person.",
        f"- FID: generated images of the row vs all reference photos ({settings.get('fid', NOT_RUN)}); with few "
        "images it is dominated by small-sample bias: compare rows of the same run only.",
        "- Time: median over images of the server's execution time per prompt (execution_start to "
        "execution_success in /history; the first prompt also loads the models).",
        "- VRAM: highest torch-reserved memory of the server's device in /system_stats, sampled while each prompt "
        "ran (n/a on a CPU server).",
        "- Pose: RMSE of yaw/pitch/roll vs the workflow's control (reference photo, drive photo or manual angles); "
        "Expr: RMSE of 3DMM expression weights vs the control; Shape: RMSE of 3DMM identity weights vs the "
        "reference photos. The pack's own fit and units, not Diff-PC's SMIRK numbers.",
        "- Face metrics are means over the images where a face was found.",
    ]
    if settings.get("protocol") == "unsplash50":
        lines.append("- Unsplash-50 tables: FaceSim and CLIP-I as cosines (PuLID prints them so); CLIP-I is the CLIP "
                     "image cosine to the plain-SDXL image of the same prompt and seed (n/a without the sdxl mode); "
                     "Sim, Expr and Pose as above. Compare with a paper only under its judge, base model and steps.")
    lines += [f"- {metric}: not run: {why}" for metric, why in notes.items()]
    return "\n".join(lines) + "\n"


def write_csv(path: pathlib.Path, rows: Sequence[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: pathlib.Path, summary: dict, rows: Sequence[dict], settings: dict, notes: dict) -> None:
    path.write_text(json.dumps({"settings": settings, "summary": summary, "not_run": notes, "images": list(rows)},
                               indent=1, default=str))


def _thumb(image: np.ndarray, label: str) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    scale = THUMB / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    cell = np.full((THUMB + LABEL_H, THUMB, 3), 255, np.uint8)
    y, x = LABEL_H + (THUMB - small.shape[0]) // 2, (THUMB - small.shape[1]) // 2
    cell[y:y + small.shape[0], x:x + small.shape[1]] = small
    cv2.putText(cell, label[:28], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return cell


def contact_sheet(path: pathlib.Path, rows: Sequence[dict], references: dict[str, np.ndarray],
                  images: dict[str, np.ndarray]) -> tuple[int, int]:
    """One row per (mode, person): the first reference photo, then the generations by prompt, then seed.
    ``images`` maps a row's ``image`` path to its pixels. Returns the sheet's (height, width)."""
    import cv2

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["mode"], row["person"]), []).append(row)
    lines = []
    for (mode, person), members in groups.items():
        members = sorted(members, key=lambda r: (r["prompt_index"], r["seed"]))
        cells = [_thumb(references[person], f"{mode}: {person}")]
        cells += [_thumb(images[r["image"]], f"p{r['prompt_index']} s{r['seed']}") for r in members]
        lines.append(cells)
    width = max(len(cells) for cells in lines)
    blank = np.full((THUMB + LABEL_H, THUMB, 3), 255, np.uint8)
    sheet = np.concatenate([np.concatenate(cells + [blank] * (width - len(cells)), axis=1) for cells in lines], axis=0)
    cv2.imwrite(str(path), sheet[..., ::-1])
    return sheet.shape[:2]
