"""Generate every (mode, person, prompt, seed) image through a ComfyUI server, resuming where a run stopped.

Each finished image is saved as ``<out>/images/<mode>/<person>/p<prompt>_s<seed>.png`` with a ``.json`` sidecar
(prompt, seed, time, peak VRAM, server device). An image whose PNG and sidecar both exist is not generated again,
so an interrupted run continues where it stopped and a finished one only recomputes the metrics.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .comfy_client import ComfyClient
from .workflow_modes import Job, WorkflowMode, output_node

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class ModeRun:
    label: str  # the row name in the tables
    mode: WorkflowMode
    template: dict  # API prompt after mode.template()
    workflow_name: str


@dataclass
class Generation:
    mode: str
    person: str
    prompt_index: int
    prompt: str
    seed: int
    image: str  # path relative to the output folder
    seconds: float | None
    timing: str
    peak_vram_bytes: int | None
    device: str
    prompt_id: str = ""
    resumed: bool = field(default=False, compare=False)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def find_people(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """One sub-folder per person holding that person's reference photos."""
    people = {}
    for sub in sorted(p for p in pathlib.Path(folder).iterdir() if p.is_dir()):
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            people[safe_name(sub.name)] = photos
    return people


def plan_jobs(runs: Sequence[ModeRun], people: dict[str, list[str]], prompts: Sequence[str], seeds: Sequence[int],
              drive: str | None) -> list[Job]:
    """``people`` maps a person to the names of their photos in the server's input folder."""
    return [Job(run.label, person, p, prompt, seed, tuple(uploaded), drive)
            for run in runs for person, uploaded in people.items()
            for p, prompt in enumerate(prompts) for seed in seeds]


def image_path(out_dir: pathlib.Path, job: Job) -> pathlib.Path:
    return out_dir / "images" / safe_name(job.mode) / job.person / f"p{job.prompt_index:02d}_s{job.seed}.png"


def load_finished(out_dir: pathlib.Path, job: Job) -> Generation | None:
    png = image_path(out_dir, job)
    sidecar = png.with_suffix(".json")
    if not (png.is_file() and sidecar.is_file()):
        return None
    record = Generation(**json.loads(sidecar.read_text()))
    if (record.prompt, record.seed) != (job.prompt, job.seed):
        return None  # the prompt list changed: this file belongs to another job
    record.resumed = True
    return record


def generate(client: ComfyClient, runs: Sequence[ModeRun], jobs: Sequence[Job], out_dir: pathlib.Path,
             progress: bool = True) -> list[Generation]:
    from tqdm import tqdm

    by_label = {run.label: run for run in runs}
    records = []
    bar = tqdm(jobs, desc="generating", unit="image", disable=not progress)
    for job in bar:
        finished = load_finished(out_dir, job)
        if finished is not None:
            records.append(finished)
            bar.set_postfix_str(f"{job.key} (done before)")
            continue
        bar.set_postfix_str(job.key)
        run = by_label[job.mode]
        prefix = f"facesnap_eval/{safe_name(job.mode)}/{job.person}/p{job.prompt_index:02d}_s{job.seed}"
        result = client.run(run.mode.patch(run.template, job, prefix), output_node(run.template))
        png = image_path(out_dir, job)
        png.parent.mkdir(parents=True, exist_ok=True)
        png.with_suffix(".part").write_bytes(client.download(result.images[0]))
        png.with_suffix(".part").replace(png)
        record = Generation(job.mode, job.person, job.prompt_index, job.prompt, job.seed,
                            str(png.relative_to(out_dir)), result.seconds, result.timing, result.peak_vram_bytes,
                            result.device, result.prompt_id)
        png.with_suffix(".json").write_text(json.dumps({k: v for k, v in asdict(record).items() if k != "resumed"},
                                                       indent=1))
        records.append(record)
    return records
