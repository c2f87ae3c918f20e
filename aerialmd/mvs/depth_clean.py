"""Depth cleaning, the dense stage's last step (both backends): depths on the sky and flying pixels removed, from the
image and the depth alone (no network weights).

Sky: the windowed matching cost spreads a building's depth a few pixels over the sky beside it, and other views agree
with that band, so the consistency filter keeps it. The sky is found as the regions of low local contrast (standard
deviation of any colour channel under `max_std` in a `window` around each pixel: a blue sky and a green wall can have
the same grey level) that reach the image's top `window` rows (an undistorted photo's first row can be a black border)
and look like sky rather than a plain wall or street: smooth (at least half of the region under `smooth_std`), at
least as bright as the image's median grey, and with a depth on at most `max_depth_share` of it (a plain wall reaching
the top of a photo has its depths on most of it once holes are closed; the sky has none but the band and stray blobs
matched on its gradient). They are grown by `margin` pixels (the region stops half a contrast window short of the
skyline, and the band reaches beyond it as far as the matching window spreads: a few pixels, more where the sweep ran
coarse-to-fine) and depths inside are removed. A region that fails a test keeps its depths: the rule errs towards
leaving sky, never towards cutting a wall.

Flying pixels: at a depth discontinuity the matching window mixes both surfaces and the winner lands in between. A
depth goes when, along one of the four directions through it (row, column, diagonals), it differs by more than
`rel_tol` from both neighbours and is not on a plane with them (its inverse depth off their mean by more than
`rel_tol`: on a plane inverse depth is affine in the pixel, so the steep street near the horizon stays), or when fewer
than `min_neighbours` of its 8 neighbours hold a depth within `rel_tol` of it (speckles).

Silhouette fringes: the same window spreads a foreground's depth a few pixels past its silhouette over whatever lies
behind (the far ground beside a building seen from an orbit), and neighbouring views spread it alike, so the
consistency filter keeps the fringe. Where a depth's 4-neighbour lies more than `jump` (relative) farther, and the
step is not a plane's (it does not continue, within half of it, the inverse-depth step from the pixel on the other
side: on a plane inverse depth is affine in the pixel, and the street towards the horizon grows by more than `jump` a
row there), the nearer depth is the edge of a foreground; the depths within `radius` pixels of such an edge that are
no farther than it (by `jump` / 2) are trimmed. Silhouettes lose `radius` pixels of right depth where nothing was
spread.

Measured against the sample's truth by bench/bench_dense.py (depths on sky, coverage); figures in docs/mvs.md.
"""

from __future__ import annotations

import cv2
import numpy as np


def local_std(image: np.ndarray, window: int) -> np.ndarray:
    """Standard deviation of the levels in a window x window box around each pixel; for a colour image the largest
    over its channels (blue sky and a green wall can have the same grey level)."""
    image = image.astype(np.float32)
    mean = cv2.blur(image, (window, window), borderType=cv2.BORDER_REFLECT)
    square = cv2.blur(image * image, (window, window), borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(np.maximum(square - mean * mean, 0.0))
    return std.max(axis=2) if std.ndim == 3 else std


def sky_mask(rgb: np.ndarray, depth: np.ndarray, window: int, max_std: float, smooth_std: float, margin: int,
             max_depth_share: float) -> np.ndarray:
    """Pixels of the sky (module doc): low-contrast regions reaching the top `window` rows that are smooth, bright
    and mostly without depth, grown by `margin` pixels."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    contrast = local_std(rgb, window)
    flat = (contrast < max_std).astype(np.uint8)
    count, labels = cv2.connectedComponents(flat, connectivity=4)
    top = np.unique(labels[:window][flat[:window] > 0])
    if not len(top):
        return np.zeros(depth.shape, bool)
    regions = labels.ravel()
    size = np.bincount(regions, minlength=count)[top]
    with_depth = np.bincount(regions, weights=(depth > 0).ravel(), minlength=count)[top]
    smooth = np.bincount(regions, weights=(contrast < smooth_std).ravel(), minlength=count)[top]
    brightness = np.bincount(regions, weights=gray.ravel().astype(np.float64), minlength=count)[top]
    sky_like = (with_depth <= max_depth_share * size) & (smooth >= 0.5 * size) & (brightness >= np.median(gray) * size)
    sky = np.isin(labels, top[sky_like]).astype(np.uint8)
    if margin > 0 and sky.any():
        sky = cv2.dilate(sky, disc(margin))
    return sky.astype(bool)


def disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def neighbour(depth: np.ndarray, dv: int, du: int) -> np.ndarray:
    """The depth of each pixel's neighbour at offset (dv, du) in {-1, 0, 1}^2 (0 beyond the border)."""
    padded = np.pad(depth, 1)
    height, width = depth.shape
    return padded[1 + dv:1 + dv + height, 1 + du:1 + du + width]


def inverse_depth(depth: np.ndarray) -> np.ndarray:
    """1 / depth where there is a depth, 0 elsewhere."""
    valid = depth > 0
    return np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)


def inverse_depth_bend(depth: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """|2 / depth - 1 / before - 1 / after| per pixel (inverse_depth's 0 where there is none): 0 where the three lie
    on a plane, whose inverse depth is affine in the pixel."""
    return np.abs(2.0 * inverse_depth(depth) - inverse_depth(before) - inverse_depth(after))


def supported(depth: np.ndarray, rel_tol: float, min_neighbours: int) -> np.ndarray:
    """Valid depths that are not flying pixels and have `min_neighbours` of their 8 neighbours within `rel_tol`
    (module doc)."""
    valid = depth > 0
    safe = np.where(valid, depth, 1.0)
    agreeing = np.zeros(depth.shape, np.int32)
    flying = np.zeros(depth.shape, bool)
    for dv, du in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a, b = neighbour(depth, dv, du), neighbour(depth, -dv, -du)
        agree_a, agree_b = np.abs(a - depth) <= rel_tol * safe, np.abs(b - depth) <= rel_tol * safe
        agreeing += (a > 0) & agree_a
        agreeing += (b > 0) & agree_b
        both = (a > 0) & (b > 0)
        off_plane = inverse_depth_bend(depth, a, b) > rel_tol * 2.0 / safe
        flying |= both & ~agree_a & ~agree_b & off_plane
    return valid & ~flying & (agreeing >= min_neighbours)


def silhouette_fringe(depth: np.ndarray, radius: int, jump: float) -> np.ndarray:
    """Depths on the near side of a depth jump of more than `jump` (relative), within `radius` pixels of its edge and
    no farther than the edge by `jump` / 2 (module doc)."""
    valid = depth > 0
    inverse = inverse_depth(depth)
    edge = np.zeros_like(valid)
    for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        beyond, behind = neighbour(depth, dv, du), neighbour(depth, -dv, -du)
        on_a_plane = (behind > 0) & (inverse_depth_bend(depth, beyond, behind)
                                     <= 0.5 * np.abs(inverse - inverse_depth(beyond)))
        edge |= valid & (beyond > (1 + jump) * depth) & ~on_a_plane
    nowhere = np.finfo(np.float32).max
    nearest_edge = cv2.erode(np.where(edge, depth, nowhere).astype(np.float32), disc(radius),
                             borderType=cv2.BORDER_CONSTANT, borderValue=float(nowhere)).astype(np.float64)
    return valid & (nearest_edge < nowhere) & (depth <= (1 + jump / 2) * nearest_edge)


def clean_depth_map(rgb: np.ndarray, depth: np.ndarray, window: int, max_std: float, smooth_std: float,
                    max_depth_share: float, margin: int | None, rel_tol: float, min_neighbours: int,
                    fringe_radius: int = 0, fringe_jump: float = 0.2) -> np.ndarray:
    """The depth map (float32, 0 = invalid) without its sky (unless `margin` is None), its flying pixels and
    speckles (unless `min_neighbours` is 0), then its silhouette fringes (unless `fringe_radius` is 0); `rgb` is the
    image it was made for."""
    keep = supported(depth, rel_tol, min_neighbours) if min_neighbours > 0 else depth > 0
    if margin is not None:
        keep &= ~sky_mask(rgb, depth, window, max_std, smooth_std, margin, max_depth_share)
    depth = np.where(keep, depth, 0.0).astype(np.float32)
    if fringe_radius > 0:
        depth[silhouette_fringe(depth, fringe_radius, fringe_jump)] = 0.0
    return depth
