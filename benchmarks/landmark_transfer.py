"""Landmark transfer benchmark: does [shape_src, pose_drv, expr_drv] beat copying the drive's landmarks?

Source and drive faces are sampled from the ICT-FaceKit model (seeded): identity ~ N(0, 1) over all 100 modes,
sparse expressions (each blendshape active with p = 0.15, weight U(0, 1)), source yaw U(-25, 25) degrees, drive yaw
in bins 0 / +-30 / +-60 (+-5 jitter), pitch N(0, 8), roll N(0, 5). "Detections" are the model's landmarks with the
pose-dependent jaw contour plus Gaussian noise (sigma = --noise x the inter-ocular distance, per coordinate).
Ground truth is the noise-free landmarks of [id_src, exp_drv, pose_drv]. NME = mean point error / inter-ocular
distance (outer eye corners) of the ground truth, over the 68 points.

Rows: the predictor as the node runs it by default (one reference photo), then the levers: several reference photos
of the source (shared identity), and a neutral reference with the neutral-reference assumption switched on.

    python benchmarks/landmark_transfer.py [--pairs 40] [--model ../shared/3dmm/ict_face_narrow.npz]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINS = [-60, -30, 0, 30, 60]


def load_pack():
    sys.path.insert(0, str(ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(ROOT))
    return pack_import.load_pack()


def sample_faces(model, n, yaw_centre, yaw_jitter, gen, neutral=False):
    from comfyui_facesnap.models.face3d.face_fitting import euler_to_matrix

    alpha = torch.randn(n, model.num_id, generator=gen)
    active = torch.rand(n, model.num_exp, generator=gen) < 0.15
    beta = active * torch.rand(n, model.num_exp, generator=gen) * (0.0 if neutral else 1.0)
    yaw = yaw_centre + (torch.rand(n, generator=gen) * 2 - 1) * yaw_jitter
    rotation = euler_to_matrix(yaw, 8 * torch.randn(n, generator=gen), 5 * torch.randn(n, generator=gen))
    scale = 100 + 20 * torch.rand(n, generator=gen)
    translation = 256 + 20 * torch.randn(n, 2, generator=gen)
    return alpha, beta, rotation, scale, translation


def detect(model, face, noise, gen):
    from comfyui_facesnap.models.face3d.face_fitting import landmarks_image

    clean = landmarks_image(model, *face, with_extras=False)
    return clean + noise * face[3].view(-1, 1, 1) * torch.randn(clean.shape, generator=gen)


def nme(pred, truth):
    iod = (truth[:, 36] - truth[:, 45]).norm(dim=-1)
    return ((pred[:, :68] - truth[:, :68]).norm(dim=-1).mean(1) / iod)


def run(model, pairs, noise, seed, refs, neutral_ref):
    from comfyui_facesnap.models.face3d.face_fitting import FitOptions, landmarks_image
    from comfyui_facesnap.models.face3d.landmark_predictor import fit_references_and_drive

    gen = torch.Generator().manual_seed(seed)
    rows, fit_ms = {}, []
    for centre in BINS:
        src_alpha = torch.randn(pairs, model.num_id, generator=gen)
        references = []
        for _ in range(refs):
            face = list(sample_faces(model, pairs, 0.0, 25.0, gen, neutral=neutral_ref))
            face[0] = src_alpha
            references.append(detect(model, face, noise, gen))
        drive = sample_faces(model, pairs, float(centre), 5.0, gen)
        drive_obs = detect(model, drive, noise, gen)
        truth = landmarks_image(model, src_alpha, *drive[1:], with_extras=False)
        t0 = time.perf_counter()
        src_fit, drv_fit = fit_references_and_drive(model, torch.stack(references, 1), drive_obs,
                                                    neutral_reference=neutral_ref, options=FitOptions())
        fit_ms.append((time.perf_counter() - t0) / (pairs * (refs + 1)) * 1e3)
        pred = landmarks_image(model, src_fit.alpha, drv_fit.beta, drv_fit.rotation, drv_fit.scale,
                               drv_fit.translation, with_extras=False)
        rows[centre] = (nme(pred, truth), nme(drive_obs, truth))
    return rows, sum(fit_ms) / len(fit_ms)


def report(title, rows, ms):
    print(f"\n{title}   (fit {ms:.1f} ms per face, batched)")
    print(f"{'yaw bin':>8} | {'predictor NME':>13} | {'copy-drive NME':>14} | {'improvement':>11}")
    for centre, (pred, base) in rows.items():
        print(f"{centre:>+7d}° | {pred.mean():13.4f} | {base.mean():14.4f} | {100 * (1 - pred.mean() / base.mean()):10.1f} %")
    pred = torch.cat([p for p, _ in rows.values()]).mean()
    base = torch.cat([b for _, b in rows.values()]).mean()
    improvement = 100 * (1 - pred / base)
    worse = [c for c, (p, b) in rows.items() if p.mean() > b.mean()]
    print(f"{'all':>8} | {pred:13.4f} | {base:14.4f} | {improvement:10.1f} %   bins worse than copy-drive: {worse or 'none'}")
    return float(improvement)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT.parent / "shared" / "3dmm" / "ict_face_narrow.npz"))
    parser.add_argument("--pairs", type=int, default=40, help="source/drive pairs per yaw bin")
    parser.add_argument("--noise", type=float, default=0.015, help="detection noise, fraction of the inter-ocular distance")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    load_pack()
    from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz

    model = load_ict_npz(args.model)
    print(f"ICT-FaceKit: {model.num_id} identity modes, {model.num_exp} expressions; {args.pairs} pairs per bin; "
          f"detection noise {args.noise:.3f} x IOD; seed {args.seed}")
    scenarios = [("3 reference photos (shared identity)", 3, False),
                 ("1 neutral reference, neutral-reference assumption on", 1, True),
                 ("default: 1 reference photo", 1, False)]
    improvement = 0.0
    for title, refs, neutral in scenarios:
        rows, ms = run(model, args.pairs, args.noise, args.seed, refs, neutral)
        improvement = report(title, rows, ms)
    print(f"improvement over copy-drive: {improvement:.1f} %")


if __name__ == "__main__":
    main()
