"""Depth cleaning (aerialmd/mvs/depth_clean.py) on drawn scenes whose sky, walls and depth edges are known."""

from __future__ import annotations

import numpy as np

from aerialmd.mvs.depth_clean import clean_depth_map, sky_mask, supported

HEIGHT, WIDTH, SKYLINE = 120, 160, 50  # the building's roof edge is row SKYLINE


def street_view(rng: np.random.Generator, band: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A smooth sky gradient over a textured facade (rows from SKYLINE on, 20 m away); the facade's depth also covers
    the `band` sky rows above the roof, as a matching window spreads it."""
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:SKYLINE] = np.linspace(120, 200, SKYLINE)[:, None, None].astype(np.uint8)
    rgb[SKYLINE:] = rng.integers(40, 200, (HEIGHT - SKYLINE, WIDTH, 1), dtype=np.uint8)
    depth = np.zeros((HEIGHT, WIDTH), np.float32)
    depth[SKYLINE - band:] = 20.0
    return rgb, depth


def test_the_band_over_the_sky_goes_and_the_facade_stays():
    rgb, depth = street_view(np.random.default_rng(0))
    settings = dict(window=5, max_std=8.0, max_depth_share=0.2, rel_tol=0.02, min_neighbours=1)
    cleaned = clean_depth_map(rgb, depth, margin=4, **settings)
    assert not cleaned[:SKYLINE].any()  # the band above the roof is gone
    assert cleaned[SKYLINE + 6:].all()  # the facade below the margin is whole
    without_sky = clean_depth_map(rgb, depth, margin=None, **settings)
    assert without_sky[SKYLINE - 3:SKYLINE].all()  # with the sky step off, the band stays


def test_a_plain_wall_up_to_the_top_keeps_its_depth():
    """A low-contrast region touching the top that has depth is a wall, not the sky."""
    rgb = np.full((HEIGHT, WIDTH, 3), 150, np.uint8)
    depth = np.full((HEIGHT, WIDTH), 12.0, np.float32)
    depth[:10, :10] = 0.0
    assert not sky_mask(rgb, depth, window=5, max_std=8.0, margin=4, max_depth_share=0.2).any()
    rgb[:, : WIDTH // 2] = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH // 2, 1), dtype=np.uint8)
    depth[:, WIDTH // 2:] = 0.0  # the plain half has no depth: the sky
    mask = sky_mask(rgb, depth, window=5, max_std=8.0, margin=0, max_depth_share=0.2)
    assert mask[:, WIDTH // 2 + 3:].all() and not mask[:, : WIDTH // 2 - 3].any()


def test_flying_pixels_between_two_surfaces_go_and_a_slanted_plane_stays():
    depth = np.full((HEIGHT, WIDTH), 10.0, np.float32)
    depth[:, WIDTH // 2:] = 30.0
    depth[:, WIDTH // 2] = 20.0  # the interpolated winner of windows that straddle the edge
    kept = supported(depth, rel_tol=0.02, min_neighbours=1)
    assert not kept[:, WIDTH // 2].any() and kept[:, : WIDTH // 2].all() and kept[:, WIDTH // 2 + 1:].all()
    rows = np.arange(HEIGHT, dtype=np.float32)[:, None]
    slanted = np.broadcast_to(1.0 / (0.02 + 0.0005 * rows), (HEIGHT, WIDTH)).astype(np.float32)  # street ahead
    kept = supported(slanted, rel_tol=0.02, min_neighbours=1)
    assert kept[:, 1:-1].all()  # its rows change by up to 2.5 %: only the row's two neighbours agree, on a plane
    speckle = np.zeros((HEIGHT, WIDTH), np.float32)
    speckle[60, 80] = 5.0
    assert not supported(speckle, rel_tol=0.02, min_neighbours=1).any()
