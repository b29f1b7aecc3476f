"""Generate every (mode, person, prompt, seed) image through one or more ComfyUI servers, resuming where a run
stopped.

Each finished image is saved as ``<out>/images/<mode>/<person>/p<prompt>_s<seed>.png`` with a ``.json`` sidecar
(prompt, seed, time, peak VRAM, server and its device) as soon as its server finishes it. An image whose PNG and
sidecar both exist is not generated again, so an interrupted run continues where it stopped and a finished one only
recomputes the metrics. With several servers the prompts are shared out by ``server_pool``.
"""

from __future__ import annotations

import json
import pathlib
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .comfy_client import ComfyClient
from .server_pool import DEFAULT_DEAD_AFTER_S, DEFAULT_DEPTH, Finished, ServerPool, Task
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
    server: str = ""  # URL of the server that generated it
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


def save_finished(out_dir: pathlib.Path, job: Job, done: Finished) -> Generation:
    """Write the image and then its sidecar, each through a .part file, so that both are whole or absent."""
    png = image_path(out_dir, job)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.with_suffix(".part").write_bytes(done.image)
    png.with_suffix(".part").replace(png)
    result = done.result
    record = Generation(job.mode, job.person, job.prompt_index, job.prompt, job.seed, str(png.relative_to(out_dir)),
                        result.seconds, result.timing, result.peak_vram_bytes, result.device, result.prompt_id,
                        done.server)
    sidecar = {k: v for k, v in asdict(record).items() if k != "resumed"}
    png.with_suffix(".json.part").write_text(json.dumps(sidecar, indent=1))
    png.with_suffix(".json.part").replace(png.with_suffix(".json"))  # a sidecar is whole or absent
    return record


def generate(clients: Sequence[ComfyClient], runs: Sequence[ModeRun], jobs: Sequence[Job],
             out_dir: pathlib.Path, progress: bool = True, depth: int = DEFAULT_DEPTH,
             dead_after_s: float = DEFAULT_DEAD_AFTER_S, poll_s: float = 0.2) -> list[Generation]:
    """Every job's Generation, in job order: finished ones read back, the others generated on the servers."""
    from tqdm import tqdm

    by_label = {run.label: run for run in runs}
    records: dict[int, Generation] = {}
    tasks = []
    for index, job in enumerate(jobs):
        finished = load_finished(out_dir, job)
        if finished is not None:
            records[index] = finished
            continue
        run = by_label[job.mode]
        prefix = f"facesnap_eval/{safe_name(job.mode)}/{job.person}/p{job.prompt_index:02d}_s{job.seed}"
        tasks.append(Task(job.key, run.mode.patch(run.template, job, prefix), output_node(run.template), index))
    bar = tqdm(total=len(tasks), desc="generating", unit="image", disable=not progress)
    pool = ServerPool(clients, depth, dead_after_s, poll_s, say=bar.write)
    lock = threading.Lock()

    def on_finished(done: Finished) -> None:
        record = save_finished(out_dir, jobs[done.task.payload], done)
        with lock:
            records[done.task.payload] = record

    def on_progress() -> None:
        bar.n = pool.finished_count()
        bar.set_postfix_str(pool.status(), refresh=True)

    if len(records) and progress:
        bar.write(f"{len(records)} image(s) were generated before and are kept")
    try:
        if tasks:
            pool.run(tasks, on_finished, on_progress)
    finally:
        on_progress()
        bar.close()
        if tasks:
            tqdm.write(f"generated {pool.finished_count()} of {len(tasks)} image(s): {pool.status()}")
    return [records[i] for i in range(len(jobs))]
