"""One evaluation run: upload the photos, generate (resuming), score, and write the four outputs."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from .comfy_client import ComfyClient
from .generation import ModeRun, generate, plan_jobs, safe_name
from .report import contact_sheet, markdown_table, write_csv, write_json
from .scoring import Scorers, analyse_drive, analyse_people, fid_by_mode, read_rgb, score_images, summarise

UPLOAD_PREFIX = "facesnap_eval"


def upload_photos(client: ComfyClient, people: dict[str, Sequence[pathlib.Path]],
                  drive: pathlib.Path | None) -> tuple[dict[str, list[str]], str | None]:
    uploaded = {person: [client.upload_image(path, f"{UPLOAD_PREFIX}_{person}_{k}{path.suffix.lower()}")
                         for k, path in enumerate(paths)]
                for person, paths in people.items()}
    drive_name = None
    if drive is not None:
        drive_name = client.upload_image(drive, f"{UPLOAD_PREFIX}_drive_{safe_name(drive.stem)}{drive.suffix.lower()}")
    return uploaded, drive_name


def run_evaluation(client: ComfyClient, runs: Sequence[ModeRun], people: dict[str, Sequence[pathlib.Path]],
                   prompts: Sequence[str], seeds: Sequence[int], drive: pathlib.Path | None, scorers: Scorers,
                   out_dir: pathlib.Path, settings: dict, progress: bool = True) -> dict:
    """Returns the summary per mode; writes results.json, results.md, per_image.csv and contact_sheet.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    uploaded, drive_name = upload_photos(client, people, drive)
    jobs = plan_jobs(runs, uploaded, prompts, seeds, drive_name)
    generations = generate(client, runs, jobs, out_dir, progress)
    analysed = analyse_people(people, scorers)
    drive_params = analyse_drive(drive, scorers)
    controls = {run.label: run.mode.pose_control(run.template) for run in runs}
    rows = score_images(out_dir, generations, analysed, controls, drive_params, scorers)
    fid = fid_by_mode(out_dir, generations, analysed, scorers.fid_extractor) if scorers.fid_extractor else {}
    if scorers.fid_extractor is not None and (not fid or None in fid.values()):
        scorers.notes["FID"] = "needs at least 2 reference photos and 2 images per row (n/a where missing)"
    summary = summarise(rows, fid, controls, scorers.facesim_name)
    settings = dict(settings, generated=sum(not g.resumed for g in generations),
                    resumed=sum(g.resumed for g in generations))
    write_json(out_dir / "results.json", summary, rows, settings, scorers.notes)
    (out_dir / "results.md").write_text(markdown_table(summary, scorers.facesim_name, scorers.notes, settings))
    write_csv(out_dir / "per_image.csv", rows)
    contact_sheet(out_dir / "contact_sheet.png", rows, {p: a.photos[0] for p, a in analysed.items()},
                  {r["image"]: read_rgb(out_dir / r["image"]) for r in rows})
    return summary
