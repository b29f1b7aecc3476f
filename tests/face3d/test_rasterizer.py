"""The pure-PyTorch z-buffer against a brute-force reference, culling, shading, devices and dtypes, and PyTorch3D
when installed. (Speed: benchmarks/face3d_speed.py.)"""

import pytest
import torch

from comfyui_facesnap.models.face3d.rasterizer import rasterize, rasterize_torch, render_shaded


def brute_force(verts, faces, height, width, cull_backfaces):
    """Every pixel centre against every triangle, nearest (largest z) wins."""
    p2f = torch.full((height, width), -1, dtype=torch.long)
    depth = torch.full((height, width), -torch.inf)
    bary_out = torch.zeros(height, width, 3)
    for i in range(height):
        for j in range(width):
            px, py = j + 0.5, i + 0.5
            for f, (a, b, c) in enumerate(faces.tolist()):
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = verts[a].tolist(), verts[b].tolist(), verts[c].tolist()
                area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                if abs(area) < 1e-12 or (cull_backfaces and area >= 0):
                    continue
                w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
                w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
                w2 = 1 - w0 - w1
                if min(w0, w1, w2) < 0:
                    continue
                z = w0 * z0 + w1 * z1 + w2 * z2
                if z > depth[i, j]:
                    depth[i, j], p2f[i, j] = z, f
                    bary_out[i, j] = torch.tensor([w0, w1, w2])
    return p2f, bary_out, depth


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cull", [True, False])
def test_matches_brute_force_on_tiny_meshes(seed, cull):
    gen = torch.Generator().manual_seed(seed)
    height, width = 13, 17
    verts = (torch.rand(12, 3, generator=gen) * torch.tensor([width + 6.0, height + 6.0, 10.0])
             - torch.tensor([3.0, 3.0, 0.0]))
    faces = torch.randint(0, 12, (10, 3), generator=gen)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    _, first = torch.unique(faces.sort(1).values, dim=0, return_inverse=True)
    faces = faces[[int((first == k).nonzero()[0]) for k in range(int(first.max()) + 1)]]  # no duplicate triangles
    p2f, bary, depth = rasterize_torch(verts, faces, height, width, cull_backfaces=cull)
    ref_p2f, ref_bary, ref_depth = brute_force(verts, faces, height, width, cull)
    assert (p2f >= 0).sum() > 10
    assert torch.equal(p2f >= 0, ref_p2f >= 0)
    hit = p2f >= 0
    assert torch.allclose(depth[hit], ref_depth[hit], atol=1e-4)  # equal depth: ties may pick either triangle
    same = p2f == ref_p2f
    assert same.float().mean() > 0.98  # the rest are exact depth ties (checked above)
    assert torch.allclose(bary[same & hit], ref_bary[same & hit], atol=1e-4)


def test_backface_culling_keeps_front_faces():
    # one triangle counter-clockwise seen from the front (y up) = clockwise in image coordinates (y down)
    front = torch.tensor([[2.0, 8.0, 0.0], [8.0, 8.0, 0.0], [5.0, 2.0, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    assert (rasterize_torch(front, faces, 10, 10, cull_backfaces=True)[0] >= 0).any()
    assert not (rasterize_torch(front, faces.flip(1), 10, 10, cull_backfaces=True)[0] >= 0).any()
    assert (rasterize_torch(front, faces.flip(1), 10, 10, cull_backfaces=False)[0] >= 0).any()


def ict_image_verts(ict, size):
    verts = ict.neutral * (0.3 * size)
    return torch.stack([verts[:, 0] + size / 2, -verts[:, 1] + size / 2, verts[:, 2]], 1)


@pytest.fixture(scope="module")
def face(face_model_path):
    from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz

    return load_ict_npz(face_model_path)


def test_shaded_render_of_the_face(face):
    image = render_shaded(ict_image_verts(face, 128), face.triangles, 128, 128, backend="torch")
    assert image.shape == (128, 128) and image.min() >= 0 and image.max() <= 1
    covered = image > 0
    assert 0.1 < covered.float().mean() < 0.6
    assert image[0, 0] == 0  # background
    assert image[covered].std() > 0.03  # shaded, not a flat silhouette
    # the face and the lights are left-right symmetric, so the render is too
    assert (image - image.flip(1)).abs().mean() < 0.02


def devices() -> list[str]:
    """The CPU always; CUDA and MPS where this machine has them (none in CI)."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_render_follows_the_vertices_device_and_dtype(face, device, dtype):
    """Inside ``torch.device("meta")`` every tensor made without an explicit device lands on the meta device, so a
    constant that does not follow the vertices breaks the render (as it would on CUDA); float64 vertices do the
    same for a constant that keeps its own dtype."""
    verts = ict_image_verts(face, 64).to(dtype)
    reference = render_shaded(verts.float(), face.triangles, 64, 64, backend="torch")
    with torch.device("meta"):
        image = render_shaded(verts.to(device), face.triangles, 64, 64, backend="torch")
    assert image.device.type == device and image.dtype == dtype
    tolerance = 1e-2 if dtype == torch.float16 else 1e-5
    assert torch.allclose(image.cpu().float(), reference, atol=tolerance)


def test_pytorch3d_agrees_when_installed(default_face_model_path):
    pytest.importorskip("pytorch3d")
    from comfyui_facesnap.models.face3d.morphable_model import load_ict_npz

    ict = load_ict_npz(default_face_model_path)
    verts = ict_image_verts(ict, 256)
    ours = rasterize(verts, ict.triangles, 256, 256, backend="torch")[0]
    theirs = rasterize(verts, ict.triangles, 256, 256, backend="pytorch3d")[0]
    assert (ours == theirs).float().mean() > 0.999
