"""Evaluate a FaceSnap workflow like the papers: FaceSnap's Table 1 and Diff-PC's pose/expression/shape errors.

Generates every (mode, person, prompt, seed) through a ComfyUI server over HTTP, so it measures exactly what artists
run: joins a running server (``--server URL``) or starts one (``--comfyui PATH``, as ``make demo`` does). The
reference photos (``--references DIR``: one sub-folder per person), prompt, seed and drive photo are patched into the
workflow by node type and title (see evaluation/workflow_modes.py). Finished images are kept in ``--out`` and
skipped when the run is repeated.

    python scripts/facesnap_eval.py --server http://127.0.0.1:8188 --references photos/ --prompts prompts.txt \\
        --seeds 1 2 3 --workflow workflows/facesnap_portrait.json --mode workflow --mode sdxl \\
        --insightface-root ComfyUI/models/insightface --clip ViT-H-14 --clip-checkpoint open_clip_pytorch_model.bin \\
        --fid-weights weights-inception-2015-12-05-6726825d.pth --3dmm ComfyUI/models/3dmm/ict_face_narrow.npz \\
        --out eval_out

Modes: ``workflow`` (the --workflow as given), ``sdxl`` (plain SDXL baseline derived from the --workflow) and
``instantid`` (InstantID's public weights, workflows/instantid_portrait.json); ``--mode NAME=WORKFLOW`` gives a mode
its own workflow file, e.g. ``--mode instantid --mode sdxl=workflows/instantid_portrait.json`` for InstantID beside
the plain SDXL of the same checkpoint, size, steps and CFG. Outputs: results.json, results.md (Table 1 layout),
per_image.csv, contact_sheet.png. Every model file is local; a missing one stops the run with its name and the flag
that leaves its metric out (--no-clip, --no-fid, --no-3dmm).
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
from comfyui_facesnap.evaluation.comfy_client import ComfyClient, ServerError  # noqa: E402
from comfyui_facesnap.evaluation.generation import ModeRun, find_people, safe_name  # noqa: E402
from comfyui_facesnap.evaluation.workflow_modes import get_mode  # noqa: E402
from comfyui_facesnap.models.errors import FaceSnapError, InvalidInputError, ModelFileError  # noqa: E402

DEFAULT_WORKFLOW = PACK_ROOT / "workflows" / "facesnap_portrait.json"
ICT_FILE = "ict_face_narrow.npz"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    where = parser.add_argument_group("server")
    where.add_argument("--server", help="URL of a running ComfyUI (the pack installed in it)")
    where.add_argument("--comfyui", type=pathlib.Path, help="ComfyUI folder (main.py): start a server for the run")
    where.add_argument("--base-directory", type=pathlib.Path,
                       help="with --comfyui: a fresh base directory for the server (models/, input/, output/); this "
                            "checkout is linked into its custom_nodes. Default: the ComfyUI folder as it is")
    where.add_argument("--custom-node", type=pathlib.Path, action="append", default=[],
                       help="with --base-directory: another custom node folder to link in (repeatable)")
    where.add_argument("--gpu", action="store_true", help="with --comfyui: let the server use the GPU")
    what = parser.add_argument_group("what to generate")
    what.add_argument("--references", type=pathlib.Path, required=True, help="folder with one sub-folder per person")
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
                     help="insightface: FaceSim with antelopev2 glintr100 (the papers'); dlib: FaceSim-dlib fallback")
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
        parser.error("give exactly one of --server URL and --comfyui PATH")
    return args


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts:
        prompts += [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    if not prompts:
        raise InvalidInputError("no prompt given", "pass --prompts FILE or --prompt TEXT")
    return prompts


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


def build_scorers(args):
    import torch

    from comfyui_facesnap.evaluation.scoring import Scorers
    from comfyui_facesnap.models.face_analysis import load_analyzer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = args.insightface_root or (args.comfyui / "models" / "insightface" if args.comfyui else None)
    analyzer = load_analyzer(args.face_backend, insightface_root=root,
                             provider="CUDA" if device.startswith("cuda") else "CPU")
    scorers, settings = Scorers(analyzer), {"face_backend": args.face_backend, "metric_device": device}
    if args.no_clip:
        scorers.notes.update({"CLIP-T": "--no-clip", "CLIP-face": "--no-clip"})
    else:
        from comfyui_facesnap.evaluation.clip_scores import ClipScorer

        if not args.clip:
            raise ModelFileError("CLIP-T and CLIP-face need an open_clip model",
                                 "pass --clip ViT-H-14 --clip-checkpoint FILE (or --clip local-dir:FOLDER), or --no-clip")
        scorers.clip = ClipScorer.load(args.clip, args.clip_checkpoint, device)
        settings["clip"] = f"open_clip {args.clip}" + (f" + {args.clip_checkpoint.name}" if args.clip_checkpoint else "")
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


def evaluate(args, url: str) -> dict:
    from comfyui_facesnap.evaluation.pipeline import run_evaluation

    client = ComfyClient(url)
    people = find_people(args.references)
    if not people:
        raise InvalidInputError(f"no person folder with photos in {args.references}",
                                "put each person's reference photos in a sub-folder of --references")
    prompts = read_prompts(args)
    runs = mode_runs(args, client)
    scorers, settings = build_scorers(args)
    settings.update(server=url, modes={run.label: run.workflow_name for run in runs}, people=len(people),
                    prompts=len(prompts), seeds=list(args.seeds))
    summary = run_evaluation(client, runs, people, prompts, args.seeds, args.drive, scorers, args.out, settings,
                             progress=not args.no_progress)
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
            return evaluate(args, server.url)
    except (FaceSnapError, ServerError) as err:
        sys.exit(f"facesnap_eval: {err}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # open_clip must never reach for a hub
    main()
