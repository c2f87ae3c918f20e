"""Closing the holes of filtered depth maps with local planes (after either MVS backend).

The consistency filter keeps only depths that other views confirm, which leaves holes inside surfaces that go on:
flat-coloured patches without photometric evidence, small occluders, isolated noise. A hole pixel gets the depth of
the plane fitted to the confirmed depths in the window around it when (a) that window is planar, and (b) the pixel is
enclosed: every quadrant of the window holds confirmed depths, so a hole is closed but a surface never grows over its
silhouette into the sky or onto another surface. Holes up to about half the window across close; repeated rounds
close irregular ones from their corners inwards.
A plane in space is affine in inverse depth over the image, 1 / z = a * du + b * dv + c, so the fit is linear.

Rule: closing holes adds coverage without lowering the share of depths within 2 % of the truth; measured by
bench/bench_dense.py (figures: docs/mvs.md). Runs in float64 torch on the depth's device (CPU or CUDA): window sums
are differences of one summed-area table per moment.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def window_pixels(long_side: int, fraction: float) -> int:
    """An odd window side of about `fraction` of the image's long side, at least 3 pixels."""
    side = max(3, int(round(fraction * long_side)))
    return side if side % 2 else side + 1


def summed_area(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Summed-area table of an H x W map zero-padded by radius + 1 before and radius after each axis (row and column
    0 are zeros): window sums up to `radius` pixels from any pixel are four look-ups (window_sum). In float64 the
    table is exact enough for the moments here; the plane sweep's float32 box means use shifted slices instead
    (aerialmd.mvs.plane_sweep.shifted_sum), where a float32 table would lose the NCC's small variances."""
    return F.pad(values, (radius + 1, radius, radius + 1, radius)).cumsum(0).cumsum(1)


def window_sum(table: torch.Tensor, radius: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Per pixel (y, x) the sum of the map over rows y + rows[0] .. y + rows[1] and columns x + cols[0] .. x + cols[1]
    (inclusive offsets within +-radius; zero outside the map), from summed_area(map, radius)."""
    height, width = table.shape[0] - 2 * radius - 1, table.shape[1] - 2 * radius - 1

    def at(row: int, col: int) -> torch.Tensor:
        return table[row + radius:row + radius + height, col + radius:col + radius + width]

    (top, bottom), (left, right) = rows, cols
    return at(bottom + 1, right + 1) - at(top, right + 1) - at(bottom + 1, left) + at(top, left)


def box_sum(values: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over the window x window box centred on each pixel (zero outside the map)."""
    radius = window // 2
    return window_sum(summed_area(values, radius), radius, (-radius, radius), (-radius, radius))


def local_planes(depth: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the least-squares plane in inverse depth through the valid (depth > 0) pixels of the window centred
    on it: (inverse depth of the plane at the pixel, RMS residual of the fit in inverse depth), float64.
    Sums over the window are box sums of the moments, moved to the pixel's own offsets (du, dv)."""
    height, width = depth.shape
    depth = depth.to(torch.float64)
    valid = (depth > 0).to(torch.float64)
    inverse = torch.where(depth > 0, 1.0 / depth.clamp(min=1e-12), torch.zeros_like(depth))
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=depth.device),
                          torch.arange(width, dtype=torch.float64, device=depth.device), indexing="ij")
    s = {name: box_sum(valid * value, window) for name, value in (
        ("1", 1.0), ("u", u), ("v", v), ("uu", u * u), ("uv", u * v), ("vv", v * v), ("y", inverse),
        ("uy", u * inverse), ("vy", v * inverse), ("yy", inverse * inverse))}
    n = s["1"]
    su, sv = s["u"] - u * n, s["v"] - v * n
    suu = s["uu"] - 2 * u * s["u"] + u * u * n
    svv = s["vv"] - 2 * v * s["v"] + v * v * n
    suv = s["uv"] - u * s["v"] - v * s["u"] + u * v * n
    normal_matrix = torch.stack([torch.stack([suu, suv, su], -1), torch.stack([suv, svv, sv], -1),
                                 torch.stack([su, sv, n], -1)], -2)
    normal_matrix = normal_matrix + 1e-9 * torch.eye(3, dtype=torch.float64, device=depth.device)
    rhs = torch.stack([s["uy"] - u * s["y"], s["vy"] - v * s["y"], s["y"]], -1)
    plane = torch.linalg.solve(normal_matrix, rhs)
    squared = s["yy"] - 2 * (plane * rhs).sum(-1) + torch.einsum("...i,...ij,...j->...", plane, normal_matrix, plane)
    return plane[..., 2], (squared.clamp(min=0) / n.clamp(min=1)).sqrt()


def quadrant_support(depth: torch.Tensor, window: int) -> torch.Tensor:
    """Per pixel, the smallest fraction of valid pixels among the four quadrants of the window around it (each
    quadrant half x half pixels, the pixel's own row and column excluded)."""
    half = window // 2
    table = summed_area((depth > 0).to(torch.float64), half)
    sides = ((-half, -1), (1, half))
    counts = [window_sum(table, half, rows, cols) for rows in sides for cols in sides]
    return torch.stack(counts).amin(0) / (half * half)


def fill_round(depth: torch.Tensor, window: int, max_residual: float, min_quadrant_support: float) -> torch.Tensor:
    """One round: the depth with the holes that pass both tests (planar window, enclosed pixel) filled."""
    inverse, residual = local_planes(depth, window)
    fill = ((depth <= 0) & (inverse > 0) & (residual <= max_residual * inverse)
            & (quadrant_support(depth, window) >= min_quadrant_support))
    return torch.where(fill, (1.0 / torch.where(fill, inverse, torch.ones_like(inverse))).to(depth.dtype), depth)


def fill_enclosed_holes(depth: np.ndarray, rounds: int, window: int, max_residual: float,
                        min_quadrant_support: float, device: str | torch.device = "cpu") -> np.ndarray:
    """The depth map (float32, 0 = invalid) after up to `rounds` fill rounds, computed on `device`; confirmed depths
    are never changed. max_residual: RMS of the plane fit allowed, relative to the pixel's inverse depth;
    min_quadrant_support: the fraction of each quadrant of the window that must hold depths."""
    out = torch.from_numpy(np.asarray(depth, np.float32)).to(device)
    for _ in range(rounds):
        filled = fill_round(out, window, max_residual, min_quadrant_support)
        if torch.count_nonzero(filled > 0) == torch.count_nonzero(out > 0):
            break
        out = filled
    return out.cpu().numpy()
