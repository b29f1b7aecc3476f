"""PuLID's face input for the EVA-CLIP tower (``get_id_embedding`` in PuLID's pipeline):

    face   = the photo aligned to 512 x 512 on facexlib's FFHQ template (``align.ffhq_crop``), RGB in [0, 1]
    labels = argmax of BiSeNet on the ImageNet-normalised face (``face_parsing.parse_faces``)
    input  = white where the label is background, cloth, hat, an ear, an earring, the neck or a necklace;
             elsewhere the face in grey (0.299 R + 0.587 G + 0.114 B in all three channels)

The pack aligns with its own detectors' five keypoints (PuLID uses facexlib's RetinaFace). ``eva_clip_input`` then
resizes the result to 336 px and normalises it for the tower.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InvalidInputError
from ...face_analysis.align import ffhq_crop
from ...face_analysis.face_parsing import LABELS, BiSeNet, parse_faces
from ...face_analysis.record import FaceSet
from ..reference_faces import reference_indices

PULID_BACKGROUND = (0, 16, 18, 7, 8, 9, 14, 15)  # background, cloth, hat, l_ear, r_ear, ear_r, neck, neck_l
ALIGNED_SIZE = 512


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> its luma (ITU-R 601) in all three channels, in PuLID's operation order."""
    luma = 0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]
    return luma.repeat(1, 3, 1, 1)


def whiten_background(faces: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) faces in [0, 1] and their (B, 1, H, W) parsing labels -> PuLID's grey face on white."""
    background = torch.isin(labels, torch.tensor(PULID_BACKGROUND, device=labels.device))
    return torch.where(background, torch.ones_like(faces), to_gray(faces))


def aligned_faces(images, keypoints, size: int = ALIGNED_SIZE) -> torch.Tensor:
    """RGB uint8 photos (H, W, 3) and the five keypoints of one face in each -> (B, 3, size, size) float32 in
    [0, 1], aligned as facexlib aligns them."""
    if len(images) == 0 or len(images) != len(keypoints):
        raise InvalidInputError(f"expected one set of keypoints per photo, got {len(keypoints)} for {len(images)}",
                                "connect at least one detected face")
    crops = []
    for image, kps in zip(images, keypoints, strict=True):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInputError(f"expected RGB uint8 photos, got {image.dtype} {list(image.shape)}",
                                    "pass the photos the faces were detected in")
        try:
            crops.append(ffhq_crop(image, kps, size))
        except ValueError as err:
            raise InvalidInputError(str(err), "check that the face was detected properly") from err
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def pulid_face_images(images, keypoints, parser: BiSeNet, device: torch.device | None = None) -> torch.Tensor:
    """Photos and keypoints -> (B, 3, 512, 512) grey faces on white, in [0, 1], computed on ``device`` (default: where
    the parser's weights are; ComfyUI's partial load may leave some of them offloaded, so it passes its device)."""
    device = device or parser.conv_out.conv_out.weight.device
    faces = aligned_faces(images, keypoints).to(device)
    labels = parse_faces(parser, faces)
    return whiten_background(faces, labels)


def one_face_per_photo(faces: FaceSet) -> FaceSet:
    """The reference faces PuLID encodes: one per photo, the largest where Face Crop gave several (the official
    pipelines and cubiq's node take the largest face of each photo); skipped photos are left out."""
    best: dict[int, int] = {}
    for index in reference_indices(faces):
        photo = faces.records[index].image_index
        if photo not in best or faces.records[index].area > faces.records[best[photo]].area:
            best[photo] = index
    keep = sorted(best.values())
    boxes = [faces.crop_boxes[i] for i in keep] if len(faces.crop_boxes) == len(faces.records) else []
    return FaceSet(records=[faces.records[i] for i in keep], images=[faces.images[i] for i in keep],
                   crop_boxes=boxes, crop_size=faces.crop_size)


__all__ = ["LABELS", "PULID_BACKGROUND", "aligned_faces", "one_face_per_photo", "pulid_face_images", "to_gray",
           "whiten_background"]
