"""Landmark transfer benchmark: does [shape_src, pose_drv, expr_drv] beat copying the drive's landmarks?

Source and drive faces are sampled from the ICT-FaceKit model (seeded): identity ~ N(0, 1) over all 100 modes,
sparse expressions (each blendshape active with p = 0.15, weight U(0, 1)), source yaw U(-25, 25) degrees, drive yaw
in bins 0 / +-30 / +-60 (+-5 jitter), pitch N(0, 8), roll N(0, 5). "Detections" are the model's landmarks with the
pose-dependent jaw contour plus Gaussian noise (sigma = --noise x the inter-ocular distance, per coordinate).
Ground truth is the noise-free landmarks of [id_src, exp_drv, pose_drv]. NME = mean point error / inter-ocular
distance (outer eye corners) of the ground truth, over the 68 points.

Faces drawn from the fitter's own basis flatter it, so each setting can add what real faces and detectors have:

* per-person detail outside the 3DMM: a fixed 3D offset per landmark and person (in the head's frame, so it turns
  with the head), with the part any identity/expression/similarity change of the model could explain projected
  out, scaled to an RMS of --detail x the inter-ocular distance per coordinate. It is in the source's reference
  photos and in the truth, and the drive person has their own;
* detector-like jaw noise: the jaw contour (points 0-16) slides along itself as real detectors' does; extra noise of
  --jaw-noise x the inter-ocular distance along the contour and a third of it across.

Settings: the clean faces of earlier versions, then 2 % and 4 % detail, both with jaw noise. The >= 30 % target
applies to the 2 % setting (the default one-reference row); 4 % is printed beside it. Rows per setting: the
predictor as the node runs it by default (one reference photo), then the levers: several reference photos of the
source (shared identity), and a neutral reference with the neutral-reference assumption switched on.

    python benchmarks/landmark_transfer.py [--pairs 40] [--model ../shared/3dmm/ict_face_narrow.npz]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Setting:
    name: str
    detail: float  # RMS per coordinate of the per-person detail, x inter-ocular distance
    jaw_noise: float  # extra jaw-contour noise along the contour, x inter-ocular distance


def representable_basis(model) -> torch.Tensor:
    """(204, M) orthonormal basis of the landmark offsets the fit can explain around the mean face: every identity
    and expression mode, translation, rotation and scale."""
    from comfyui_facesnap.models.face3d.face_fitting import skew

    k, e = model.num_id, model.num_exp
    mean = model.landmarks68(torch.zeros(1, k), torch.zeros(1, e))[0]
    modes = [model.landmarks68(torch.eye(k), torch.zeros(k, e)) - mean,
             model.landmarks68(torch.zeros(e, k), torch.eye(e)) - mean,
             torch.eye(3)[:, None, :].expand(3, 68, 3),
             -(skew(torch.eye(3))[:, None] @ mean[None, :, :, None]).squeeze(-1),
             mean[None]]
    columns = torch.cat(modes).reshape(-1, 68 * 3).T.double()
    u, sv, _ = torch.linalg.svd(columns, full_matrices=False)
    return u[:, sv > 1e-6 * sv[0]]


def person_detail(basis: torch.Tensor, n: int, rms: float, gen) -> torch.Tensor:
    """(n, 68, 3) model-frame offsets outside ``basis``, RMS ``rms`` per coordinate (1 unit = inter-ocular)."""
    if rms == 0:
        return torch.zeros(n, 68, 3)
    raw = torch.randn(n, 68 * 3, generator=gen).double()
    outside = raw - (raw @ basis) @ basis.T
    outside = outside * rms / outside.pow(2).mean(1, keepdim=True).sqrt()
    return outside.float().reshape(n, 68, 3)


def jaw_contour_noise(points: torch.Tensor, sigma: torch.Tensor, gen) -> torch.Tensor:
    """(B, 68, 2) image offsets: only the jaw (0-16) moves, by ``sigma`` along its contour and sigma/3 across."""
    jaw = points[:, :17]
    tangent = torch.cat([jaw[:, 1:2] - jaw[:, :1], jaw[:, 2:] - jaw[:, :-2], jaw[:, -1:] - jaw[:, -2:-1]], 1)
    tangent = torch.nn.functional.normalize(tangent, dim=-1)
    normal = torch.stack([-tangent[..., 1], tangent[..., 0]], -1)
    along, across = torch.randn(2, *jaw.shape[:2], 1, generator=gen)
    offsets = torch.zeros_like(points)
    offsets[:, :17] = sigma.view(-1, 1, 1) * (along * tangent + across * normal / 3)
    return offsets


def posed_landmarks(model, face, detail):
    """Image landmarks of ``face`` (alpha, beta, rotation, scale, translation) with per-person ``detail``."""
    from comfyui_facesnap.models.face3d.face_fitting import project

    alpha, beta, rotation, scale, translation = face
    return project(model.landmarks68(alpha, beta, rotation) + detail, rotation, scale, translation)


def detect(model, face, detail, setting: Setting, noise, gen):
    clean = posed_landmarks(model, face, detail)
    iod = face[3].view(-1, 1, 1)  # pixels per model unit = per inter-ocular distance
    observed = clean + noise * iod * torch.randn(clean.shape, generator=gen)
    if setting.jaw_noise:
        observed = observed + jaw_contour_noise(clean, setting.jaw_noise * face[3], gen)
    return observed


def nme(pred, truth):
    iod = (truth[:, 36] - truth[:, 45]).norm(dim=-1)
    return ((pred[:, :68] - truth[:, :68]).norm(dim=-1).mean(1) / iod)


def run(model, pairs, noise, seed, refs, neutral_ref, setting: Setting, basis):
    from comfyui_facesnap.models.face3d.face_fitting import FitOptions, landmarks_image
    from comfyui_facesnap.models.face3d.landmark_predictor import fit_references_and_drive

    gen = torch.Generator().manual_seed(seed)
    rows, fit_ms = {}, []
    for centre in BINS:
        src_alpha = torch.randn(pairs, model.num_id, generator=gen)
        src_detail, drv_detail = person_detail(basis, 2 * pairs, setting.detail, gen).split(pairs)
        references = []
        for _ in range(refs):
            face = list(sample_faces(model, pairs, 0.0, 25.0, gen, neutral=neutral_ref))
            face[0] = src_alpha
            references.append(detect(model, face, src_detail, setting, noise, gen))
        drive = sample_faces(model, pairs, float(centre), 5.0, gen)
        drive_obs = detect(model, drive, drv_detail, setting, noise, gen)
        truth = posed_landmarks(model, (src_alpha, *drive[1:]), src_detail)
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
        print(f"{centre:>+7d}° | {pred.mean():13.4f} | {base.mean():14.4f} | "
              f"{100 * (1 - pred.mean() / base.mean()):10.1f} %")
    pred = torch.cat([p for p, _ in rows.values()]).mean()
    base = torch.cat([b for _, b in rows.values()]).mean()
    improvement = 100 * (1 - pred / base)
    worse = [c for c, (p, b) in rows.items() if p.mean() > b.mean()]
    print(f"{'all':>8} | {pred:13.4f} | {base:14.4f} | {improvement:10.1f} %   "
          f"bins worse than copy-drive: {worse or 'none'}")
    return float(improvement)


SETTINGS = {
    "clean": Setting("clean faces from the model's basis, no jaw noise (earlier versions)", 0.0, 0.0),
    "detail2": Setting("2 % detail outside the 3DMM + jaw noise", 0.02, None),
    "detail4": Setting("4 % detail outside the 3DMM + jaw noise", 0.04, None),
}
SCENARIOS = [("3 reference photos (shared identity)", 3, False),
             ("1 neutral reference, neutral-reference assumption on", 1, True),
             ("default: 1 reference photo", 1, False)]
TARGET = 30.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT.parent / "shared" / "3dmm" / "ict_face_narrow.npz"))
    parser.add_argument("--pairs", type=int, default=40, help="source/drive pairs per yaw bin")
    parser.add_argument("--noise", type=float, default=0.015,
                        help="detection noise, fraction of the inter-ocular distance")
    parser.add_argument("--jaw-noise", type=float, default=0.03,
                        help="extra jaw-contour noise along the contour, fraction of the inter-ocular distance")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    load_pack()
    from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz

    model = load_ict_npz(args.model)
    basis = representable_basis(model)
    print(f"ICT-FaceKit: {model.num_id} identity modes, {model.num_exp} expressions; {args.pairs} pairs per bin; "
          f"detection noise {args.noise:.3f} x IOD; jaw-contour noise {args.jaw_noise:.3f} x IOD where on; "
          f"detail projected off {basis.shape[1]} of 204 landmark dimensions; seed {args.seed}")
    results = {}
    for key in args.settings:
        setting = SETTINGS[key]
        if setting.jaw_noise is None:
            setting = Setting(setting.name, setting.detail, args.jaw_noise)
        print(f"\n=== setting {key}: {setting.name} (detail RMS {setting.detail:.2f} x IOD per coordinate, "
              f"jaw noise {setting.jaw_noise:.3f} x IOD) ===")
        for title, refs, neutral in SCENARIOS:
            rows, ms = run(model, args.pairs, args.noise, args.seed, refs, neutral, setting, basis)
            results[key, title] = report(title, rows, ms)
    print("\nimprovement over copy-drive (overall NME), every setting:")
    print(f"{'setting':>8} | " + " | ".join(f"{title.split(':')[0].split(',')[0]:>36}" for title, _, _ in SCENARIOS))
    for key in args.settings:
        print(f"{key:>8} | " + " | ".join(f"{results[key, title]:35.1f}%" for title, _, _ in SCENARIOS))
    default = SCENARIOS[-1][0]
    for key in args.settings:
        verdict = f"  (target >= {TARGET:.0f} %: {'met' if results[key, default] >= TARGET else 'NOT met'})" \
            if key == "detail2" else ""
        print(f"improvement over copy-drive, {key}: {results[key, default]:.1f} %{verdict}")


if __name__ == "__main__":
    main()
