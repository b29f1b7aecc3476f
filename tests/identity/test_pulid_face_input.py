"""PuLID's face input (aligned face, BiSeNet parsing, background white, face grey, resized and normalised for the
EVA-CLIP tower) against the official ``get_id_embedding`` with facexlib's alignment and parser, on real photos from
the insightface wheel: seeded random parser weights at full size, reference tensors from
scripts/reference_pulid_parts.py. The keypoints are the pack's (dlib), as the reference run used them."""

import hashlib
import zlib

import numpy as np
import pytest
import torch

from comfyui_facesnap.devkit.seeded_weights import bisenet_spec, fingerprint, seeded_tensors
from comfyui_facesnap.models.errors import InvalidInputError
from comfyui_facesnap.models.face_analysis.align import FFHQ_512, ffhq_matrix, transform_points
from comfyui_facesnap.models.face_analysis.face_parsing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LABELS,
    build_face_parser,
    expected_shapes,
    parse_faces,
)
from comfyui_facesnap.models.identity.pulid.eva_clip_vision import eva_clip_input, l2_normalise
from comfyui_facesnap.models.identity.pulid.face_input import (
    PULID_BACKGROUND,
    aligned_faces,
    pulid_face_images,
    to_gray,
    whiten_background,
)
from reference_fixtures import load_reference

FACE_FIXTURE = "pulid_face_input_reference.safetensors"
FACES = ("tom", "t1")
# Largest |pack - official| allowed. The logits reach |x| ~ 200; measured differences up to 4.6e-4, float32
# rounding (run side by side in one process, facexlib's BiSeNet and the pack's gave identical logits; the reference
# process differs by that much from both). The tower's input lies in [-1.8, 2.4] and matched exactly on the sampled
# grid; its tolerance leaves room for float32 rounding. The masks must agree wherever the logits decide by more than
# MASK_MARGIN (random weights leave a few near-ties among 262144 pixels: one differed).
LOGIT_ATOL = 5e-3
INPUT_ATOL = 1e-5
MASK_MARGIN = 2 * LOGIT_ATOL


@pytest.fixture(scope="module")
def reference():
    return load_reference(FACE_FIXTURE)


@pytest.fixture(scope="module")
def parser(reference):
    _, _, ref = reference
    weights = seeded_tensors(bisenet_spec(expected_shapes()), ref["bisenet_seed"])
    assert fingerprint(weights) == ref["weights_fingerprint"], \
        "torch's generator drew other weights than when the fixture was written: rerun the reference script"
    return build_face_parser(weights)


def _photo(insightface_images, reference, face: str) -> np.ndarray:
    import cv2

    meta = reference[2]["faces"][face]
    path = insightface_images / meta["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["image_sha256"], f"{path} is not the reference photo"
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="module")
def pack_inputs(insightface_images, reference, parser):
    """Per face: the pack's aligned face, parsing logits and tower input, from the reference keypoints."""
    tensors, run, _ = reference
    out = {}
    for face in FACES:
        aligned = aligned_faces([_photo(insightface_images, reference, face)], [tensors[f"{face}.kps5"].numpy()])
        logits = _logits(parser, aligned)
        whitened = whiten_background(aligned, logits.argmax(dim=1, keepdim=True))
        tower_input = eva_clip_input(whitened, antialias=run["antialias"])
        out[face] = dict(aligned=aligned, logits=logits, tower_input=tower_input)
    return out


@torch.no_grad()
def _logits(parser, aligned: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    return parser((aligned - mean) / std)


def _grid(ref: dict, key: str) -> slice:
    return slice(*ref[key])


def _background_mask(tensors: dict, face: str) -> np.ndarray:
    packed = np.frombuffer(zlib.decompress(tensors[f"{face}.background_zlib"].numpy().tobytes()), np.uint8)
    return np.unpackbits(packed)[: 512 * 512].reshape(512, 512).astype(bool)


def logit_error(logits: torch.Tensor, reference, face: str) -> float:
    tensors, _, ref = reference
    grid = _grid(ref, "logit_grid")
    return float((logits[:, :, grid, grid] - tensors[f"{face}.logits"]).abs().max())


def mask_mismatches(logits: torch.Tensor, reference, face: str) -> tuple[int, int]:
    """(pixels whose background flag differs from the reference's, those of them decided by more than MASK_MARGIN:
    the best background label's and the best kept label's logits further apart)."""
    labels = logits.argmax(dim=1)[0].numpy()
    differ = np.isin(labels, PULID_BACKGROUND) != _background_mask(reference[0], face)
    kept = [i for i in range(len(LABELS)) if i not in PULID_BACKGROUND]
    margin = (logits[0, list(PULID_BACKGROUND)].max(dim=0).values - logits[0, kept].max(dim=0).values).abs()
    return int(differ.sum()), int((differ & (margin.numpy() > MASK_MARGIN)).sum())


def test_the_parser_layout_is_facexlibs(reference):
    assert expected_shapes() == {k: tuple(v) for k, v in reference[2]["official_shapes"].items()}


@pytest.mark.parametrize("face", FACES)
def test_alignment_is_facexlibs(pack_inputs, reference, face):
    """The same 512 px crop, byte for byte, as facexlib's FaceRestoreHelper cut from the same keypoints."""
    tensors, _, ref = reference
    crop = (pack_inputs[face]["aligned"][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest() == ref["faces"][face]["crop_sha256"]
    block = ref["crop_block"]
    means = crop.astype(np.float64).reshape(512 // block, block, 512 // block, block, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(means.transpose(2, 0, 1), tensors[f"{face}.crop_blocks"].numpy(), atol=1e-4)


@pytest.mark.parametrize("face", FACES)
def test_parsing_and_mask_are_facexlibs_and_pulids(pack_inputs, reference, face):
    logits = pack_inputs[face]["logits"]
    print(f"\n{face}: parsing logits max |diff| {logit_error(logits, reference, face):.2e}, background pixels "
          f"differing {mask_mismatches(logits, reference, face)}")
    assert logit_error(logits, reference, face) <= LOGIT_ATOL
    differ, decided = mask_mismatches(logits, reference, face)
    assert decided == 0 and differ <= 10


@pytest.mark.parametrize("face", FACES)
def test_the_tower_input_is_pulids(pack_inputs, reference, face):
    tensors, _, ref = reference
    tower_input = pack_inputs[face]["tower_input"]
    grid = _grid(ref, "input_grid")
    error = float((tower_input[:, :, grid, grid] - tensors[f"{face}.eva_input"]).abs().max())
    print(f"\n{face}: tower input max |diff| {error:.2e}")
    assert error <= INPUT_ATOL
    sums = torch.stack([tower_input.double().sum(), tower_input.double().square().sum()])
    # over every pixel: allows the input change of a near-tie pixel of the mask (a few 1e-5 of the sums)
    torch.testing.assert_close(sums, tensors[f"{face}.eva_input_sums"], rtol=1e-4, atol=0)


@pytest.mark.parametrize("face", FACES)
def test_features_are_pulids_normalisation(reference, face):
    tensors = reference[0]
    torch.testing.assert_close(l2_normalise(tensors[f"{face}.embedding"]), tensors[f"{face}.features"],
                               rtol=1e-6, atol=1e-7)


def test_the_parsing_tolerance_catches_swapped_blocks(parser, pack_inputs, reference):
    """ResNet-18's two first blocks exchanged: logits, mask and the tower's input far off."""
    layer = parser.cp.resnet.layer1
    layer[0], layer[1] = layer[1], layer[0]
    try:
        logits = _logits(parser, pack_inputs["tom"]["aligned"])
    finally:
        layer[0], layer[1] = layer[1], layer[0]
    print(f"\nswapped blocks: logits off by {logit_error(logits, reference, 'tom'):.3g}, "
          f"{mask_mismatches(logits, reference, 'tom')} background pixels differ")
    assert logit_error(logits, reference, "tom") > 100 * LOGIT_ATOL
    assert mask_mismatches(logits, reference, "tom")[1] > 1000
    tensors, run, ref = reference
    whitened = whiten_background(pack_inputs["tom"]["aligned"], logits.argmax(dim=1, keepdim=True))
    grid = _grid(ref, "input_grid")
    tower_input = eva_clip_input(whitened, antialias=run["antialias"])[:, :, grid, grid]
    assert float((tower_input - tensors["tom.eva_input"]).abs().max()) > 100 * INPUT_ATOL


@pytest.mark.parametrize("face", FACES)
def test_dlib_gives_the_keypoints_of_the_reference(insightface_images, reference, face):
    """Real faces: the pack's dlib backend finds the face the reference run aligned (facexlib chose the centre face
    among dlib's faces), and the aligned face is upright: eyes left to right above the mouth."""
    pytest.importorskip("dlib")
    from comfyui_facesnap.models.face_analysis import load_analyzer

    kps = reference[0][f"{face}.kps5"].numpy()
    records = load_analyzer("dlib").detect(_photo(insightface_images, reference, face), with_embedding=False)
    closest = min(records, key=lambda r: np.abs(r.kps5 - kps).max())
    np.testing.assert_allclose(closest.kps5, kps, atol=0.5)
    eye_l, eye_r, _, mouth_l, mouth_r = transform_points(kps, ffhq_matrix(kps))
    assert eye_l[0] < eye_r[0] and max(eye_l[1], eye_r[1]) < min(mouth_l[1], mouth_r[1])


def test_ffhq_alignment_undoes_a_similarity():
    """Keypoints that are the template moved, turned and scaled are mapped back onto it, and the crop samples the
    photo where the inverse similarity says."""
    angle, scale, shift = 0.3, 0.4, np.array([-30.0, -40.0])  # the crop's corner lies outside the photo
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = (FFHQ_512 @ rotation.T + shift).astype(np.float32)
    np.testing.assert_allclose(transform_points(kps, ffhq_matrix(kps)), FFHQ_512, atol=1e-3)
    photo = np.zeros((400, 400, 3), np.uint8)
    x, y = np.round(kps[2]).astype(int)
    photo[y - 2:y + 3, x - 2:x + 3] = (255, 0, 0)  # a red dot on the nose
    crop = aligned_faces([photo], [kps])[0]
    red = torch.nonzero((crop[0] > 0.5) & (crop[1] < 0.2)).float().mean(dim=0).flip(0).numpy()  # (x, y)
    np.testing.assert_allclose(red, FFHQ_512[2], atol=3.0)
    assert torch.equal(crop[:, 0, 0], torch.tensor([132, 133, 135]) / 255.0)  # facexlib's grey border


def test_pulid_face_images_end_to_end(insightface_images, reference, parser, pack_inputs):
    tensors = reference[0]
    image = _photo(insightface_images, reference, "tom")
    out = pulid_face_images([image, image], [tensors["tom.kps5"].numpy()] * 2, parser)
    assert out.shape == (2, 3, 512, 512)
    aligned = pack_inputs["tom"]["aligned"]
    expected = whiten_background(aligned, pack_inputs["tom"]["logits"].argmax(dim=1, keepdim=True))
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[0])
    assert torch.equal(parse_faces(parser, aligned), pack_inputs["tom"]["logits"].argmax(dim=1, keepdim=True))


def test_whitening_keeps_pulids_labels_in_grey():
    assert [LABELS[i] for i in PULID_BACKGROUND] == ["background", "cloth", "hat", "l_ear", "r_ear", "ear_r", "neck",
                                                     "neck_l"]
    faces = torch.rand(1, 3, 4, 19, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(19).view(1, 1, 1, 19).expand(1, 1, 4, 19)
    out = whiten_background(faces, labels)
    grey = 0.299 * faces[:, 0] + 0.587 * faces[:, 1] + 0.114 * faces[:, 2]
    for label in range(19):
        column = out[0, :, :, label]
        if label in PULID_BACKGROUND:
            assert torch.equal(column, torch.ones_like(column))
        else:
            assert torch.equal(column, grey[0, :, label].expand(3, -1))
    assert torch.equal(to_gray(faces)[:, 1], grey)


def test_bad_photos_and_keypoints_are_refused():
    image = np.zeros((64, 64, 3), np.uint8)
    kps = np.array([[20, 25], [44, 25], [32, 35], [24, 45], [40, 45]], np.float32)
    assert aligned_faces([image], [kps]).shape == (1, 3, 512, 512)
    with pytest.raises(InvalidInputError, match="one set of keypoints per photo"):
        aligned_faces([image, image], [kps])
    with pytest.raises(InvalidInputError, match="one set of keypoints per photo"):
        aligned_faces([], [])
    with pytest.raises(InvalidInputError, match="uint8"):
        aligned_faces([image.astype(np.float32)], [kps])
    with pytest.raises(InvalidInputError, match="keypoints"):
        aligned_faces([image], [np.zeros((5, 2), np.float32)])


def test_one_face_per_photo_keeps_the_largest_and_drops_skipped_photos():
    """PuLID reads one face of each photo, the largest (the official pipelines' choice), whatever Face Crop's
    selection gave; a skipped photo's placeholder is left out."""
    from comfyui_facesnap.models.face_analysis.record import FaceRecord, FaceSet
    from comfyui_facesnap.models.face_analysis.select import no_face_record
    from comfyui_facesnap.models.identity.pulid.face_input import one_face_per_photo

    def face(photo: int, size: float) -> FaceRecord:
        return FaceRecord(bbox=np.array([0, 0, size, size], np.float32), score=1.0, kps5=np.zeros((5, 2), np.float32),
                          landmarks=np.zeros((72, 2), np.float32), backend="insightface", image_index=photo)

    photos = [np.full((8, 8, 3), i, np.uint8) for i in range(3)]
    records = [face(0, 20), face(0, 50), no_face_record(1, "insightface"), face(2, 10), face(0, 30)]
    images = [photos[0], photos[0], photos[1], photos[2], photos[0]]
    kept = one_face_per_photo(FaceSet(records, images, [np.zeros(4)] * 5, 64))
    assert [r.area for r in kept.records] == [2500.0, 100.0]
    assert [int(i[0, 0, 0]) for i in kept.images] == [0, 2] and len(kept.crop_boxes) == 2 and kept.crop_size == 64
