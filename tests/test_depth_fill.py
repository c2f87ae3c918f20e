"""Closing holes of depth maps with local planes, against depth maps of known planes."""

import numpy as np

from aerialmd.mvs.depth_fill import fill_enclosed_holes, window_pixels

SIZE = 160
K_INV = np.linalg.inv(np.array([[150.0, 0, 79.5], [0, 150.0, 79.5], [0, 0, 1]]))


def plane_depth(normal: tuple[float, float, float], offset: float) -> np.ndarray:
    """z-depth of the plane n . X = offset (camera frame) at every pixel of a SIZE x SIZE image."""
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ K_INV.T
    return (offset / (rays @ np.asarray(normal))).astype(np.float32)


def fill(depth: np.ndarray) -> np.ndarray:
    """The stage's settings at 320 px (a 15 px window)."""
    return fill_enclosed_holes(depth, rounds=10, window=window_pixels(320, 31 / 640), max_residual=0.02,
                               min_quadrant_support=0.05)


def test_holes_inside_a_slanted_plane_close_to_its_depth_and_open_sides_stay_empty():
    truth = plane_depth((0.3, -0.2, 1.0), 20.0)  # a wall seen at an angle, 14-27 m away
    rng = np.random.default_rng(0)
    depth = truth.copy()
    depth[rng.random(truth.shape) < 0.2] = 0  # scattered pixels the filter removed
    depth[60:66, 50:56] = 0  # a flat-coloured patch without photometric evidence
    depth[:, 120:] = 0  # sky on the right: not enclosed, must stay empty
    out = fill(depth)
    inside = np.zeros(truth.shape, bool)
    inside[8:-8, 8:112] = True
    assert (out[inside] > 0).all()
    assert np.abs(out[inside] - truth[inside]).max() <= 1e-4 * truth.max()
    assert (out[:, 120:] == 0).all()
    confirmed = depth > 0
    assert np.array_equal(out[confirmed], depth[confirmed])


def test_a_hole_across_a_depth_edge_is_not_bridged_by_a_wrong_plane():
    truth = np.where(np.arange(SIZE)[None, :] < SIZE // 2, 10.0, 20.0).repeat(SIZE, 0).astype(np.float32)
    depth = truth.copy()
    depth[70:90, SIZE // 2 - 3:SIZE // 2 + 3] = 0  # straddles the edge between a near and a far surface
    depth[70:90, 120:126] = 0  # the same hole within the far surface
    out = fill(depth)
    assert (out[70:90, 120:126] > 0).all()
    filled = (depth == 0) & (out > 0)
    assert (np.abs(out[filled] - truth[filled]) <= 0.02 * truth[filled]).all()  # never a plane mixing both


def test_window_sums_match_explicit_sums_at_the_borders_too():
    """box_sum and quadrant_support (summed-area tables) against sums over explicitly sliced windows."""
    import torch

    from aerialmd.mvs.depth_fill import box_sum, quadrant_support

    rng = np.random.default_rng(1)
    depth = np.where(rng.random((23, 31)) < 0.6, rng.random((23, 31)) + 1, 0).astype(np.float32)
    window, half = 7, 3
    padded = np.pad((depth > 0).astype(np.float64), half)
    boxes = box_sum(torch.from_numpy((depth > 0).astype(np.float64)), window).numpy()
    support = quadrant_support(torch.from_numpy(depth), window).numpy()
    for y, x in [(0, 0), (0, 30), (22, 0), (11, 15), (2, 28), (22, 30)]:
        block = padded[y:y + window, x:x + window]
        assert boxes[y, x] == block.sum()
        quadrants = [block[:half, :half], block[:half, half + 1:], block[half + 1:, :half], block[half + 1:, half + 1:]]
        assert support[y, x] == min(q.sum() for q in quadrants) / (half * half)
