"""Closing the holes of filtered depth maps with local planes (after either MVS backend).

The consistency filter keeps only depths that other views confirm, which leaves holes inside surfaces that go on:
flat-coloured patches without photometric evidence, small occluders, isolated noise. A hole pixel gets the depth of
the plane fitted to the confirmed depths in the window around it when (a) that window is planar, and (b) the pixel is
enclosed: every quadrant of the window holds confirmed depths, so a hole is closed but a surface never grows over its
silhouette into the sky or onto another surface. Holes up to about half the window across close; repeated rounds
close irregular ones from their corners inwards.
A plane in space is affine in inverse depth over the image, 1 / z = a * du + b * dv + c, so the fit is linear.

Rule: closing holes adds coverage without lowering the share of depths within 2 % of the truth; measured by
bench/bench_dense.py (figures: docs/mvs.md).
"""

from __future__ import annotations

import cv2
import numpy as np


def window_pixels(long_side: int, fraction: float) -> int:
    """An odd window side of about `fraction` of the image's long side, at least 3 pixels."""
    side = max(3, int(round(fraction * long_side)))
    return side if side % 2 else side + 1


def _box_sum(values: np.ndarray, window: int) -> np.ndarray:
    return cv2.boxFilter(values, cv2.CV_64F, (window, window), normalize=False, borderType=cv2.BORDER_CONSTANT)


def local_planes(depth: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the least-squares plane in inverse depth through the valid (depth > 0) pixels of the window centred
    on it: (inverse depth of the plane at the pixel, RMS residual of the fit in inverse depth).
    Sums over the window are box filters of the moments, moved to the pixel's own offsets (du, dv)."""
    height, width = depth.shape
    valid = (depth > 0).astype(np.float64)
    inverse = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-12), 0.0)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    s = {name: _box_sum(valid * value, window) for name, value in (
        ("1", 1.0), ("u", u), ("v", v), ("uu", u * u), ("uv", u * v), ("vv", v * v), ("y", inverse),
        ("uy", u * inverse), ("vy", v * inverse), ("yy", inverse * inverse))}
    n = s["1"]
    su, sv = s["u"] - u * n, s["v"] - v * n
    suu = s["uu"] - 2 * u * s["u"] + u * u * n
    svv = s["vv"] - 2 * v * s["v"] + v * v * n
    suv = s["uv"] - u * s["v"] - v * s["u"] + u * v * n
    normal_matrix = np.stack([np.stack([suu, suv, su], -1), np.stack([suv, svv, sv], -1),
                              np.stack([su, sv, n], -1)], -2) + 1e-9 * np.eye(3)
    rhs = np.stack([s["uy"] - u * s["y"], s["vy"] - v * s["y"], s["y"]], -1)
    plane = np.linalg.solve(normal_matrix, rhs[..., None])[..., 0]
    squared = s["yy"] - 2 * (plane * rhs).sum(-1) + np.einsum("...i,...ij,...j->...", plane, normal_matrix, plane)
    return plane[..., 2], np.sqrt(np.maximum(squared, 0) / np.maximum(n, 1))


def quadrant_support(depth: np.ndarray, window: int) -> np.ndarray:
    """Per pixel, the smallest fraction of valid pixels among the four quadrants of the window around it (each
    quadrant half x half pixels, the pixel's own row and column excluded)."""
    half = window // 2
    valid = (depth > 0).astype(np.float64)
    fractions = []
    for rows in (slice(0, half), slice(half + 1, window)):
        for cols in (slice(0, half), slice(half + 1, window)):
            kernel = np.zeros((window, window))
            kernel[rows, cols] = 1.0 / (half * half)
            fractions.append(cv2.filter2D(valid, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT))
    return np.min(fractions, axis=0)


def fill_round(depth: np.ndarray, window: int, max_residual: float, min_quadrant_support: float) -> np.ndarray:
    """One round: the depth with the holes that pass both tests (planar window, enclosed pixel) filled."""
    inverse, residual = local_planes(depth, window)
    fill = ((depth <= 0) & (inverse > 0) & (residual <= max_residual * inverse)
            & (quadrant_support(depth, window) >= min_quadrant_support))
    return np.where(fill, 1.0 / np.where(fill, inverse, 1.0), depth).astype(np.float32)


def fill_enclosed_holes(depth: np.ndarray, rounds: int, window: int, max_residual: float,
                        min_quadrant_support: float) -> np.ndarray:
    """The depth map (float32, 0 = invalid) after up to `rounds` fill rounds; confirmed depths are never changed.
    max_residual: RMS of the plane fit allowed, relative to the pixel's inverse depth; min_quadrant_support: the
    fraction of each quadrant of the window that must hold depths."""
    out = np.asarray(depth, np.float32)
    for _ in range(rounds):
        filled = fill_round(out, window, max_residual, min_quadrant_support)
        if np.count_nonzero(filled > 0) == np.count_nonzero(out > 0):
            break
        out = filled
    return out
