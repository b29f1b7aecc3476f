"""Reference outputs of the official face-recognition code, for the tests of the pack's judges
(``tests/face_analysis/test_face_judges.py``).

Runs the authors' own code from local checkouts given as arguments (never copied into this repository):

    python scripts/reference_judges.py --facenet-pytorch /tmp/facenet-pytorch --adaface /tmp/AdaFace \\
        --curricularface /tmp/CurricularFace --out tests/fixtures/judges

It was run on these upstream commits (written into each fixture's metadata):

    timesler/facenet-pytorch   787da06156087cd6b616fe6608213722bddc30cd
    mk-minchul/AdaFace         c60eaa786a42c03444f3df7096dbaf9d57ae010d
    HuangYG123/CurricularFace  68c8727fb7cd2243ecbfd7e09c35efc87c6e2de4

For each network (facenet-pytorch's ``InceptionResnetV1``, AdaFace's ``net.build_model('ir_101')``, CurricularFace's
``backbone.model_irse.IR_101``) the official model is built, filled with seeded random full-size weights drawn from
its own state dict's names and shapes (``devkit/random_judge_weights``), and run on seeded random inputs; the
fixture keeps the seeds, the digest of the names and shapes, and the outputs (a few KB), never the weights. It also
keeps what the official preprocessing makes of seeded inputs: facenet-pytorch's ``extract_face`` crop (every 8th
pixel) and ``fixed_image_standardization``, AdaFace's alignment matrix (``get_similarity_transform_for_cv2`` onto
``get_reference_facial_points(default_square=True)``) and its ``to_input``, and CurricularFace's test transform.
Nothing is downloaded; the checkouts' modules are loaded from their files.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import types

import numpy as np

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.load_pack()
from comfyui_facesnap.devkit.random_judge_weights import (  # noqa: E402  (after pack_import.load_pack())
    CROP_STRIDE,
    FACENET_BOXES,
    FACENET_IMAGE,
    IMAGE_SEED,
    layout_digest,
    random_faces,
    random_state_dict,
    seeded_image,
    seeded_keypoints,
)

UPSTREAM = {
    "facenet": ("timesler/facenet-pytorch", "787da06156087cd6b616fe6608213722bddc30cd"),
    "adaface": ("mk-minchul/AdaFace", "c60eaa786a42c03444f3df7096dbaf9d57ae010d"),
    "curricularface": ("HuangYG123/CurricularFace", "68c8727fb7cd2243ecbfd7e09c35efc87c6e2de4"),
}
WEIGHT_SEED, INPUT_SEED = 2101, 2102
BATCH = 2


def load_file(name: str, path: pathlib.Path, package_path: pathlib.Path | None = None):
    """A module (or, with ``package_path``, a package) loaded from its file, registered under ``name``."""
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package_path)] if package_path else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def checkout_commit(path: pathlib.Path, expected: str) -> str:
    """The checkout's commit when it is a git work tree (warns when it is not the documented one), else the
    documented commit the files were taken from."""
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = done.stdout.strip() if done.returncode == 0 else expected
    if commit != expected:
        print(f"warning: {path} is at {commit}, the fixtures were made from {expected}", file=sys.stderr)
    return commit


def network_outputs(model, size: int, forward) -> tuple[dict, dict]:
    import torch

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_state_dict(shapes, WEIGHT_SEED))
    model.eval()
    with torch.no_grad():
        output = forward(model, random_faces(BATCH, size, INPUT_SEED))
    meta = {"weight_seed": str(WEIGHT_SEED), "input_seed": str(INPUT_SEED), "batch": str(BATCH),
            "input_size": str(size), "layout_digest": layout_digest(shapes), "tensors": str(len(shapes))}
    return {"output": output.float().contiguous()}, meta


def facenet_reference(checkout: pathlib.Path) -> tuple[dict, dict]:
    import torch

    package = load_file("facenet_pytorch", checkout / "__init__.py", checkout)
    tensors, meta = network_outputs(package.InceptionResnetV1(), 160, lambda m, x: m(x))
    image = seeded_image(*FACENET_IMAGE)
    for i, (*box, margin) in enumerate(FACENET_BOXES):
        crop = package.extract_face(image, np.array(box), 160, margin)  # numpy path: cv2 INTER_AREA
        tensors[f"crop{i}"] = crop[:, ::CROP_STRIDE, ::CROP_STRIDE].round().to(torch.uint8).contiguous()
    pixels = torch.arange(0, 256, dtype=torch.float32).reshape(1, 256)
    tensors["standardised"] = package.fixed_image_standardization(pixels).contiguous()
    return tensors, meta


def adaface_reference(checkout: pathlib.Path) -> tuple[dict, dict]:
    import torch

    net = load_file("adaface_net", checkout / "net.py")
    tensors, meta = network_outputs(net.build_model("ir_101"), 112, lambda m, x: m(x)[0])
    src = checkout / "face_alignment" / "mtcnn_pytorch" / "src"
    for name in ("mtcnn_pytorch", "mtcnn_pytorch.src"):  # align_trans imports mtcnn_pytorch.src.matlab_cp2tform
        sys.modules.setdefault(name, types.ModuleType(name))
    cp2tform = load_file("mtcnn_pytorch.src.matlab_cp2tform", src / "matlab_cp2tform.py")
    align = load_file("adaface_align_trans", src / "align_trans.py")
    reference = align.get_reference_facial_points(default_square=True)
    tensors["matrices"] = torch.from_numpy(np.ascontiguousarray(np.stack([
        cp2tform.get_similarity_transform_for_cv2(np.float32(kps), np.float32(reference))
        for kps in seeded_keypoints()]), np.float32))
    inference = load_file("adaface_inference_helpers", _to_input_only(checkout / "inference.py"))
    tensors["to_input"] = inference.to_input(seeded_image(4, 4)).contiguous()
    return tensors, meta


def _to_input_only(path: pathlib.Path) -> pathlib.Path:
    """AdaFace's inference.py imports its MTCNN and a CUDA device at import time; its ``to_input`` alone is
    written to a temporary file next to nothing else (imports: numpy, torch)."""
    import ast
    import tempfile

    tree = ast.parse(path.read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "to_input")
    out = pathlib.Path(tempfile.mkdtemp()) / "to_input.py"
    out.write_text("import numpy as np\nimport torch\n\n" + ast.unparse(function) + "\n")
    return out


def curricularface_reference(checkout: pathlib.Path) -> tuple[dict, dict]:
    import torchvision.transforms as transforms
    from PIL import Image

    irse = load_file("curricularface_model_irse", checkout / "backbone" / "model_irse.py")
    tensors, meta = network_outputs(irse.IR_101((112, 112)), 112, lambda m, x: m(x)[0])
    rgb_mean, rgb_std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # config.py RGB_MEAN / RGB_STD, train.py's transform
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=rgb_mean, std=rgb_std)])
    tensors["to_input"] = transform(Image.fromarray(seeded_image(4, 4))).unsqueeze(0).contiguous()
    return tensors, meta


def main(argv=None) -> None:
    import torch
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facenet-pytorch", type=pathlib.Path, required=True, help="timesler/facenet-pytorch checkout")
    parser.add_argument("--adaface", type=pathlib.Path, required=True, help="mk-minchul/AdaFace checkout")
    parser.add_argument("--curricularface", type=pathlib.Path, required=True, help="HuangYG123/CurricularFace checkout")
    parser.add_argument("--out", type=pathlib.Path, default=PACK_ROOT / "tests" / "fixtures" / "judges")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make, checkout in (("facenet", facenet_reference, args.facenet_pytorch),
                                 ("adaface", adaface_reference, args.adaface),
                                 ("curricularface", curricularface_reference, args.curricularface)):
        repo, commit = UPSTREAM[name]
        tensors, meta = make(checkout.resolve())
        meta.update(upstream=repo, commit=checkout_commit(checkout, commit), torch=torch.__version__,
                    image_seed=str(IMAGE_SEED))
        save_file(tensors, str(args.out / f"{name}.safetensors"), metadata=meta)
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items())
        print(f"{name}: {shapes} -> {args.out / name}.safetensors")


if __name__ == "__main__":
    main()
