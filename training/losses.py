"""FaceSnap's losses: the masked diffusion loss (Eq. 3) and the ID loss (Eq. 4 / Diff-PC Eq. 19-20)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_mask(mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Pixel mask (B, 1, H, W) in [0, 1] -> latent resolution; a latent cell counts if any of its pixels is face."""
    return (F.adaptive_max_pool2d(mask.float(), latent_hw) > 0.5).float()


def masked_diffusion_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """|| eps * M - eps_theta * M ||^2 averaged over the masked elements (Eq. 3); plain MSE when ``mask`` is None.

    Normalising by the mask area keeps the loss scale independent of how large the face is in the crop.
    """
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def predicted_x0(z_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Diff-PC Eq. 19: z0 = (z_t - sqrt(1 - a) eps) / sqrt(a), with ``alpha_bar`` of shape (B,)."""
    a = alpha_bar.view(-1, 1, 1, 1).to(z_t)
    return (z_t - (1 - a).sqrt() * eps) / a.sqrt()


def id_loss(face_model, generated: torch.Tensor, generated_kps: torch.Tensor, reference: torch.Tensor,
            reference_kps: torch.Tensor) -> torch.Tensor:
    """1 - cos(phi(ref), phi(gen)) per sample (Eq. 4 / 20); images in [-1, 1], keypoints in their pixels."""
    from .face_recognition import align_faces

    with torch.no_grad():
        ref = F.normalize(face_model(align_faces(reference, reference_kps)).float(), dim=-1)
    gen = F.normalize(face_model(align_faces(generated, generated_kps)).float(), dim=-1)
    return 1.0 - (gen * ref).sum(-1)


def detection_gate(analyzer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Diff-PC's M_det (Eq. 20): 1 where a face detector finds a face in the generated image, else 0.

    ``images`` (B, 3, H, W) in [-1, 1]. Returns (gate (B,), kps5 (B, 5, 2)): the five points of the largest
    detected face, which the ID loss aligns on ("only the largest facial regions"); zeros where none was found."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
    gate = torch.zeros(len(pixels))
    kps = torch.zeros((len(pixels), 5, 2))
    for i, image in enumerate(pixels):
        faces = analyzer.detect(image, image_index=i, with_embedding=False)
        if faces:
            largest = max(faces, key=lambda face: face.area)
            gate[i] = 1.0
            kps[i] = torch.from_numpy(largest.kps5.astype("float32"))
    return gate.to(images.device), kps.to(images.device)
