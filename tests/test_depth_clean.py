"""Depth cleaning (aerialmd/mvs/depth_clean.py) on drawn scenes whose sky, walls and depth edges are known."""

from __future__ import annotations

import numpy as np

from aerialmd.mvs.depth_clean import clean_depth_map, silhouette_fringe, sky_mask, supported
from aerialmd.stages.dense import DenseConf

HEIGHT, WIDTH, SKYLINE = 120, 160, 50  # the building's roof edge is row SKYLINE
DEFAULTS = DenseConf()
SKY_SETTINGS = dict(window=DEFAULTS.sky_window, max_std=DEFAULTS.sky_max_std, smooth_std=DEFAULTS.sky_smooth_std,
                    max_depth_share=DEFAULTS.sky_max_depth_share)  # the stage's


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
    cleaned = clean_depth_map(rgb, depth, margin=4, rel_tol=0.02, min_neighbours=1, **SKY_SETTINGS)
    assert not cleaned[:SKYLINE].any()  # the band above the roof is gone
    assert cleaned[SKYLINE + 6:].all()  # the facade below the margin is whole
    without_sky = clean_depth_map(rgb, depth, margin=None, rel_tol=0.02, min_neighbours=1, **SKY_SETTINGS)
    assert without_sky[SKYLINE - 3:SKYLINE].all()  # with the sky step off, the band stays


def test_a_plain_wall_up_to_the_top_keeps_its_depth():
    """A low-contrast region touching the top that has depth is a wall, not the sky."""
    rgb = np.full((HEIGHT, WIDTH, 3), 150, np.uint8)
    depth = np.full((HEIGHT, WIDTH), 12.0, np.float32)
    depth[:10, :10] = 0.0
    assert not sky_mask(rgb, depth, margin=4, **SKY_SETTINGS).any()
    rgb[:, : WIDTH // 2] = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH // 2, 1), dtype=np.uint8)
    rgb[:, WIDTH // 2:] = 200
    depth[:, WIDTH // 2:] = 0.0  # the plain bright half has no depth: the sky
    mask = sky_mask(rgb, depth, margin=0, **SKY_SETTINGS)
    assert mask[:, WIDTH // 2 + 3:].all() and not mask[:, : WIDTH // 2 - 3].any()


def test_the_sky_under_a_black_border_row_goes():
    """An undistorted photo can start with a black row: the sky below it is still found."""
    rgb, depth = street_view(np.random.default_rng(2))
    rgb[0] = 0
    assert sky_mask(rgb, depth, margin=4, **SKY_SETTINGS)[1:SKYLINE].all()


def test_rough_or_dark_walls_up_to_the_top_with_few_depths_keep_them():
    """Walls in a photo's upper half with depth on under a fifth of them (matching found little there), next to a
    textured facade: neither a rough light one (grey-level noise, contrast under max_std but over smooth_std) nor a
    smooth dark one is the sky."""
    rng = np.random.default_rng(3)
    rgb, depth = street_view(rng, band=0)
    rgb[:SKYLINE, : WIDTH // 2] = (170 + rng.normal(0, 3.5, (SKYLINE, WIDTH // 2, 1))).clip(0, 255).astype(np.uint8)
    rgb[:SKYLINE, WIDTH // 2:] = 30
    depth[:SKYLINE:6] = 15.0  # every sixth row of both walls
    kept = sky_mask(rgb, depth, margin=4, **SKY_SETTINGS)
    assert not kept[:SKYLINE].any()


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


def test_a_blue_sky_beside_a_green_wall_of_the_same_grey_is_told_apart():
    """Blue sky left of a plain green wall whose grey levels differ by less than the contrast threshold (the wall's
    depth spread 3 pixels over the sky): told apart by colour, the sky loses the band and the wall keeps its depth."""
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:, :80] = (90, 140, 255)  # grey 138
    rgb[:, 80:] = (140, 140, 30)  # grey 128
    depth = np.zeros((HEIGHT, WIDTH), np.float32)
    depth[:, 77:] = 20.0
    cleaned = clean_depth_map(rgb, depth, margin=5, rel_tol=0.02, min_neighbours=1, **SKY_SETTINGS)
    assert not cleaned[:, :80].any() and cleaned[:, 86:].all()


def test_a_sky_with_stray_depths_on_a_third_of_it_is_still_the_sky():
    """Matching on a smooth sky gradient can leave blobs of depth inside it (a sweep scene kept 0.5 % of a ground
    photo's depths there): a smooth bright region at the top is the sky unless depths cover most of it."""
    rgb, depth = street_view(np.random.default_rng(4))
    blobs = np.zeros((SKYLINE, WIDTH), bool)
    blobs[5:20, 10:70] = blobs[25:40, 90:150] = True  # about a third of the sky
    depth[:SKYLINE][blobs] = 80.0
    assert sky_mask(rgb, depth, margin=4, **SKY_SETTINGS)[:SKYLINE].all()


def fringe_radius(long_side: int) -> int:
    """The stage's silhouette trim in pixels at this long side (as aerialmd.stages.dense.cleaned rounds it)."""
    return round(DEFAULTS.silhouette_trim * long_side)


def test_a_foreground_spread_past_its_silhouette_loses_the_fringe():
    """A building 20 m away before far ground 60 m away, in a 640 px wide view: the matching window spread its depth
    2 px past both sides, and the neighbouring views alike (the consistency filter kept it). The stage's cleaning
    takes the fringe off; the building's inside and the ground keep their depths (the ground is textured: no sky)."""
    width, left, right, spread = 640, 300, 340, 2
    rgb = np.random.default_rng(5).integers(40, 200, (HEIGHT, width, 3), dtype=np.uint8)
    truth = np.full((HEIGHT, width), 60.0, np.float32)
    truth[:, left:right] = 20.0
    depth = truth.copy()
    depth[:, left - spread:right + spread] = 20.0
    radius = fringe_radius(width)
    assert radius >= spread
    cleaned = clean_depth_map(rgb, depth, margin=None, rel_tol=DEFAULTS.flying_tol,
                              min_neighbours=DEFAULTS.flying_min_neighbours, fringe_radius=radius,
                              fringe_jump=DEFAULTS.silhouette_jump, **SKY_SETTINGS)
    wrong = (cleaned > 0) & (np.abs(cleaned - truth) > 0.1 * truth)
    assert not wrong.any()  # before: the 2 px on either side, off by 67 %
    assert (cleaned[:, left + radius:right - radius] == 20.0).all()  # the building loses at most `radius` px a side
    assert (cleaned[:, :left - spread - 1] == 60.0).all() and (cleaned[:, right + spread + 1:] == 60.0).all()
    untrimmed = clean_depth_map(rgb, depth, margin=None, rel_tol=DEFAULTS.flying_tol,
                                min_neighbours=DEFAULTS.flying_min_neighbours, **SKY_SETTINGS)
    assert (untrimmed[:, left - spread:right + spread] == 20.0).all()  # fringe_radius 0: no such step


def test_slopes_and_small_steps_keep_their_depths():
    """Only jumps of more than silhouette_jump are silhouettes: the street ahead of a photo up to the horizon (its
    depth grows by up to 50 % a row there: a plane, inverse depth affine in the row) and a facade 5 % behind its
    neighbour keep every depth."""
    rows = np.arange(HEIGHT, dtype=np.float32)[:, None]
    street = np.broadcast_to(1.0 / (0.001 + 0.0005 * rows), (HEIGHT, WIDTH)).astype(np.float32)
    assert street[0, 0] / street[1, 0] > 1 + DEFAULTS.silhouette_jump  # steeper than a jump near the horizon
    assert not silhouette_fringe(street, 3, DEFAULTS.silhouette_jump).any()
    facades = np.full((HEIGHT, WIDTH), 20.0, np.float32)
    facades[:, WIDTH // 2:] = 21.0
    assert not silhouette_fringe(facades, 3, DEFAULTS.silhouette_jump).any()
    facades[:, WIDTH // 2:] = 30.0
    fringe = silhouette_fringe(facades, 3, DEFAULTS.silhouette_jump)
    assert fringe[:, WIDTH // 2 - 4:WIDTH // 2].all() and fringe.sum() == 4 * HEIGHT  # the edge and 3 px, near side
