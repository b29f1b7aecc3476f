"""Reference tensors from the official PuLID and facexlib code, for the pack's EVA-CLIP tower, face parser and PuLID
face input: writes tests/fixtures/pulid_eva_clip_reference.safetensors and pulid_face_input_reference.safetensors.

Ran on (the fixtures' metadata records the commits and library versions of the run that wrote them):
    ToTheBeginning/PuLID  1aa2fc7df4bf51080df39f355f9abdc1cbfefbaa   eva_clip/, pulid/pipeline.py
    xinntao/facexlib      260620ae93990a300f4b16448df9bb459f1caba9   (= facexlib 0.3.0) parsing/, utils/

Both are read from local checkouts outside the repo and run as they are, fp32 on the CPU, with ComfyUI's Python (it
has the libraries they import: timm, einops, ftfy, diffusers, transformers, insightface, torchsde, torchvision):

    git clone https://github.com/ToTheBeginning/PuLID /tmp/PuLID
    git clone https://github.com/xinntao/facexlib /tmp/facexlib
    python scripts/reference_pulid_parts.py --pulid /tmp/PuLID --facexlib /tmp/facexlib

What runs, with seeded random weights at full size (``devkit.seeded_weights``: sorted names, one generator):

1. The tower: ``eva_clip.create_model_and_transforms("EVA02-CLIP-L-14-336", force_custom_clip=True)`` as PuLID's
   pipeline builds it (no pretrained file), its ``.visual`` filled with ``eva_clip_spec`` weights from EVA_SEED
   (the RoPE tables stay the model's own), run with ``return_hidden=True`` on ``randn(1, 3, 336, 336)`` drawn from
   INPUT_SEED. Kept: the embedding, the five hidden states at TOKENS and projected on PROJECTION_SEED directions,
   rows of the RoPE tables, and the names and shapes of the official tower and of the whole CLIP (the layout of the
   published file, which eva_clip loads into that model).
2. The face input: ``PuLIDPipeline.get_id_embedding`` itself on photos from the insightface wheel, with facexlib's
   ``FaceRestoreHelper(face_size=512)`` whose detector returns the pack's dlib faces (the pack's own keypoints;
   facexlib still picks the centre face), ``face_parse`` = facexlib's BiSeNet with ``bisenet_spec`` weights from
   BISENET_SEED, ``clip_vision_model`` = the tower of 1. Only what the pack computes is compared: insightface's
   embedding and the IDEncoder are stand-ins that record their inputs. Kept per face: the keypoints facexlib used,
   block means and a hash of the aligned face, sampled parsing logits, the background mask (the labels PuLID
   whites out, of the recorded logits), the tower's input (sampled, with sums), its embedding and PuLID's
   normalised features.

The installed torchvision decides whether PuLID's tensor ``resize`` antialiases (on since torchvision 0.17); the
metadata records which.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import types
import zlib

EVA_SEED, INPUT_SEED, PROJECTION_SEED, BISENET_SEED = 2024, 7, 11, 5
TOKENS = (0, 1, 300, 576)  # class token, first, a middle and the last patch
PROJECTIONS = 4
ROPE_ROWS = (0, 1, 23, 24, 300, 575)
FACES = {"tom": "Tom_Hanks_54745.png", "t1": "t1.jpg"}
LOGIT_GRID = slice(5, 512, 32)  # 16 x 16 samples of the 512 x 512 logits
INPUT_GRID = slice(0, 336, 8)  # 42 x 42 samples of the tower's input
CROP_BLOCK = 16
EVA_FIXTURE = "pulid_eva_clip_reference.safetensors"
FACE_FIXTURE = "pulid_face_input_reference.safetensors"


def _commit(folder: pathlib.Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _package(name: str, folder: pathlib.Path) -> None:
    """Register ``folder`` as package ``name`` without running its ``__init__`` (facexlib's needs a generated
    version file; PuLID's ``pulid`` has none), so ``import name.sub`` reads the checkout."""
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


def _import_official(pulid: pathlib.Path, facexlib: pathlib.Path):
    init = pulid / "eva_clip" / "__init__.py"
    spec = importlib.util.spec_from_file_location("eva_clip", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["eva_clip"] = module
    spec.loader.exec_module(module)
    _package("pulid", pulid / "pulid")
    _package("facexlib", facexlib / "facexlib")
    import facexlib.utils.face_restoration_helper as helper_module
    import pulid.pipeline as pipeline_module
    from facexlib.parsing.bisenet import BiSeNet

    return module, pipeline_module, helper_module, BiSeNet


def _fill(module, tensors: dict) -> None:
    import torch

    missing, unexpected = module.load_state_dict(tensors, strict=False)
    assert not unexpected and all("rope.freqs" in k or k.endswith("num_batches_tracked") for k in missing), missing
    module.eval().requires_grad_(False)
    assert all(p.dtype == torch.float32 for p in module.parameters())


class _Recorder:
    """Wraps a module (or nothing), records the call's inputs and output, returns ``output(...)``."""

    def __init__(self, module=None, output=None, **attributes):
        self.module, self.output, self.calls = module, output, []
        vars(self).update(attributes)

    def __call__(self, *args, **kwargs):
        result = self.module(*args, **kwargs) if self.module is not None else self.output(*args)
        self.calls.append((args, kwargs, result))
        return result


class _Detector:
    """facexlib's detector interface, returning the pack's faces: rows (x1, y1, x2, y2, score, 5 x (x, y))."""

    def __init__(self, records):
        import numpy as np

        self.rows = np.array([np.concatenate([r.bbox, [r.score], r.kps5.reshape(-1)]) for r in records], np.float32)

    def detect_faces(self, image, conf_threshold=0.8):
        return self.rows.copy()


def eva_reference(eva_clip, torch):
    from comfyui_facesnap.devkit.seeded_weights import eva_clip_spec, fingerprint, seeded_tensors

    model, _, _ = eva_clip.create_model_and_transforms("EVA02-CLIP-L-14-336", force_custom_clip=True)
    visual = model.visual
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}  # the whole CLIP, as the file holds it
    shapes = {k: tuple(v.shape) for k, v in visual.state_dict().items() if "rope.freqs" not in k}
    weights = seeded_tensors(eva_clip_spec(shapes), EVA_SEED)
    _fill(visual, weights)
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(INPUT_SEED))
    with torch.no_grad():
        embedding, hidden = visual(pixels, return_all_features=False, return_hidden=True, shuffle=False)
    projection = torch.randn(1024, PROJECTIONS, generator=torch.Generator().manual_seed(PROJECTION_SEED)) / 32
    stacked = torch.cat(hidden)  # (5, 577, 1024)
    tensors = {"embedding": embedding, "hidden_tokens": stacked[:, list(TOKENS)],
               "hidden_projected": stacked @ projection,
               "rope_cos_rows": visual.rope.freqs_cos[list(ROPE_ROWS)],
               "rope_sin_rows": visual.rope.freqs_sin[list(ROPE_ROWS)]}
    metadata = {"eva_seed": EVA_SEED, "input_seed": INPUT_SEED, "projection_seed": PROJECTION_SEED,
                "projections": PROJECTIONS, "tokens": list(TOKENS), "rope_rows": list(ROPE_ROWS),
                "weights_fingerprint": fingerprint(weights), "official_shapes": shapes, "clip_layout": layout,
                "image_mean": list(visual.image_mean), "image_std": list(visual.image_std)}
    return visual, tensors, metadata


def _face_run(pipeline_module, helper_module, bisenet, visual, rgb, records, torch):
    """``get_id_embedding`` on one photo; -> (aligned BGR crop, keypoints used, parser call, tower call, features)."""
    import numpy as np

    helper_module.init_detection_model = lambda *args, **kwargs: _Detector(records)
    helper_module.init_parsing_model = lambda *args, **kwargs: None  # PuLID replaces it with BiSeNet below
    pipe = object.__new__(pipeline_module.PuLIDPipeline)
    pipe.device = "cpu"
    pipe.debug_img_list = []
    pipe.face_helper = helper_module.FaceRestoreHelper(upscale_factor=1, face_size=512, crop_ratio=(1, 1),
                                                       det_model="retinaface_resnet50", save_ext="png", device="cpu")
    pipe.face_helper.face_parse = _Recorder(bisenet)
    pipe.clip_vision_model = _Recorder(visual, image_size=visual.image_size)
    # what PuLIDPipeline.__init__ reads from the tower (tuples already)
    pipe.eva_transform_mean, pipe.eva_transform_std = visual.image_mean, visual.image_std
    largest = max(records, key=lambda r: r.area)
    pipe.app = types.SimpleNamespace(get=lambda image: [{"bbox": largest.bbox, "embedding": np.zeros(512, np.float32)}])
    pipe.id_adapter = _Recorder(output=lambda cond, hidden: cond[:, None])
    with torch.no_grad():
        pipe.get_id_embedding(rgb)
    helper = pipe.face_helper
    return (helper.cropped_faces[0], helper.all_landmarks_5[0], pipe.face_helper.face_parse.calls[0],
            pipe.clip_vision_model.calls[0], pipe.id_adapter.calls[0][0][0])


def face_reference(pipeline_module, helper_module, BiSeNet, visual, images: pathlib.Path, torch):
    import cv2
    import numpy as np

    from comfyui_facesnap.devkit.seeded_weights import bisenet_spec, fingerprint, seeded_tensors
    from comfyui_facesnap.models.face_analysis import load_analyzer

    bisenet = BiSeNet(num_class=19)
    shapes = {k: tuple(v.shape) for k, v in bisenet.state_dict().items() if not k.endswith("num_batches_tracked")}
    weights = seeded_tensors(bisenet_spec(shapes), BISENET_SEED)
    _fill(bisenet, weights)
    analyzer = load_analyzer("dlib")
    tensors, faces = {}, {}
    for key, file in FACES.items():
        path = images / file
        rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        crop_bgr, kps, (parse_args, _, parse_out), (eva_args, _, eva_out), cond = _face_run(
            pipeline_module, helper_module, bisenet, visual, rgb, analyzer.detect(rgb), torch)
        crop = crop_bgr[:, :, ::-1].astype(np.float64)
        blocks = crop.reshape(512 // CROP_BLOCK, CROP_BLOCK, 512 // CROP_BLOCK, CROP_BLOCK, 3).mean(axis=(1, 3))
        logits = parse_out[0]
        background = np.packbits(_background(logits, torch).numpy().reshape(-1))
        eva_input = eva_args[0]
        tensors.update({
            f"{key}.kps5": torch.from_numpy(np.asarray(kps, np.float32)),
            f"{key}.crop_blocks": torch.from_numpy(blocks.transpose(2, 0, 1).astype(np.float32)),
            f"{key}.logits": logits[:, :, LOGIT_GRID, LOGIT_GRID].contiguous(),
            f"{key}.background_zlib": torch.frombuffer(bytearray(zlib.compress(background.tobytes(), 9)),
                                                       dtype=torch.uint8),
            f"{key}.eva_input": eva_input[:, :, INPUT_GRID, INPUT_GRID].contiguous(),
            f"{key}.eva_input_sums": torch.stack([eva_input.double().sum(), eva_input.double().square().sum()]),
            f"{key}.embedding": eva_out[0], f"{key}.features": cond[:, 512:].contiguous(),
        })
        faces[key] = {"file": file, "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "crop_sha256": hashlib.sha256(np.ascontiguousarray(crop_bgr[:, :, ::-1]).tobytes()).hexdigest(),
                      "parser_input_sha256": hashlib.sha256(parse_args[0].numpy().tobytes()).hexdigest()}
    metadata = {"bisenet_seed": BISENET_SEED, "weights_fingerprint": fingerprint(weights), "faces": faces,
                "official_shapes": shapes, "logit_grid": [LOGIT_GRID.start, LOGIT_GRID.stop, LOGIT_GRID.step],
                "input_grid": [INPUT_GRID.start, INPUT_GRID.stop, INPUT_GRID.step], "crop_block": CROP_BLOCK}
    return tensors, metadata


def _background(logits, torch):
    """The mask as PuLID computes it, for storage: the labels it whites out."""
    labels = logits.argmax(dim=1, keepdim=True)
    return sum(labels == i for i in (0, 16, 18, 7, 8, 9, 14, 15)).bool()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pulid", type=pathlib.Path, required=True, help="a checkout of ToTheBeginning/PuLID")
    parser.add_argument("--facexlib", type=pathlib.Path, required=True, help="a checkout of xinntao/facexlib")
    parser.add_argument("--out", type=pathlib.Path, help="where to write the fixtures (default: tests/fixtures)")
    args = parser.parse_args(argv)
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    import pack_import

    sys.path.remove(str(root))
    pack_import.load_pack()
    import torch
    import torchvision

    from comfyui_facesnap.devkit.workflow_files import insightface_images

    torch.set_grad_enabled(False)
    eva_clip, pipeline_module, helper_module, BiSeNet = _import_official(args.pulid.resolve(), args.facexlib.resolve())
    out = args.out or root / "tests" / "fixtures"
    out.mkdir(parents=True, exist_ok=True)
    run = {"pulid_commit": _commit(args.pulid), "facexlib_commit": _commit(args.facexlib),
           "torch": torch.__version__, "torchvision": torchvision.__version__,
           "antialias": _torchvision_antialiases(torchvision.__version__)}
    visual, tensors, metadata = eva_reference(eva_clip, torch)
    _save(tensors, out / EVA_FIXTURE, run, metadata)
    tensors, metadata = face_reference(pipeline_module, helper_module, BiSeNet, visual, insightface_images(), torch)
    _save(tensors, out / FACE_FIXTURE, run, metadata)
    for name in (EVA_FIXTURE, FACE_FIXTURE):
        print(f"wrote {out / name} ({(out / name).stat().st_size / 1024:.0f} KB)")
    return 0


def _save(tensors: dict, path: pathlib.Path, run: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              {"run": json.dumps(run), "reference": json.dumps(metadata)})


def _torchvision_antialiases(version: str) -> bool:
    """torchvision's tensor resize antialiases by default from 0.17 on."""
    major, minor = (int(part) for part in version.split("+")[0].split(".")[:2])
    return (major, minor) >= (0, 17)


if __name__ == "__main__":
    sys.exit(main())
