"""Multi-view stereo core: plane-sweep depth for a reference view, and multi-view geometric consistency filtering.

Conventions (aerialmd.geometry.camera): K in OpenCV's pixel-centre convention, poses as camera-to-world 4x4 matrices, depth is
the z coordinate in the camera, 0 = invalid. Images hold intensities in [0, 1] (uint8 images are scaled). All the work
is done in float32 torch on `device` ('auto': CUDA when available, else CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

INVALID_COST = 2.0  # worse than any 1 - NCC
MIN_PLANE_CLEARANCE = 0.5  # metres between the camera and the highest horizontal sweep plane
NCC_STD_FLOOR = 0.001  # intensity std (images in [0, 1]) below which a window counts as untextured (0.01 lost
# coverage on the sample: low-contrast but real texture was scored as untextured)
RANGE_SLACK = 1e-4  # float32 rounding at the ends of the depth range


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


@dataclasses.dataclass(frozen=True)
class PlaneFamily:
    """Parallel sweep planes n . X = c in the reference camera frame (metres, OpenCV camera axes).

    A pixel whose ray is r = K^-1 (u, v, 1) meets plane c at depth z = c / (n . r). Offsets are a geometric series
    (same sign), so consecutive planes differ by the same relative depth at every pixel: equal relative precision
    near and far, which is what a relative-error target asks for."""

    normal: np.ndarray
    offsets: np.ndarray


def geometric_offsets(low: float, high: float, count: int) -> np.ndarray:
    """`count` offsets from low to high (same sign, nonzero) with a constant ratio between neighbours."""
    sign = np.sign(low)
    return sign * np.geomspace(abs(low), abs(high), count)


def fronto_parallel_planes(depth_min: float, depth_max: float, count: int) -> PlaneFamily:
    """Planes facing the camera at depths spaced geometrically from depth_min to depth_max."""
    return PlaneFamily(np.array([0.0, 0.0, 1.0]), geometric_offsets(depth_min, depth_max, count))


def horizontal_planes(ref: MVSView, up: np.ndarray, height_min: float, height_max: float,
                      count: int) -> PlaneFamily | None:
    """Planes of constant world height (normal `up`, world frame) from height_min up to height_max or to just below
    the camera (horizontal surfaces above it are not visible), spaced geometrically in their distance below the camera;
    None when the camera is not above height_min."""
    cam2world = np.asarray(ref.cam2world, dtype=np.float64)
    camera_height = float(up @ cam2world[:3, 3])
    top = min(height_max, camera_height - MIN_PLANE_CLEARANCE)
    if top <= height_min:
        return None
    normal = cam2world[:3, :3].T @ up
    return PlaneFamily(normal, geometric_offsets(height_min - camera_height, top - camera_height, count))


def oblique_vertical_planes(ref: MVSView, up: np.ndarray, azimuth_deg: float, depth_min: float, depth_max: float,
                            count: int) -> PlaneFamily | None:
    """Vertical planes (facades) turned `azimuth_deg` about `up` away from facing the camera (normal: the horizontal
    part of the optical axis, turned), at distances spaced geometrically so that their depths on the optical axis
    span depth_min to depth_max; None when they would be seen edge-on (a camera looking nearly straight down).
    Facades seen obliquely from wide baselines do not match in fronto-parallel windows (docs/mvs.md)."""
    cam2world = np.asarray(ref.cam2world, dtype=np.float64)
    axis = cam2world[:3, 2]
    horizontal = axis - (axis @ up) * up
    if np.linalg.norm(horizontal) < 1e-3:
        return None
    horizontal /= np.linalg.norm(horizontal)
    turn = np.radians(azimuth_deg)
    normal = np.cos(turn) * horizontal + np.sin(turn) * np.cross(up, horizontal)
    normal_cam = cam2world[:3, :3].T @ normal
    if normal_cam[2] < 0.05:
        return None
    return PlaneFamily(normal_cam, geometric_offsets(depth_min * normal_cam[2], depth_max * normal_cam[2], count))


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
    """(A, b) with d * A[:, i] + b the homogeneous source point (grid_sample-normalised x, y) of reference pixel i
    lifted to depth d (A: 3 x H*W, one contiguous row per coordinate; b: 3)."""
    ref_to_src = relative_pose(ref, src, device)
    K_src = grid_normalization(*src_shape, device) @ _float(src.K, device)
    rays = torch.linalg.inv(_float(ref.K, device)) @ pixel_grid(*ref.shape, device)
    return (K_src @ ref_to_src[:3, :3] @ rays).contiguous(), K_src @ ref_to_src[:3, 3]


def sample_at(image: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample an H x W image at N x ... x 2 pixel coordinates (OpenCV centres); zero outside."""
    height, width = image.shape
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=uv.device)
    grid = (uv * scale - 1.0).reshape(1, -1, 1, 2)
    out = F.grid_sample(image[None, None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out.reshape(uv.shape[:-1])


def shifted_sum(x: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Sum over `window` neighbours centred on each element along `dim` (negative), zeros beyond the ends: the sum of
    `window` shifted slices of the zero-padded tensor (torch's CPU avg_pool2d without padded counts is much slower;
    docs/mvs.md)."""
    radius, size = window // 2, x.shape[dim]
    padding = [0, 0] * (-dim - 1) + [radius, radius]
    padded = F.pad(x, padding)
    total = padded.narrow(dim, 0, size).clone()
    for shift in range(1, window):
        total += padded.narrow(dim, shift, size)
    return total


def box_counts(size: int, window: int, device: torch.device) -> torch.Tensor:
    """How many of a centred window's elements lie inside a line of `size` elements, at each position."""
    index = torch.arange(size, device=device)
    return ((index + window // 2).clamp(max=size - 1) - (index - window // 2).clamp(min=0) + 1).float()


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a window x window box (shrunk at the borders) of an N x H x W tensor; separable (rows, then columns:
    the shrunk box is still a rectangle), so its cost grows with window, not window squared."""
    height, width = x.shape[-2:]
    total = shifted_sum(shifted_sum(x, window, -1), window, -2)
    return total / (box_counts(height, window, x.device)[:, None] * box_counts(width, window, x.device)[None])


def ncc_cost(ref_mean: torch.Tensor, ref_std: torch.Tensor, ref_image: torch.Tensor, warped: torch.Tensor,
             valid: torch.Tensor, window: int) -> torch.Tensor:
    """1 - NCC between the reference and warped windows (N x H x W); INVALID_COST where the warp left the source.

    The NCC denominator has a floor (NCC_STD_FLOOR squared), so windows without texture score about 0 (cost 1) at
    every depth rather than dividing by zero: they carry no evidence, and smoothing fills them."""
    mean = box_mean(warped, window)
    std = (box_mean(warped * warped, window) - mean * mean).clamp_(min=0).sqrt_()
    ncc = (box_mean(warped * ref_image, window) - mean * ref_mean) / (ref_std * std + NCC_STD_FLOOR**2)
    return ncc.clamp_(-1.0, 1.0).neg_().add_(1.0).masked_fill_(~valid, INVALID_COST)


def window_stats(image: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and standard deviation of an H x W image over window x window boxes."""
    mean = box_mean(image[None], window)[0]
    var = box_mean(image[None] ** 2, window)[0] - mean * mean
    return mean, var.clamp(min=0).sqrt()


def hypothesis_depths(offsets: torch.Tensor, ray_dot: torch.Tensor, depth_min: float, depth_max: float) -> torch.Tensor:
    """Depth of every pixel on each plane (P x HW) from the planes' offsets c and the pixels' n . r; 0 where the plane
    is behind the camera or outside [depth_min, depth_max]."""
    depth = offsets[:, None] / ray_dot[None]
    inside = (depth >= depth_min * (1.0 - RANGE_SLACK)) & (depth <= depth_max * (1.0 + RANGE_SLACK))
    return torch.where(inside, depth, torch.zeros_like(depth))


def source_coordinates(A: torch.Tensor, b: torch.Tensor, depth: torch.Tensor, shape: tuple[int, int],
                       src_shape: tuple[int, int], margin: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the pixels of a reference of `shape` at per-pixel depths (N x HW, 0 = no hypothesis) land in the source:
    grid_sample-normalised x and y (N x H x W each) and validity (a hypothesis exists and the point lies at least
    `margin` pixels inside the source). Each coordinate is its own contiguous tensor: element-wise steps on a trailing
    axis of 2 or 3 cost torch on the CPU several times more (docs/mvs.md, "Sweep speed")."""
    z = depth * A[2] + b[2]
    inverse_z = z.clamp(min=1e-6).reciprocal_()
    x = (depth * A[0] + b[0]).mul_(inverse_z)
    y = (depth * A[1] + b[1]).mul_(inverse_z)
    height, width = src_shape
    inside = ((x.abs() <= 1.0 - 2.0 * margin / max(width - 1, 1)) & (y.abs() <= 1.0 - 2.0 * margin / max(height - 1, 1))
              & (z > 0) & (depth > 0))
    return x.reshape(-1, *shape), y.reshape(-1, *shape), inside.reshape(-1, *shape)


def valid_window(inside: torch.Tensor, reach: int) -> tuple[slice, slice] | None:
    """The rows and columns of an N x H x W validity mask that hold a valid pixel, grown by `reach` on each side (the
    matching window's), within the image; None when no pixel is valid. Costs computed on this crop equal those
    computed on the whole image at every valid pixel: every window around one lies inside it."""
    anywhere = inside.any(dim=0)
    rows, cols = anywhere.any(dim=1).nonzero(), anywhere.any(dim=0).nonzero()
    if len(rows) == 0:
        return None
    height, width = inside.shape[1:]
    return (slice(max(int(rows[0]) - reach, 0), min(int(rows[-1]) + reach + 1, height)),
            slice(max(int(cols[0]) - reach, 0), min(int(cols[-1]) + reach + 1, width)))


def sample_source(src_image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The source image bilinearly sampled at N x H x W grid_sample-normalised coordinates (zero outside)."""
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(src_image[None, None].expand(len(grid), 1, -1, -1), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=True)[:, 0]


@dataclasses.dataclass
class SweepSetup:
    """The plane families of one sweep on the reference's pixels: per family the offsets c (P_f), the log of the ratio
    between neighbouring offsets, n . r per pixel (HW), and the depth range its hypotheses are kept in."""

    offsets: list[torch.Tensor]
    log_ratios: list[float]
    ray_dots: list[torch.Tensor]
    depth_ranges: list[tuple[float, float]]

    @classmethod
    def create(cls, ref: MVSView, families: list[PlaneFamily], depth_ranges: list[tuple[float, float]],
               device: torch.device) -> "SweepSetup":
        rays = torch.linalg.inv(_float(ref.K, device)) @ pixel_grid(*ref.shape, device)
        ratios = [float(np.log(f.offsets[1] / f.offsets[0])) if len(f.offsets) > 1 else 0.0 for f in families]
        return cls([_float(f.offsets, device) for f in families], ratios,
                   [_float(f.normal, device) @ rays for f in families], depth_ranges)

    @property
    def starts(self) -> list[int]:
        """Index of each family's first plane in the stacked cost volume."""
        return np.cumsum([0] + [len(c) for c in self.offsets]).tolist()


class PhotometricCost:
    """Matching cost of reference pixels at given depths: 1 - NCC over window x window boxes against each source,
    aggregated as the mean of the best top_k sources (occlusion-robust). Pixels keep a fronto-parallel window."""

    def __init__(self, ref: MVSView, sources: list[MVSView], window: int, top_k: int, device: torch.device) -> None:
        self.shape, self.window, self.k = ref.shape, window, min(top_k, len(sources))
        self.ref_image = gray_image(ref, device)
        self.ref_mean, self.ref_std = window_stats(self.ref_image, window)
        images = [gray_image(src, device) for src in sources]
        self.projections = [(image, *plane_projection(ref, src, image.shape, device))
                            for image, src in zip(images, sources)]

    def __call__(self, depth: torch.Tensor) -> torch.Tensor:
        """N x H x W costs for N per-pixel depth hypotheses (N x HW, 0 = none: INVALID_COST). Each source's costs are
        computed on the crop holding its valid pixels only (valid_window: the same values, a fraction of the work where
        the warp leaves the source or planes have no hypothesis, e.g. horizontal planes above the horizon)."""
        lowest = [torch.full((len(depth), *self.shape), INVALID_COST, device=depth.device) for _ in range(self.k)]
        for image, A, b in self.projections:
            x, y, inside = source_coordinates(A, b, depth, self.shape, image.shape, self.window // 2)
            crop = valid_window(inside, self.window // 2)
            if crop is None:
                continue
            rows, cols = crop
            warped = sample_source(image, x[:, rows, cols], y[:, rows, cols])
            cost = ncc_cost(self.ref_mean[rows, cols], self.ref_std[rows, cols], self.ref_image[rows, cols], warped,
                            inside[:, rows, cols], self.window)
            keep_lowest([kept[:, rows, cols] for kept in lowest], cost)
        return sum(lowest[1:], lowest[0]) / len(lowest)


def keep_lowest(lowest: list[torch.Tensor], cost: torch.Tensor) -> None:
    """Insert `cost` into the element-wise sorted tensors `lowest` (ascending; the largest falls off), in place: the
    running k lowest costs over the sources without stacking all of them (k is small: 2)."""
    for kept in lowest:
        smaller = torch.minimum(kept, cost)
        cost = torch.maximum(kept, cost)
        kept.copy_(smaller)


def cost_volume(cost: PhotometricCost, setup: SweepSetup, chunk: int, device: torch.device) -> torch.Tensor:
    """The cost of every plane of every family, stacked: (sum P_f) x H x W."""
    volume = torch.empty(setup.starts[-1], *cost.shape, device=device)
    for start, offsets, ray_dot, depth_range in zip(setup.starts, setup.offsets, setup.ray_dots, setup.depth_ranges):
        for first in range(0, len(offsets), chunk):
            depth = hypothesis_depths(offsets[first:first + chunk], ray_dot, *depth_range)
            volume[start + first:start + first + len(depth)] = cost(depth)
    return volume


@dataclasses.dataclass(frozen=True)
class SmoothingConf:
    """Semi-global aggregation of the cost volume along the 4 image axes directions (Hirschmueller's SGM, on sweep
    planes): a step of one plane between neighbouring pixels costs p1, a larger jump p2 (in units of the 1 - NCC
    cost). It fills weakly textured areas from their surroundings and removes isolated wrong minima. The defaults
    are chosen on `bench/bench_sweep.py --dense` and `bench/bench_dense.py` (docs/mvs.md, "Stronger smoothing")."""

    p1: float = 0.05
    p2: float = 0.6


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's CPU threads set to `count` inside, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def single_threaded(device: torch.device) -> contextlib.AbstractContextManager:
    """One CPU thread for torch inside (other devices: unchanged). For many small sequential steps (SGM, LightGlue on
    one pair) thread hand-off costs more than it gains, and on a loaded machine spinning threads made SGM 15x slower."""
    return torch_threads(1) if device.type == "cpu" else contextlib.nullcontext()


def aggregate_along_first(sequence: torch.Tensor, p1: float, p2: float) -> torch.Tensor:
    """SGM path costs along dim 0 of an L x B x D x N volume (planes of one family adjacent along D). The scanned axis
    leads so that each step reads and writes contiguous memory."""
    out = torch.empty_like(sequence)
    previous = out[0] = sequence[0]
    padded = torch.full((sequence.shape[1], sequence.shape[2] + 2, sequence.shape[3]), float("inf"),
                        device=sequence.device)
    for step in range(1, len(sequence)):
        lowest = previous.amin(dim=1, keepdim=True)
        padded[:, 1:-1] = previous
        best = torch.minimum(padded[:, :-2], padded[:, 2:]).add_(p1)
        torch.minimum(best, previous, out=best)
        torch.minimum(best, lowest + p2, out=best)
        previous = out[step] = best.sub_(lowest).add_(sequence[step])
    return out


def both_ways_along(volume: torch.Tensor, axis: int, p1: float, p2: float) -> torch.Tensor:
    """Sum of the forward and backward SGM path costs along image axis `axis` (1: y, 2: x) of a D x H x W volume."""
    other = 3 - axis
    sequence = volume.permute(axis, 0, other)  # L x D x N
    paths = aggregate_along_first(torch.stack([sequence, sequence.flip(0)], dim=1).contiguous(), p1, p2)
    total = paths[:, 0] + paths[:, 1].flip(0)
    return total.permute(1, 0, 2) if axis == 1 else total.permute(1, 2, 0)


def smooth_cost_volume(volume: torch.Tensor, conf: SmoothingConf) -> torch.Tensor:
    """Mean of the SGM path costs along +-x and +-y (same scale as the input volume). The planes of all families are
    stacked along D, so a step between two families' end planes is charged p1 like any neighbour."""
    with single_threaded(volume.device), ThreadPoolExecutor(2) as pool:  # the two axes' scans side by side
        horizontal, vertical = pool.map(lambda axis: both_ways_along(volume, axis, conf.p1, conf.p2), (2, 1))
    return ((horizontal + vertical) / 4.0).contiguous()


def parabola_offset(flat: torch.Tensor, best: torch.Tensor, interior: torch.Tensor) -> torch.Tensor:
    """Sub-plane offset of the minimum (in [-0.5, 0.5] planes) from a parabola through the costs of the winner `best`
    and its neighbours in a D x N cost volume; 0 where `interior` is False, the fit is not convex or a neighbour has
    no hypothesis."""
    c0 = flat.gather(0, best[None])[0]
    cm = flat.gather(0, (best - 1).clamp(min=0)[None])[0]
    cp = flat.gather(0, (best + 1).clamp(max=len(flat) - 1)[None])[0]
    curvature = cm - 2.0 * c0 + cp
    interior = interior & (curvature > 1e-9) & (cm < INVALID_COST) & (cp < INVALID_COST)
    return torch.where(interior, 0.5 * (cm - cp) / curvature.clamp(min=1e-9), torch.zeros_like(c0)).clamp(-0.5, 0.5)


def winner_depth(volume: torch.Tensor, setup: SweepSetup) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winner-take-all over all planes with a parabola fit (in log offset) between the winner's neighbours in its
    family: (depth, best cost, log-depth half-width covering +-2 planes around the winner), each H x W."""
    shape = volume.shape[1:]
    flat = volume.reshape(len(volume), -1)
    best = flat.argmin(dim=0)
    c0 = flat.gather(0, best[None])[0]
    starts = torch.tensor(setup.starts, device=volume.device)
    family = torch.bucketize(best, starts[1:], right=True)
    local = best - starts[family]
    size = starts[family + 1] - starts[family]
    offset = parabola_offset(flat, best, (local > 0) & (local < size - 1))
    log_ratio = torch.tensor(setup.log_ratios, device=volume.device)[family]
    plane = torch.cat(setup.offsets)[best] * torch.exp(offset * log_ratio)
    depth = plane / torch.stack(setup.ray_dots).gather(0, family[None])[0]
    radius = 2.5 * log_ratio.abs()
    return depth.reshape(shape), c0.reshape(shape), radius.reshape(shape)


def cost_margin(volume: torch.Tensor, setup: SweepSetup, depth: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Best cost among planes whose depth at the pixel differs from the winner's by more than `radius` in log depth,
    minus the winner's cost (H x W): a confidence that no other depth explains the pixel as well."""
    log_depth, flat_radius = depth.flatten().abs().clamp(min=1e-12).log(), radius.flatten()
    runner_up = torch.full_like(log_depth, INVALID_COST)
    flat = volume.reshape(len(volume), -1)
    for start, offsets, ray_dot in zip(setup.starts, setup.offsets, setup.ray_dots):
        plane_depth = (offsets[:, None] / ray_dot[None]).abs().clamp(min=1e-12)
        far = (plane_depth.log() - log_depth).abs() > flat_radius
        costs = torch.where(far, flat[start:start + len(offsets)], torch.full_like(far, INVALID_COST, dtype=flat.dtype))
        runner_up = torch.minimum(runner_up, costs.amin(dim=0))
    return (runner_up - flat.amin(dim=0)).reshape(depth.shape)


def plane_sweep_depth(ref: MVSView, sources: list[MVSView], depth_min: float, depth_max: float, num_depths: int = 128,
                      window: int = 7, device: str | torch.device = "auto", top_k: int = 2, chunk: int = 8,
                      max_cost: float = 0.8, min_margin: float = 0.0, min_texture: float = 0.0,
                      extra_families: tuple[PlaneFamily, ...] = (),
                      smoothing: SmoothingConf | None = SmoothingConf()) -> tuple[torch.Tensor, torch.Tensor]:
    """Plane sweep over fronto-parallel planes (plus any `extra_families`, e.g. horizontal planes for the ground):
    (depth H x W, confidence H x W), both float32, 0 where invalid.

    Each source is warped onto every plane (grid_sample), the photometric cost is 1 - NCC over window x window boxes,
    the cost across sources is the mean of the best `top_k` (occlusion-robust). Winner-take-all over all planes with a
    parabola fit gives the depth; the confidence is the margin to the best cost at a clearly different depth. Pixels
    with cost > max_cost, margin < min_margin, or a reference window std below min_texture are invalid. Depths beyond
    depth_max are never hypothesised; depth_min bounds the fronto-parallel planes only: the extra families carry their
    own bounds (horizontal planes: the heights of the observed surfaces), and a depth_min from sparse points can lie
    far behind them (a ground photo's sparse points are on the buildings it looks at; most of the street in front of
    it is nearer). Memory: `chunk` planes at a time plus the cost volume.
    """
    device = resolve_device(device)
    families = [fronto_parallel_planes(depth_min, depth_max, num_depths), *extra_families]
    depth_ranges = [(depth_min, depth_max)] + [(0.0, depth_max)] * len(extra_families)
    with torch.no_grad():
        setup = SweepSetup.create(ref, families, depth_ranges, device)
        cost = PhotometricCost(ref, sources, window, top_k, device)
        volume = cost_volume(cost, setup, chunk, device)
        if smoothing is not None:
            volume = smooth_cost_volume(volume, smoothing)
        depth, c0, radius = winner_depth(volume, setup)
        margin = cost_margin(volume, setup, depth, radius)
        valid = (c0 <= max_cost) & (margin >= min_margin) & (cost.ref_std >= min_texture) & (depth > 0)
        zero = torch.zeros_like(c0)
        return torch.where(valid, depth, zero), torch.where(valid, margin, zero)


def halved_view(view: MVSView, device: torch.device) -> MVSView:
    """The view at half resolution: gray image averaged over 2 x 2 blocks (odd last row/column dropped), intrinsics
    mapped to the new pixel centres (new pixel i covers old pixels 2i and 2i + 1, centre 2i + 0.5)."""
    image = F.avg_pool2d(gray_image(view, device)[None, None], 2)[0, 0]
    scale = torch.tensor([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]], device=device)
    return MVSView(image, scale @ _float(view.K, device), view.cam2world)


def upsampled(coarse: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A half-resolution map (halved_view's pixels) at full resolution, nearest coarse pixel (2x, edge replicated)."""
    full = coarse.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)
    full = F.pad(full[None, None], (0, max(shape[1] - full.shape[1], 0), 0, max(shape[0] - full.shape[0], 0)),
                 mode="replicate")[0, 0]
    return full[:shape[0], :shape[1]]


def refine_depth(cost: PhotometricCost, depth: torch.Tensor, log_step: float, steps: int,
                 smoothing: SmoothingConf | None) -> torch.Tensor:
    """Per-pixel depth refined around an initial H x W depth (0 = none): costs at depth * exp(k * log_step) for
    k = -steps..steps (semi-globally smoothed, which keeps neighbours consistent in weak texture), winner with a
    parabola fit; pixels without an initial depth stay 0."""
    factors = torch.exp(log_step * torch.arange(-steps, steps + 1, device=depth.device, dtype=torch.float32))
    volume = cost(factors[:, None] * depth.flatten()[None])
    if smoothing is not None:
        volume = smooth_cost_volume(volume, smoothing)
    flat = volume.reshape(len(volume), -1)
    best = flat.argmin(dim=0)
    offset = parabola_offset(flat, best, (best > 0) & (best < len(flat) - 1))
    return depth * torch.exp(log_step * ((best - steps).float() + offset)).reshape(depth.shape)


def coarse_to_fine_depth(ref: MVSView, sources: list[MVSView], depth_min: float, depth_max: float,
                         num_depths: int = 128, window: int = 7, device: str | torch.device = "auto", top_k: int = 2,
                         refine_steps: int = 4, smoothing: SmoothingConf | None = SmoothingConf(),
                         **sweep_options) -> tuple[torch.Tensor, torch.Tensor]:
    """plane_sweep_depth at half resolution (a quarter of the pixels: the cost volume and its smoothing are nearly all
    of the work), then every full-resolution pixel refined around the upsampled coarse depth over +-1 fronto-parallel
    plane step in 2 * refine_steps + 1 hypotheses, with a window of the coarse window's footprint (2 * window - 1:
    the coarse window at full resolution gives noisy refinements that the consistency filter rejects); validity and
    confidence are the coarse pixel's. Same arguments (`sweep_options`: chunk,
    max_cost, min_margin, min_texture, extra_families) and outputs as plane_sweep_depth."""
    device = resolve_device(device)
    with torch.no_grad():
        depth, confidence = plane_sweep_depth(halved_view(ref, device), [halved_view(s, device) for s in sources],
                                              depth_min, depth_max, num_depths, window, device, top_k,
                                              smoothing=smoothing, **sweep_options)
        depth, confidence = upsampled(depth, ref.shape), upsampled(confidence, ref.shape)
        cost = PhotometricCost(ref, sources, 2 * window - 1, top_k, device)
        plane_step = float(np.log(depth_max / depth_min)) / max(num_depths - 1, 1)
        return refine_depth(cost, depth, plane_step / refine_steps, refine_steps, smoothing), confidence


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


# A prior depth is fitted to a depth map over at least this share of its pixels (those the views confirm) or not used.
MIN_PRIOR_FIT_SHARE = 0.01


def prior_agreement(depth: torch.Tensor, confirmed: torch.Tensor, prior: torch.Tensor, rel_tol: float) -> torch.Tensor:
    """H x W mask of depths that a prior depth of the same view (a ground photo's MegaDepth depth: another
    reconstruction, so independent evidence) confirms within rel_tol, after the prior's scale is fitted to the
    `confirmed` depths (median ratio: robust to an error of the scale that brought it into metres); all False where
    the two overlap on too few confirmed pixels to fit it."""
    both = confirmed & (depth > 0) & (prior > 0)
    if both.sum() < MIN_PRIOR_FIT_SHARE * depth.numel():
        return torch.zeros_like(confirmed)
    scaled = prior * (depth[both] / prior[both]).median()
    return (depth > 0) & (prior > 0) & ((depth - scaled).abs() <= rel_tol * scaled)


def geometric_consistency_filter(depths: dict[str, torch.Tensor | np.ndarray], views: dict[str, MVSView],
                                 neighbours: dict[str, list[str]], rel_tol: float = 0.01, min_agree: int = 2,
                                 reproject_back: bool = True, max_reproj: float = 1.0 / 320.0,
                                 device: str | torch.device = "auto",
                                 priors: dict[str, torch.Tensor | np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Keep a depth only where at least `min_agree` neighbouring views' depth maps agree with it (see `agreement`);
    neighbours without a depth map are ignored. The reprojection tolerance `max_reproj` is a fraction of the reference
    image's long side (1/320: 1 px at 320 px, 2 px at 640 px), i.e. about a fixed angle: the depth noise in pixels grows
    with the resolution (at 640 px the sweep runs at half resolution), and a fixed pixel tolerance drops good depths at
    higher resolutions (bench/bench_dense.py; docs/mvs.md). A view's prior depth (same size, by name) counts as one
    more agreeing neighbour where it agrees (`prior_agreement`). Returns float32 H x W tensors, 0 = removed or
    invalid."""
    device = resolve_device(device)
    maps = {name: _float(depth, device) for name, depth in depths.items()}
    out = {}
    with torch.no_grad():
        for name, depth in maps.items():
            votes = torch.zeros(depth.shape, device=device, dtype=torch.int32)
            max_reproj_px = max_reproj * max(depth.shape)
            for other in neighbours.get(name, []):
                if other != name and other in maps:
                    votes += agreement(depth, views[name], maps[other], views[other], rel_tol, reproject_back,
                                       max_reproj_px, device).int()
            if name in (priors or {}):
                votes += prior_agreement(depth, votes >= min_agree, _float(priors[name], device), rel_tol).int()
            out[name] = torch.where(votes >= min_agree, depth, torch.zeros_like(depth))
    return out
