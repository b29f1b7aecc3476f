"""facexlib's parsing_bisenet.pth: the published names and shapes (those of facexlib's BiSeNet, with or without
BatchNorm counters), .safetensors conversions, named refusals of other files, and the parser's input checks."""

import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError, ModelFileError
from comfyui_facesnap.models.face_analysis.face_parsing import BiSeNet, load_face_parser, parse_faces
from reference_fixtures import load_reference
from weight_files import Payload, random_parser, write_sparse_safetensors, zero_views

FILE = "parsing_bisenet.pth"
COUNTER = "num_batches_tracked"


@pytest.fixture(scope="module")
def published() -> dict[str, tuple]:
    """facexlib's BiSeNet(num_class=19) state dict without the BatchNorm counters (from the reference run)."""
    shapes = load_reference("pulid_face_input_reference.safetensors")[2]["official_shapes"]
    return {k: tuple(v) for k, v in shapes.items()}


def _counters(shapes: dict) -> dict[str, torch.Tensor]:
    """The counters facexlib's BatchNorm layers save, one per running mean."""
    return {k.replace("running_mean", COUNTER): torch.tensor(7) for k in shapes if k.endswith("running_mean")}


@pytest.mark.parametrize("counters", [True, False])
def test_the_published_layout_loads(tmp_path, published, counters):
    tensors = zero_views({"all": published}, torch.float32)["all"]
    if counters:
        tensors.update(_counters(published))
    torch.save(tensors, tmp_path / FILE)
    parser = load_face_parser(str(tmp_path / FILE))
    assert not parser.training
    assert {k: tuple(v.shape) for k, v in parser.state_dict().items() if not k.endswith(COUNTER)} == published
    assert all(not v.is_meta for v in parser.state_dict().values())


@torch.no_grad()
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_gives_the_same_logits(tmp_path, suffix):
    from safetensors.torch import save_file

    source = random_parser()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"parsing_bisenet{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    loaded = load_face_parser(str(path))
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(images), source(images))
    labels = parse_faces(loaded, images)
    assert labels.shape == (1, 1, 64, 96) and labels.dtype == torch.int64 and int(labels.max()) < 19


OTHER_FILES = {
    "ParseNet": {"encoder.0.conv2d.weight": (64, 3, 3, 3), "out_mask_conv.weight": (19, 32, 3, 3)},
    "RetinaFace": {"body.conv1.weight": (64, 3, 7, 7), "ClassHead.0.conv1x1.weight": (4, 256, 1, 1)},
    "'module.' prefix": {"module.cp.resnet.conv1.weight": (64, 3, 7, 7)},
    "not facexlib's BiSeNet": {"conv1.weight": (64, 3, 7, 7)},
}


@pytest.mark.parametrize("kind", OTHER_FILES)
def test_other_files_are_named(tmp_path, kind):
    path = tmp_path / "parser.safetensors"
    write_sparse_safetensors(path, OTHER_FILES[kind], "F32")
    with pytest.raises(ModelFileError, match=kind.replace(".", r"\.")) as err:
        load_face_parser(str(path))
    assert FILE in str(err.value)


@pytest.mark.parametrize("case", ["classes", "missing", "shape", "unexpected"])
def test_damaged_files_name_the_tensor(tmp_path, published, case):
    shapes = dict(published)
    if case == "classes":
        shapes["conv_out.conv_out.weight"] = (11, 256, 1, 1)
        message = "11 labels"
    elif case == "missing":
        del shapes["ffm.conv2.weight"]
        message = "no tensor 'ffm.conv2.weight'"
    elif case == "shape":
        shapes["cp.arm16.conv_atten.weight"] = (128, 128, 3, 3)
        message = r"'cp.arm16.conv_atten.weight' .* \[128, 128, 3, 3\], expected \[128, 128, 1, 1\]"
    else:
        shapes["cp.resnet.fc.weight"] = (1000, 512)
        message = "unexpected tensor 'cp.resnet.fc.weight'"
    path = tmp_path / FILE
    torch.save(zero_views({"all": shapes}, torch.float32)["all"], path)
    with pytest.raises(ModelFileError, match=message):
        load_face_parser(str(path))


def test_corrupt_truncated_and_hostile_files(tmp_path):
    state = random_parser().state_dict()
    state["ffm.conv1.weight"][0, 0] = float("nan")
    path = tmp_path / FILE
    torch.save(state, path)
    with pytest.raises(ModelFileError, match="'ffm.conv1.weight' .* NaN or infinite"):
        load_face_parser(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated"):
        load_face_parser(str(path))
    marker = tmp_path / "pwned"
    torch.save({"cp.resnet.conv1.weight": Payload(marker)}, path)
    with pytest.raises(ModelFileError, match="refused"):
        load_face_parser(str(path))
    assert not marker.exists()
    torch.save({"cp.resnet.conv1.weight": [1, 2]}, path)
    with pytest.raises(ModelFileError, match="not a dict of tensors"):
        load_face_parser(str(path))
    with pytest.raises(ModelFileError, match="not found"):
        load_face_parser(str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("shape", [(1, 3, 500, 512), (1, 1, 512, 512), (0, 3, 512, 512), (3, 512, 512)])
def test_bad_image_sizes_are_refused(shape):
    with pytest.raises(InvalidInputError, match="multiples of 32"):
        BiSeNet()(torch.zeros(shape))
