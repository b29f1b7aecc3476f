"""Triangle rasterisation and the monochrome shaded render of Diff-PC's 3D face control.

PyTorch3D's ``rasterize_meshes`` is used when it is importable; otherwise a pure-PyTorch z-buffer does the same job
(it enumerates (triangle, pixel) candidates inside each triangle's bounding box, computes edge-function barycentrics
at pixel centres, keeps the nearest with ``scatter_reduce(amin)``). Every tensor is created on the device of the
vertices (tests/face3d/test_rasterizer.py checks this on the CPU; no GPU run has been made).

Conventions: vertices are (V, 3) with x, y in pixels (origin at the top-left corner, y down) and z = depth towards
the camera (larger = closer). Pixel (row i, column j) is sampled at its centre (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import importlib.util

import torch

CANDIDATE_CHUNK = 4_000_000  # (triangle, pixel) pairs per pass: bounds peak memory to a few hundred MB
# Light directions in the view frame (x right, y up, z to the camera): a frontal key light plus four fill lights,
# like SMIRK's monochrome renderer.
LIGHTS = torch.nn.functional.normalize(torch.tensor(
    [[0.0, 0.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, -1.0, 1.0]]), dim=1)


def have_pytorch3d() -> bool:
    return importlib.util.find_spec("pytorch3d") is not None


def rasterize_torch(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull_backfaces: bool = True):
    """Returns pix_to_face (H, W) long (-1 = background), barycentrics (H, W, 3) and depth (H, W) (-inf = empty)."""
    device, dtype = verts.device, verts.dtype
    tri = verts[faces]
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    # Twice the signed area in image coordinates; counter-clockwise-from-the-front triangles are negative (y is down).
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    keep = area.abs() > 1e-12
    if cull_backfaces:
        keep &= area < 0
    keep &= (x.amax(1) >= 0) & (x.amin(1) <= width) & (y.amax(1) >= 0) & (y.amin(1) <= height)
    x0 = torch.ceil(x.amin(1) - 0.5).clamp(0, width - 1).long()
    x1 = torch.floor(x.amax(1) - 0.5).clamp(0, width - 1).long()
    y0 = torch.ceil(y.amin(1) - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(y.amax(1) - 0.5).clamp(0, height - 1).long()
    keep &= (x1 >= x0) & (y1 >= y0)
    face_ids = torch.nonzero(keep).squeeze(1)
    box_w = (x1 - x0 + 1)[face_ids]
    counts = box_w * (y1 - y0 + 1)[face_ids]

    neg_depth = torch.full((height * width,), torch.inf, device=device, dtype=dtype)
    candidates = []
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < len(face_ids):
        done = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, done + CANDIDATE_CHUNK, right=True)), start + 1)
        local = torch.repeat_interleave(torch.arange(stop - start, device=device), counts[start:stop])
        offset = torch.arange(len(local), device=device) - (ends[start:stop] - counts[start:stop] - done)[local]
        f = face_ids[start:stop][local]
        bw = box_w[start:stop][local]
        px = x0[f] + offset % bw
        py = y0[f] + torch.div(offset, bw, rounding_mode="floor")
        cx, cy = px.to(dtype) + 0.5, py.to(dtype) + 0.5
        X, Y, a = x[f], y[f], area[f]
        w0 = ((X[:, 1] - cx) * (Y[:, 2] - cy) - (X[:, 2] - cx) * (Y[:, 1] - cy)) / a
        w1 = ((X[:, 2] - cx) * (Y[:, 0] - cy) - (X[:, 0] - cx) * (Y[:, 2] - cy)) / a
        inside = torch.nonzero((w0 >= 0) & (w1 >= 0) & (w0 + w1 <= 1)).squeeze(1)  # one nonzero, then gathers
        w0, w1, f = w0[inside], w1[inside], f[inside]
        pixel = (py * width + px)[inside]
        bary = torch.stack([w0, w1, 1 - w0 - w1], 1)
        depth = -(bary * z[f]).sum(1)  # nearest = largest z = smallest -z
        neg_depth.scatter_reduce_(0, pixel, depth, reduce="amin")
        candidates.append((pixel, depth, f, bary))
        start = stop
    pix_to_face = torch.full((height * width,), -1, dtype=torch.long, device=device)
    barycentric = torch.zeros(height * width, 3, device=device, dtype=dtype)
    for pixel, depth, f, bary in candidates:
        win = depth <= neg_depth[pixel]
        pix_to_face[pixel[win]] = f[win]
        barycentric[pixel[win]] = bary[win]
    return pix_to_face.view(height, width), barycentric.view(height, width, 3), (-neg_depth).view(height, width)


def rasterize_pytorch3d(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull_backfaces: bool = True):
    """Same outputs as ``rasterize_torch``, through PyTorch3D (screen space converted to its NDC)."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    scale = min(height, width) / 2.0
    ndc = torch.stack([(width / 2.0 - verts[:, 0]) / scale, (height / 2.0 - verts[:, 1]) / scale, -verts[:, 2]], 1)
    ndc[:, 2] = ndc[:, 2] - ndc[:, 2].min() + 1.0  # PyTorch3D needs positive depth
    # PyTorch3D's +X points left and +Y up, which mirrors the image once: flip the winding to keep the front faces.
    mesh = Meshes(verts=[ndc], faces=[faces.flip(1)])
    p2f, _, bary, _ = rasterize_meshes(mesh, image_size=(height, width), faces_per_pixel=1, blur_radius=0.0,
                                      cull_backfaces=cull_backfaces)
    p2f, bary = p2f[0, ..., 0], bary[0, ..., 0, :].flip(-1)
    tri = verts[faces.clamp(min=0)[p2f.clamp(min=0)]]
    depth = torch.where(p2f >= 0, (bary * tri[..., 2]).sum(-1), -torch.inf)
    return p2f, bary, depth


def rasterize(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull_backfaces: bool = True,
              backend: str = "auto"):
    """``backend``: "auto" (PyTorch3D when installed), "pytorch3d" or "torch". Half-precision vertices are
    rasterised in float32 (depth ties would be common); the outputs stay on the vertices' device."""
    use_p3d = backend == "pytorch3d" or (backend == "auto" and have_pytorch3d())
    fn = rasterize_pytorch3d if use_p3d else rasterize_torch
    return fn(verts.to(torch.promote_types(verts.dtype, torch.float32)), faces.long(), height, width, cull_backfaces)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit normals in the frame of ``verts`` (for image-space verts, y points down)."""
    tri = verts[faces]
    face_n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    normals = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), face_n.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(normals, dim=1)


def render_shaded(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, ambient: float = 0.15,
                  backend: str = "auto") -> torch.Tensor:
    """Monochrome Lambert render of a mesh in image coordinates: (H, W) in [0, 1], background 0, on the device and
    in the (floating) dtype of ``verts``."""
    faces = faces.to(verts.device).long()
    pix_to_face, bary, _ = rasterize(verts, faces, height, width, backend=backend)
    view = bary.new_tensor([1.0, -1.0, 1.0]) * verts.to(bary.dtype)  # back to y up, like the light frame
    normals = vertex_normals(view, faces)
    mask = pix_to_face >= 0
    f = pix_to_face[mask]
    n = torch.nn.functional.normalize((bary[mask].unsqueeze(-1) * normals[faces[f]]).sum(1), dim=1)
    lambert = (n @ LIGHTS.to(n).T).clamp(min=0).mean(1)
    image = bary.new_zeros(height, width)
    image[mask] = (ambient + (1 - ambient) * lambert).clamp(0, 1)
    return image.to(verts.dtype)
