"""Multi-view stereo core: plane-sweep depth for a reference view, and multi-view geometric consistency filtering.

Conventions (aerialmd.camera): K in OpenCV's pixel-centre convention, poses as camera-to-world 4x4 matrices, depth is
the z coordinate in the camera, 0 = invalid. Images hold intensities in [0, 1] (uint8 images are scaled). All the work
is done in float32 torch on `device` ('auto': CUDA when available, else CPU).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

INVALID_COST = 2.0  # worse than any 1 - NCC


@dataclasses.dataclass(frozen=True)
class MVSView:
    """One calibrated image: gray H x W or colour H x W x 3, OpenCV intrinsics, camera-to-world pose."""

    image: torch.Tensor | np.ndarray
    K: torch.Tensor | np.ndarray
    cam2world: torch.Tensor | np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return tuple(self.image.shape[:2])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA if available, else CPU; anything else as torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _float(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """`x` as a float32 tensor on `device`."""
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))).to(device, torch.float32)


def gray_image(view: MVSView, device: torch.device) -> torch.Tensor:
    """The view's image as float32 gray H x W in [0, 1] (colour averaged with Rec. 601 weights)."""
    image = view.image if isinstance(view.image, torch.Tensor) else torch.from_numpy(np.asarray(view.image))
    scale = 1.0 / 255.0 if image.dtype == torch.uint8 else 1.0
    image = image.to(device, torch.float32) * scale
    if image.ndim == 3:
        image = image @ torch.tensor([0.299, 0.587, 0.114], device=device)
    return image


def inverse_depth_hypotheses(depth_min: float, depth_max: float, num_depths: int, device: torch.device) -> torch.Tensor:
    """Inverse depths of the sweep planes, uniform from 1/depth_max to 1/depth_min."""
    return torch.linspace(1.0 / depth_max, 1.0 / depth_min, num_depths, device=device)


def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Homogeneous pixel coordinates (OpenCV centres) of every pixel, 3 x (H*W), row-major."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                          torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([u.flatten(), v.flatten(), torch.ones_like(u).flatten()])


def relative_pose(ref: MVSView, other: MVSView, device: torch.device) -> torch.Tensor:
    """4x4 transform from the reference camera frame to the other camera frame."""
    return torch.linalg.inv(_float(other.cam2world, device)) @ _float(ref.cam2world, device)


def grid_normalization(height: int, width: int, device: torch.device) -> torch.Tensor:
    """3x3 map from homogeneous pixel coordinates (OpenCV centres) to grid_sample's [-1, 1] (align_corners=True)."""
    return torch.tensor([[2.0 / max(width - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(height - 1, 1), -1.0], [0.0, 0.0, 1.0]],
                        device=device)


def plane_projection(ref: MVSView, src: MVSView, src_shape: tuple[int, int],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with d * A + b the homogeneous source point (grid_sample-normalised x, y) of every reference pixel
    lifted to depth d (A: H*W x 3, b: 3)."""
    ref_to_src = relative_pose(ref, src, device)
    K_src = grid_normalization(*src_shape, device) @ _float(src.K, device)
    rays = torch.linalg.inv(_float(ref.K, device)) @ pixel_grid(*ref.shape, device)
    return (K_src @ ref_to_src[:3, :3] @ rays).T.contiguous(), K_src @ ref_to_src[:3, 3]


def sample_at(image: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample an H x W image at N x ... x 2 pixel coordinates (OpenCV centres); zero outside."""
    height, width = image.shape
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=uv.device)
    grid = (uv * scale - 1.0).reshape(1, -1, 1, 2)
    out = F.grid_sample(image[None, None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out.reshape(uv.shape[:-1])


def warp_source(src_image: torch.Tensor, A: torch.Tensor, b: torch.Tensor, depths: torch.Tensor,
                shape: tuple[int, int], margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source image warped into the reference through each plane: (D x H x W values, D x H x W validity: the
    warped pixel lies at least `margin` pixels inside the source)."""
    hom = A[None] * depths[:, None, None] + b  # D x HW x 3
    z = hom[..., 2:]
    grid = hom[..., :2] / z.clamp(min=1e-6)
    height, width = src_image.shape
    limit = torch.tensor([1.0 - 2.0 * margin / max(width - 1, 1), 1.0 - 2.0 * margin / max(height - 1, 1)],
                         device=grid.device)
    inside = (grid.abs() <= limit).all(dim=-1) & (z[..., 0] > 0)
    warped = F.grid_sample(src_image[None, None].expand(len(depths), 1, -1, -1), grid[:, :, None], mode="bilinear",
                           padding_mode="zeros", align_corners=True)
    return warped.reshape(-1, *shape), inside.reshape(-1, *shape)


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a window x window box (shrunk at the borders) of an N x H x W tensor."""
    return F.avg_pool2d(x[:, None], window, stride=1, padding=window // 2, count_include_pad=False)[:, 0]


def ncc_cost(ref_mean: torch.Tensor, ref_std: torch.Tensor, ref_image: torch.Tensor, warped: torch.Tensor,
             valid: torch.Tensor, window: int) -> torch.Tensor:
    """1 - NCC between the reference and warped windows (N x H x W); INVALID_COST where the warp left the source."""
    mean = box_mean(warped, window)
    std = (box_mean(warped * warped, window) - mean * mean).clamp_(min=0).sqrt_()
    ncc = (box_mean(warped * ref_image, window) - mean * ref_mean) / (ref_std * std + 1e-6)
    return torch.where(valid, 1.0 - ncc.clamp(-1.0, 1.0), torch.full_like(ncc, INVALID_COST))


def window_stats(image: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and standard deviation of an H x W image over window x window boxes."""
    mean = box_mean(image[None], window)[0]
    var = box_mean(image[None] ** 2, window)[0] - mean * mean
    return mean, var.clamp(min=0).sqrt()


def cost_volume(ref: MVSView, sources: list[MVSView], inv_depths: torch.Tensor, window: int, top_k: int,
                chunk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Aggregated cost (mean of the best top_k source costs) per depth hypothesis, D x H x W; and the reference std."""
    ref_image = gray_image(ref, device)
    ref_mean, ref_std = window_stats(ref_image, window)
    images = [gray_image(src, device) for src in sources]
    projections = [(image, *plane_projection(ref, src, image.shape, device)) for image, src in zip(images, sources)]
    k = min(top_k, len(sources))
    volume = torch.empty(len(inv_depths), *ref.shape, device=device)
    for start in range(0, len(inv_depths), chunk):
        planes = 1.0 / inv_depths[start:start + chunk]
        warps = [warp_source(image, A, b, planes, ref.shape, window // 2) for image, A, b in projections]
        costs = torch.stack([ncc_cost(ref_mean, ref_std, ref_image, warped, valid, window) for warped, valid in warps])
        volume[start:start + chunk] = costs.topk(k, dim=0, largest=False).values.mean(dim=0)
    return volume, ref_std


def refine_argmin(volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winner-take-all over dim 0 with a parabola fit: (fractional index, best cost, integer index), each H x W."""
    best = volume.argmin(dim=0, keepdim=True)
    last = volume.shape[0] - 1
    c0 = volume.gather(0, best)[0]
    cm = volume.gather(0, (best - 1).clamp(min=0))[0]
    cp = volume.gather(0, (best + 1).clamp(max=last))[0]
    curvature = cm - 2.0 * c0 + cp
    interior = (best[0] > 0) & (best[0] < last) & (curvature > 1e-9)
    offset = torch.where(interior, 0.5 * (cm - cp) / curvature.clamp(min=1e-9), torch.zeros_like(c0)).clamp(-0.5, 0.5)
    return best[0] + offset, c0, best[0]


def cost_margin(volume: torch.Tensor, best: torch.Tensor, c0: torch.Tensor, exclude: int = 2) -> torch.Tensor:
    """Best cost outside +-exclude hypotheses of the winner, minus the winner's cost (H x W): a confidence."""
    index = torch.arange(volume.shape[0], device=volume.device)[:, None, None]
    far = (index - best[None]).abs() > exclude
    runner_up = torch.where(far, volume, torch.full_like(volume, INVALID_COST)).amin(dim=0)
    return runner_up - c0


def plane_sweep_depth(ref: MVSView, sources: list[MVSView], depth_min: float, depth_max: float, num_depths: int = 128,
                      window: int = 7, device: str | torch.device = "auto", top_k: int = 2, chunk: int = 8,
                      max_cost: float = 0.4, min_margin: float = 0.02,
                      min_texture: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Fronto-parallel plane sweep: (depth H x W, confidence H x W), both float32, 0 where invalid.

    Planes are uniform in inverse depth; each source is warped onto every plane (grid_sample), the photometric cost is
    1 - NCC over window x window boxes, the cost across sources is the mean of the best `top_k` (occlusion-robust).
    Winner-take-all with a parabola fit along the inverse depth gives the depth; the confidence is the margin to the
    best cost away from the winner. Pixels with cost > max_cost, margin < min_margin, or a reference window std below
    min_texture are invalid. Memory is bounded by processing `chunk` planes at a time (plus the D x H x W volume).
    """
    device = resolve_device(device)
    with torch.no_grad():
        inv_depths = inverse_depth_hypotheses(depth_min, depth_max, num_depths, device)
        volume, ref_std = cost_volume(ref, sources, inv_depths, window, top_k, chunk, device)
        index, c0, best = refine_argmin(volume)
        margin = cost_margin(volume, best, c0)
        step = (inv_depths[-1] - inv_depths[0]) / max(num_depths - 1, 1)
        depth = 1.0 / (inv_depths[0] + index * step)
        valid = (c0 <= max_cost) & (margin >= min_margin) & (ref_std >= min_texture)
        zero = torch.zeros_like(depth)
        return torch.where(valid, depth, zero), torch.where(valid, margin, zero)


def project(points: torch.Tensor, view: MVSView, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (3 x N) to the view's pixel coordinates (N x 2, OpenCV centres) and depths (N)."""
    world2cam = torch.linalg.inv(_float(view.cam2world, device))
    cam = world2cam[:3, :3] @ points + world2cam[:3, 3:]
    z = cam[2]
    uv = (_float(view.K, device) @ (cam / z.clamp(min=1e-6)))[:2].T
    return uv, z


def unproject(uv: torch.Tensor, depth: torch.Tensor, view: MVSView, device: torch.device) -> torch.Tensor:
    """Pixels (N x 2, OpenCV centres) at z-depths (N) to world points (3 x N)."""
    hom = torch.cat([uv.T, torch.ones_like(depth)[None]])
    cam = (torch.linalg.inv(_float(view.K, device)) @ hom) * depth[None]
    cam2world = _float(view.cam2world, device)
    return cam2world[:3, :3] @ cam + cam2world[:3, 3:]


def agreement(ref_depth: torch.Tensor, ref: MVSView, other_depth: torch.Tensor, other: MVSView, rel_tol: float,
              reproject_back: bool, max_reproj_px: float, device: torch.device) -> torch.Tensor:
    """H x W mask of reference depths that the other view's depth map confirms.

    Each reference pixel is lifted with its depth and projected into the other view, whose depth is read there
    (bilinear, so invalid or discontinuous neighbourhoods disagree). Without reproject_back: the projected z must match
    the read depth within rel_tol. With it: the other view's point is lifted and projected back, and must land within
    max_reproj_px of the reference pixel with a z within rel_tol of the reference depth.
    """
    height, width = ref_depth.shape
    uv_ref = pixel_grid(height, width, device)[:2].T
    d_ref = ref_depth.flatten()
    uv, z = project(unproject(uv_ref, d_ref, ref, device), other, device)
    d_other = sample_at(other_depth, uv)
    ok = (d_ref > 0) & (z > 0) & (d_other > 0)
    if reproject_back:
        uv_back, z_back = project(unproject(uv, d_other, other, device), ref, device)
        ok &= ((uv_back - uv_ref).norm(dim=1) <= max_reproj_px) & ((z_back - d_ref).abs() <= rel_tol * d_ref)
    else:
        ok &= (z - d_other).abs() <= rel_tol * d_other
    return ok.reshape(height, width)


def geometric_consistency_filter(depths: dict[str, torch.Tensor | np.ndarray], views: dict[str, MVSView],
                                 neighbours: dict[str, list[str]], rel_tol: float = 0.01, min_agree: int = 2,
                                 reproject_back: bool = True, max_reproj_px: float = 1.0,
                                 device: str | torch.device = "auto") -> dict[str, torch.Tensor]:
    """Keep a depth only where at least `min_agree` neighbouring views' depth maps agree with it (see `agreement`);
    neighbours without a depth map are ignored. Returns float32 H x W tensors, 0 = removed or invalid."""
    device = resolve_device(device)
    maps = {name: _float(depth, device) for name, depth in depths.items()}
    out = {}
    with torch.no_grad():
        for name, depth in maps.items():
            votes = torch.zeros(depth.shape, device=device, dtype=torch.int32)
            for other in neighbours.get(name, []):
                if other != name and other in maps:
                    votes += agreement(depth, views[name], maps[other], views[other], rel_tol, reproject_back,
                                       max_reproj_px, device).int()
            out[name] = torch.where(votes >= min_agree, depth, torch.zeros_like(depth))
    return out
