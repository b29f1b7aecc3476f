"""Evaluate a FaceSnap workflow like the papers: FaceSnap's Table 1 and Diff-PC's pose/expression/shape errors, with
likeness scored by every face-recognition judge available (ArcFace, CurricularFace, AdaFace, FaceNet, dlib).

Generates every (mode, person, prompt, seed) through ComfyUI servers over HTTP, so it measures exactly what artists
run: joins running servers (``--server URL``, repeatable: the prompts are shared out, each server's queue is kept
full, and the prompts of a server that dies go to the others) or starts one (``--comfyui PATH``, as ``make demo``
does). The reference photos (``--references DIR``: one sub-folder per person), prompt, seed and drive photo are
patched into the workflow by node type and title (see evaluation/workflow_modes.py). Finished images are kept in
``--out`` and skipped when the run is repeated.

    python scripts/facesnap_eval.py --server http://127.0.0.1:8188 --server http://127.0.0.1:8189 \\
        --references photos/ --held-out more_photos/ --prompts prompts.txt --seeds 1 2 3 \\
        --workflow workflows/facesnap_portrait.json --mode workflow --mode sdxl \\
        --insightface-root ComfyUI/models/insightface --judge-folder ComfyUI/models/face_recognition \\
        --clip ViT-H-14 --clip-checkpoint open_clip_pytorch_model.bin \\
        --fid-weights weights-inception-2015-12-05-6726825d.pth --3dmm ComfyUI/models/3dmm/ict_face_narrow.npz \\
        --out eval_out

Published protocol: ``--benchmark DIR`` takes a folder laid out like Unsplash-50 (one portrait per identity, the
prompts in prompts.txt) instead of --references/--prompts, and adds the Unsplash-50 columns of PuLID's and Diff-PC's
tables to results.md.

Modes: ``workflow`` (the --workflow as given), ``sdxl`` (plain SDXL baseline derived from the --workflow) and
``instantid`` (InstantID's public weights, workflows/instantid_portrait.json); ``--mode NAME=WORKFLOW`` gives a mode
its own workflow file, e.g. ``--mode instantid --mode sdxl=workflows/instantid_portrait.json`` for InstantID beside
the plain SDXL of the same checkpoint, size, steps and CFG. Outputs: results.json, results.md (Table 1 layout),
per_image.csv, contact_sheet.png. Every model file is local; a missing one stops the run with its name and the flag
that leaves its metric out (--no-clip, --no-fid, --no-3dmm); a judge without its weights is listed as not run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.load_pack()
from comfyui_facesnap.devkit.workflow_format import ui_to_api  # noqa: E402
from comfyui_facesnap.evaluation.benchmark_folder import read_benchmark, read_prompt_file  # noqa: E402
from comfyui_facesnap.evaluation.comfy_client import ComfyClient, ServerError, ServerUnreachable  # noqa: E402
from comfyui_facesnap.evaluation.generation import ModeRun, find_people, safe_name  # noqa: E402
from comfyui_facesnap.evaluation.server_pool import DEFAULT_DEAD_AFTER_S, DEFAULT_DEPTH  # noqa: E402
from comfyui_facesnap.evaluation.workflow_modes import get_mode  # noqa: E402
from comfyui_facesnap.models.errors import FaceSnapError, InvalidInputError, ModelFileError  # noqa: E402
from comfyui_facesnap.models.face_analysis.recognisers import JUDGES  # noqa: E402

DEFAULT_WORKFLOW = PACK_ROOT / "workflows" / "facesnap_portrait.json"
ICT_FILE = "ict_face_narrow.npz"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    where = parser.add_argument_group("servers")
    where.add_argument("--server", action="append", default=[],
                       help="URL of a running ComfyUI with the pack installed; repeat it to share the prompts out "
                            "over several servers")
    where.add_argument("--queue-depth", type=int, default=DEFAULT_DEPTH,
                       help="prompts kept queued on each server (default %(default)s)")
    where.add_argument("--dead-after", type=float, default=DEFAULT_DEAD_AFTER_S,
                       help="seconds without an answer before a server is given up and its prompts go to the others "
                            "(default %(default)s)")
    where.add_argument("--comfyui", type=pathlib.Path, help="ComfyUI folder (main.py): start a server for the run")
    where.add_argument("--base-directory", type=pathlib.Path,
                       help="with --comfyui: a fresh base directory for the server (models/, input/, output/); this "
                            "checkout is linked into its custom_nodes. Default: the ComfyUI folder as it is")
    where.add_argument("--custom-node", type=pathlib.Path, action="append", default=[],
                       help="with --base-directory: another custom node folder to link in (repeatable)")
    where.add_argument("--gpu", action="store_true", help="with --comfyui: let the server use the GPU")
    what = parser.add_argument_group("what to generate")
    what.add_argument("--references", type=pathlib.Path, help="folder with one sub-folder per person")
    what.add_argument("--benchmark", type=pathlib.Path,
                      help="instead of --references/--prompts: a folder laid out like Unsplash-50 (one portrait per "
                           "identity, prompts.txt); adds PuLID's and Diff-PC's Unsplash-50 table layouts")
    what.add_argument("--held-out", type=pathlib.Path,
                      help="other photos of the same people (one sub-folder per person, never given to the "
                           "generator), for the copy-paste score")
    what.add_argument("--prompts", type=pathlib.Path, help="text file, one prompt per line")
    what.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    what.add_argument("--seeds", type=int, nargs="+", default=[1])
    what.add_argument("--workflow", type=pathlib.Path, default=DEFAULT_WORKFLOW,
                      help="UI or API workflow JSON of the workflow and sdxl modes "
                           "(default: workflows/facesnap_portrait.json)")
    what.add_argument("--mode", action="append", metavar="NAME[=WORKFLOW]",
                      help="workflow (as given), sdxl (plain SDXL baseline) or instantid (default workflow "
                           "workflows/instantid_portrait.json); repeatable; default: workflow")
    what.add_argument("--drive", type=pathlib.Path, help="drive photo, for workflows that take one")
    how = parser.add_argument_group("metrics (local model files only)")
    how.add_argument("--face-backend", choices=["insightface", "dlib"], default="insightface",
                     help="face detector and landmarks: insightface (antelopev2) or dlib")
    how.add_argument("--judge", action="append", choices=list(JUDGES),
                     help="a face-recognition judge scoring likeness (repeatable); default: every judge whose files "
                          "are found, the others listed as not run")
    how.add_argument("--judge-folder", type=pathlib.Path, action="append", default=[],
                     help="folder with the judges' published weights: CurricularFace_Backbone.pth, "
                          "adaface_ir101_webface12m.ckpt, 20180402-114759-vggface2.pt (default: "
                          "<comfyui>/models/face_recognition)")
    how.add_argument("--facenet-margin", type=float, default=0.0,
                     help="FaceNet crop margin in pixels of its 160 px crop (facenet-pytorch's MTCNN margin; "
                          "default 0, its default)")
    how.add_argument("--insightface-root", type=pathlib.Path, help="folder holding models/antelopev2 "
                     "(default: <comfyui>/models/insightface, else ~/.insightface)")
    how.add_argument("--clip", help="open_clip architecture (e.g. ViT-H-14) or local-dir:FOLDER")
    how.add_argument("--clip-checkpoint", type=pathlib.Path, help="weights file for --clip ARCHITECTURE")
    how.add_argument("--no-clip", action="store_true", help="leave CLIP-T and CLIP-face out")
    how.add_argument("--fid-weights", type=pathlib.Path, help="weights-inception-2015-12-05-6726825d.pth")
    how.add_argument("--fid-features", type=int, default=2048, choices=[64, 192, 768, 2048],
                     help="Inception layer (2048 is the standard FID)")
    how.add_argument("--no-fid", action="store_true", help="leave FID out")
    how.add_argument("--3dmm", dest="morphable", type=pathlib.Path, help=f"converted ICT-FaceKit model ({ICT_FILE})")
    how.add_argument("--no-3dmm", action="store_true", help="leave the pose, expression and shape errors out")
    how.add_argument("--device", default=None, help="device for the metric models (default: cuda if available)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder (reused to resume)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.server) == bool(args.comfyui):
        parser.error("give --server URL (one or more) or --comfyui PATH")
    if bool(args.references) == bool(args.benchmark):
        parser.error("give exactly one of --references DIR and --benchmark DIR")
    return args


def read_prompts(args, benchmark_prompts=()) -> list[str]:
    prompts = list(args.prompt) + (read_prompt_file(args.prompts) if args.prompts else [])
    prompts = prompts or list(benchmark_prompts)
    if not prompts:
        raise InvalidInputError("no prompt given", "pass --prompts FILE or --prompt TEXT (or put prompts.txt in the "
                                "--benchmark folder)")
    return prompts


def read_people(args):
    """(people, prompts, held-out photos) from --references/--prompts or --benchmark, and --held-out."""
    if args.benchmark:
        people, benchmark_prompts = read_benchmark(args.benchmark)
    else:
        people, benchmark_prompts = find_people(args.references), []
        if not people:
            raise InvalidInputError(f"no person folder with photos in {args.references}",
                                    "put each person's reference photos in a sub-folder of --references")
    held_out = find_people(args.held_out) if args.held_out else {}
    unknown = sorted(set(held_out) - set(people))
    if unknown:
        raise InvalidInputError(f"--held-out has photos of {', '.join(unknown)}, who has no reference photos",
                                "name each held-out sub-folder like the person's reference sub-folder")
    return people, read_prompts(args, benchmark_prompts), held_out


def load_prompt(path: pathlib.Path, client: ComfyClient) -> dict:
    workflow = json.loads(path.read_text())
    return ui_to_api(workflow, client.object_info()) if "nodes" in workflow else workflow


def mode_runs(args, client: ComfyClient) -> list[ModeRun]:
    runs, labels = [], set()
    for spec in args.mode or ["workflow"]:
        name, _, path = spec.partition("=")
        mode = get_mode(name)
        workflow = pathlib.Path(path) if path else args.workflow
        if not path and mode.default_workflow:
            workflow = PACK_ROOT / "workflows" / mode.default_workflow
        label = workflow.stem if name == "workflow" else name
        if label in labels:
            label = f"{label}_{workflow.stem}"
        labels.add(label)
        runs.append(ModeRun(label, mode, mode.template(load_prompt(workflow, client)), workflow.name))
    if any(run.mode.needs_drive(run.template) for run in runs) and args.drive is None:
        raise InvalidInputError("a workflow takes a drive photo (pose and expression)", "pass --drive PHOTO")
    return runs


def load_judges(args, scorers, settings: dict, insightface_roots: list, device: str, provider: str) -> None:
    """Every judge asked for (or found), in the order of the table; the others go to the notes with the reason."""
    from comfyui_facesnap.models.face_analysis.recognisers import judge_file, judge_status, load_judge

    folders = args.judge_folder or ([args.comfyui / "models" / "face_recognition"] if args.comfyui else [])
    for name, spec in JUDGES.items():
        why = judge_status(name, folders, insightface_roots)
        if why is not None:
            if args.judge and name in args.judge:
                raise ModelFileError(f"the {name} judge cannot run: {why}", f"get {spec.source}, or leave out "
                                     f"--judge {name}")
            scorers.notes[spec.metric] = why
            continue
        if args.judge and name not in args.judge:
            scorers.notes[spec.metric] = "not asked for (--judge)"
            continue
        scorers.judges.append(load_judge(name, folders, insightface_roots, device, provider,
                                         facenet_margin=args.facenet_margin))
        path = judge_file(spec, folders)
        settings.setdefault("judges", {})[name] = pathlib.Path(path).name if path else spec.feature
    if not scorers.judges:
        raise ModelFileError("no face-recognition judge is available: " + "; ".join(scorers.notes.values()),
                             "install dlib (pip install dlib-bin face-recognition-models) or give a judge's weights")


def build_scorers(args):
    import torch

    from comfyui_facesnap.evaluation.scoring import Scorers
    from comfyui_facesnap.models.face_analysis import DEFAULT_INSIGHTFACE_ROOT, load_analyzer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = args.insightface_root or (args.comfyui / "models" / "insightface" if args.comfyui else None)
    provider = "CUDA" if device.startswith("cuda") else "CPU"
    analyzer = load_analyzer(args.face_backend, insightface_root=root, provider=provider)
    scorers, settings = Scorers(analyzer), {"face_backend": args.face_backend, "metric_device": device}
    load_judges(args, scorers, settings, [root or DEFAULT_INSIGHTFACE_ROOT], device, provider)
    if args.no_clip:
        scorers.notes.update({"CLIP-T": "--no-clip", "CLIP-face": "--no-clip"})
    else:
        from comfyui_facesnap.evaluation.clip_scores import ClipScorer

        if not args.clip:
            raise ModelFileError("CLIP-T and CLIP-face need an open_clip model",
                                 "pass --clip ViT-H-14 --clip-checkpoint FILE (or --clip local-dir:FOLDER), "
                                 "or --no-clip")
        scorers.clip = ClipScorer.load(args.clip, args.clip_checkpoint, device)
        settings["clip"] = f"open_clip {args.clip}" + (f" + {args.clip_checkpoint.name}"
                                                       if args.clip_checkpoint else "")
    if args.no_fid:
        scorers.notes["FID"] = "--no-fid"
    else:
        from comfyui_facesnap.evaluation.fid import load_inception

        scorers.fid_extractor = load_inception(args.fid_weights, args.fid_features).to(device)
        settings["fid"] = f"torchmetrics, Inception {args.fid_weights.name}, {args.fid_features} features"
    if args.no_3dmm:
        scorers.notes.update({m: "--no-3dmm" for m in ("Pose", "Expr", "Shape")})
    else:
        from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz

        if args.morphable is None:
            raise ModelFileError(f"the pose, expression and shape errors need the 3DMM file {ICT_FILE}",
                                 "pass --3dmm PATH (see the README for converting ICT-FaceKit), or --no-3dmm")
        scorers.morphable = load_ict_npz(args.morphable)
        settings["3dmm"] = args.morphable.name
    return scorers, settings


def reachable_clients(urls: list[str]) -> list[ComfyClient]:
    """A client per server that answers now; the others are named and left out (all out: an error)."""
    clients, missing = [], []
    for url in urls:
        client = ComfyClient(url)
        try:
            client.system_stats()
            clients.append(client)
        except ServerUnreachable as err:
            missing.append(str(err))
    if not clients:
        raise ServerError("; ".join(missing))
    for why in missing:
        print(f"facesnap_eval: leaving out a server: {why}", file=sys.stderr)
    return clients


def evaluate(args, urls: list[str]) -> dict:
    from comfyui_facesnap.evaluation.pipeline import run_evaluation

    clients = reachable_clients(urls)
    people, prompts, held_out = read_people(args)
    runs = mode_runs(args, clients[0])
    scorers, settings = build_scorers(args)
    settings.update(servers=[c.url for c in clients], modes={run.label: run.workflow_name for run in runs},
                    people=len(people), prompts=len(prompts), seeds=list(args.seeds), held_out=bool(held_out))
    if args.benchmark:
        settings.update(protocol="unsplash50", benchmark=args.benchmark.name)
    summary = run_evaluation(clients, runs, people, prompts, args.seeds, args.drive, scorers, args.out, settings,
                             progress=not args.no_progress, held_out=held_out,
                             pool={"depth": args.queue_depth, "dead_after_s": args.dead_after})
    print((args.out / "results.md").read_text())
    print(f"wrote {args.out / 'results.json'}, results.md, per_image.csv and contact_sheet.png")
    return summary


def prepare_base(args) -> pathlib.Path:
    from comfyui_facesnap.devkit.comfy_server import link_pack

    base = args.base_directory
    for sub in ("custom_nodes", "input", "output", "models", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link_pack(base)
    for folder in args.custom_node:
        link = base / "custom_nodes" / safe_name(folder.resolve().name)
        if not link.exists():
            link.symlink_to(folder.resolve(), target_is_directory=True)
    return base


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        if args.server:
            return evaluate(args, args.server)
        from comfyui_facesnap.devkit.comfy_server import comfy_server

        base = prepare_base(args) if args.base_directory else args.comfyui
        args.out.mkdir(parents=True, exist_ok=True)
        with comfy_server(args.comfyui, base, args.out / "server.log", cpu=not args.gpu) as server:
            return evaluate(args, [server.url])
    except (FaceSnapError, ServerError) as err:
        sys.exit(f"facesnap_eval: {err}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # open_clip must never reach for a hub
    main()
