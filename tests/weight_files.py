"""Synthetic weight files and random-weight networks for the tests of several folders: full-size files of zeros
that take almost no disk or memory, a pickle that runs code, and a random BiSeNet face parser."""

import json
import struct

import torch

from comfyui_facesnap.models.face_analysis.face_parsing import BiSeNet


def zero_views(shapes: dict[str, dict[str, tuple]], dtype=torch.float16) -> dict[str, dict[str, torch.Tensor]]:
    """Full-size tensors that are all views of one zero storage: torch.save writes the storage once, so a 423 M
    parameter file takes ~13 MB on disk and in memory when loaded."""
    biggest = max(torch.Size(s).numel() for part in shapes.values() for s in part.values())
    storage = torch.zeros(biggest, dtype=dtype)
    return {part: {k: storage[:torch.Size(s).numel()].view(s) for k, s in d.items()} for part, d in shapes.items()}


def write_sparse_safetensors(path, shapes: dict[str, tuple], dtype: str = "F16", metadata=None) -> None:
    """A full-size .safetensors of zeros written lazily: the header, then a hole the file system fills with zeros."""
    itemsize = {"F16": 2, "BF16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = torch.Size(shape).numel() * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)


def flat(nested: dict) -> dict:
    return {f"{part}.{k}": v for part, d in nested.items() for k, v in d.items()}


class Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a hostile .bin could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def zeros(shapes: dict[str, tuple], dtype=torch.float16) -> dict[str, torch.Tensor]:
    return zero_views({"all": shapes}, dtype)["all"]


def random_parser(seed: int = 0) -> BiSeNet:
    torch.manual_seed(seed)
    parser = BiSeNet()
    with torch.no_grad():
        for name, value in parser.state_dict().items():
            if name.endswith("running_var"):
                value.uniform_(0.5, 1.5)
            elif value.is_floating_point():
                value.normal_(0.0, 0.1)
    return parser.eval()
