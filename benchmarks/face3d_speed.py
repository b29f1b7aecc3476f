"""Speed of the Landmark Predictor's fit and of the pure-PyTorch shaded render (moved out of the tests: a timing
assert fails whenever the machine is busy).

Timings are the minimum of --repeats runs after a warm-up (the machine may be shared: the minimum is the least
disturbed run), in wall time on the CPU unless --device says otherwise.

    python benchmarks/face3d_speed.py [--model ../shared/3dmm/ict_face_narrow.npz] [--repeats 5] [--device cpu]

Without --model the procedural stand-in (devkit/synthetic_face_model.py, same vertex count) is used.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
import tempfile
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def min_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=pathlib.Path, help="a converted ICT-FaceKit npz (default: the stand-in)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="where the render runs (cpu, cuda, ...)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.load_pack()
    from comfyui_facesnap.devkit.synthetic_face_model import write_synthetic_face_model
    from comfyui_facesnap.models.face3d.face_fitting import euler_to_matrix, fit_landmarks, landmarks_image
    from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz
    from comfyui_facesnap.models.face3d.rasterizer import render_shaded

    with tempfile.TemporaryDirectory() as tmp:
        model = load_ict_npz(args.model or write_synthetic_face_model(pathlib.Path(tmp) / "ict_face_narrow.npz"))
    print(f"model: {args.model or 'procedural stand-in'}, {model.neutral.shape[0]} vertices, "
          f"{model.triangles.shape[0]} triangles; threads: {torch.get_num_threads()}")

    gen = torch.Generator().manual_seed(0)
    n = 16
    rotation = euler_to_matrix(40 * torch.rand(n, generator=gen) - 20, 8 * torch.randn(n, generator=gen),
                               torch.zeros(n))
    observed = landmarks_image(model, torch.randn(n, model.num_id, generator=gen), torch.zeros(n, model.num_exp),
                               rotation, torch.full((n,), 110.0), torch.full((n, 2), 256.0), with_extras=False)
    observed = observed + torch.randn(observed.shape, generator=gen)
    batched = min_time(lambda: fit_landmarks(model, observed), args.repeats)
    single = min_time(lambda: fit_landmarks(model, observed[:1]), args.repeats)
    print(f"fit: {batched / n * 1e3:.1f} ms per face batched ({n} faces), {single * 1e3:.1f} ms for one face")

    for size in (512, 1024):
        verts = model.neutral * (0.3 * size)
        verts = torch.stack([verts[:, 0] + size / 2, -verts[:, 1] + size / 2, verts[:, 2]], 1).to(args.device)
        seconds = min_time(functools.partial(render_shaded, verts, model.triangles, size, size, backend="torch"),
                           args.repeats)
        print(f"shaded render {size}x{size} on {args.device}: {seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
