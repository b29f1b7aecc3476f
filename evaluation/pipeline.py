"""One evaluation run: upload the photos to every server, generate (resuming), score, and write the four outputs."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from .comfy_client import ComfyClient, ServerError
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


def upload_everywhere(clients: Sequence[ComfyClient], people: dict[str, Sequence[pathlib.Path]],
                      drive: pathlib.Path | None) -> tuple[dict[str, list[str]], str | None]:
    """Upload to every server; the jobs name the photos the same way on all of them."""
    first = upload_photos(clients[0], people, drive)
    for client in clients[1:]:
        if upload_photos(client, people, drive) != first:
            raise ServerError(f"{client.url} stored the photos under other names than {clients[0].url}; give servers "
                              "whose input folders are separate or identical")
    return first


def run_evaluation(clients: Sequence[ComfyClient], runs: Sequence[ModeRun], people: dict[str, Sequence[pathlib.Path]],
                   prompts: Sequence[str], seeds: Sequence[int], drive: pathlib.Path | None, scorers: Scorers,
                   out_dir: pathlib.Path, settings: dict, progress: bool = True,
                   held_out: dict[str, Sequence[pathlib.Path]] | None = None, pool: dict | None = None) -> dict:
    """Returns the summary per mode; writes results.json, results.md, per_image.csv and contact_sheet.png.
    ``held_out``: other photos per person (the copy-paste score); ``pool``: ServerPool settings (depth, ...)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    uploaded, drive_name = upload_everywhere(clients, people, drive)
    jobs = plan_jobs(runs, uploaded, prompts, seeds, drive_name)
    generations = generate(clients, runs, jobs, out_dir, progress, **(pool or {}))
    analysed = analyse_people(people, scorers, held_out)
    drive_params = analyse_drive(drive, scorers)
    controls = {run.label: run.mode.pose_control(run.template) for run in runs}
    rows = score_images(out_dir, generations, analysed, controls, drive_params, scorers)
    fid = fid_by_mode(out_dir, generations, analysed, scorers.fid_extractor) if scorers.fid_extractor else {}
    if scorers.fid_extractor is not None and (not fid or None in fid.values()):
        scorers.notes["FID"] = "needs at least 2 reference photos and 2 images per row (n/a where missing)"
    if not any(person.held_out for person in analysed.values()):
        scorers.notes["CopyPaste"] = "needs other photos of each person that the generator did not see (--held-out)"
    summary = summarise(rows, fid, controls, scorers.metrics)
    settings = dict(settings, generated=sum(not g.resumed for g in generations),
                    resumed=sum(g.resumed for g in generations))
    write_json(out_dir / "results.json", summary, rows, settings, scorers.notes)
    (out_dir / "results.md").write_text(markdown_table(summary, scorers.metrics, scorers.notes, settings))
    write_csv(out_dir / "per_image.csv", rows)
    contact_sheet(out_dir / "contact_sheet.png", rows, {p: a.photos[0] for p, a in analysed.items()},
                  {r["image"]: read_rgb(out_dir / r["image"]) for r in rows})
    return summary
