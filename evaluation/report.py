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


def markdown_table(summary: dict[str, dict], facesim_name: str, notes: dict[str, str], settings: dict) -> str:
    facesim_note = ("ArcFace (antelopev2 glintr100) cosine x 100, as Diff-PC's Sim; FaceSnap's Table 1 measured "
                    "FaceSim with FaceNet, so its numbers are not comparable"
                    if facesim_name == "FaceSim" else
                    "dlib 128-D descriptor cosine x 100: a fallback on its own scale, NOT comparable with FaceSim")
    lines = [
        "Table 1 layout (FaceSnap): universal recontextualization",
        "",
        f"| Method | CLIP-T{UP} | CLIP-face{UP} | {facesim_name}{UP} | FID{DOWN} | Time{DOWN} | VRAM{DOWN} |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        lines.append(f"| {mode} | {_fmt(s['CLIP-T'])} | {_fmt(s['CLIP-face'])} | {_fmt(s[facesim_name])} | "
                     f"{_fmt_fid(s['FID'])} | {_fmt(s['seconds_per_image'], 1, 's')} | "
                     f"{_fmt(s['peak_vram_gb'], 1, 'GB')} |")
    lines += [
        "",
        "Face control and shape (Diff-PC), through the pack's 3DMM fit",
        "",
        f"| Method | control | Pose{DOWN} (°) | Expr{DOWN} | Shape{DOWN} | faces found |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        lines.append(f"| {mode} | {s['control'] or 'none'} | {_fmt(s['Pose'], 2)} | {_fmt(s['Expr'], 3)} | "
                     f"{_fmt(s['Shape'], 3)} | {s['faces_found']}/{s['images']} |")
    lines += [
        "",
        f"- CLIP-T: 100 x cosine of the CLIP features of the prompt and the whole image ({settings.get('clip', NOT_RUN)}).",
        "- CLIP-face: 100 x cosine of the CLIP features of the reference and generated face crops (mean over the "
        "person's reference photos).",
        f"- {facesim_name}: {facesim_note}; mean over the person's reference photos.",
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
