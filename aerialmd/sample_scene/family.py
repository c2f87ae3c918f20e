"""A family of sample scenes drawn from a seed: towns, photo layouts and aerial orbits of many shapes, so that the
pipeline is measured on scenes it was not tuned on (bench/bench_sweep.py runs a fixed list of them)."""

from __future__ import annotations

import dataclasses

import numpy as np

from aerialmd.sample_scene.appearance import AppearanceGap
from aerialmd.sample_scene.generate import SampleConfig
from aerialmd.sample_scene.viewpoints import Orbit
from aerialmd.sample_scene.world import TownShape

LAYOUTS = ("scattered", "spots")  # each photo at a place of its own, or photos from a few popular spots
TARGET_HEIGHT_M = 12.0  # the orbits look at this height above the scene centre (generate.aerial_views)


@dataclasses.dataclass(frozen=True)
class FamilyRanges:
    """What a size of the family draws from: photos, aerial frames (all orbits together), image sizes."""

    photos: tuple[int, int]
    frames: tuple[int, int]
    aerial_size: tuple[int, int]
    ground_long_side: int


SIZES = {
    "small": FamilyRanges(photos=(16, 24), frames=(24, 36), aerial_size=(480, 270), ground_long_side=480),
    "large": FamilyRanges(photos=(40, 80), frames=(48, 72), aerial_size=(640, 360), ground_long_side=640),
    "huge": FamilyRanges(photos=(100, 200), frames=(72, 120), aerial_size=(640, 360), ground_long_side=640),
}


def family_config(seed: int, size: str = "small", layout: str | None = None, gap: bool = True) -> SampleConfig:
    """Sample scene `seed` of the family: 3-12 buildings of varied footprint, height and spacing; photos 5-80 m from
    the facades they frame, scattered or from 2-5 popular spots (`layout`, drawn from the seed when None); two or three
    aerial orbits at altitudes of 20-300 m; the appearance gap on or off."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    ranges = SIZES[size]
    rng = np.random.default_rng([seed, 1000])
    num_buildings = int(rng.integers(3, 13))
    town = TownShape(lot_spacing_m=float(rng.uniform(40.0, 75.0)),
                     half_size_m=(float(rng.uniform(5.0, 9.0)), float(rng.uniform(11.0, 20.0))),
                     landmark_height_m=(float(rng.uniform(25.0, 40.0)), float(rng.uniform(45.0, 70.0))),
                     height_m=(float(rng.uniform(8.0, 14.0)), float(rng.uniform(18.0, 35.0))))
    town_radius = town.lot_spacing_m * (np.ceil(np.sqrt(num_buildings)) - 1) / np.sqrt(2) + town.half_size_m[1]
    orbits = random_orbits(rng, int(rng.integers(*ranges.frames, endpoint=True)), town_radius)
    layout = layout or LAYOUTS[int(rng.integers(len(LAYOUTS)))]
    spots = 0 if layout == "scattered" else int(rng.integers(2, 6))
    distance = (float(rng.uniform(5.0, 30.0)), float(rng.uniform(45.0, 80.0)))
    town = dataclasses.replace(town, ground_extent_m=ground_extent(orbits))
    return SampleConfig(
        scene_id=f"{size}{seed:04d}", seed=seed, num_buildings=num_buildings, town=town, orbits=orbits,
        aerial_size=ranges.aerial_size, num_ground=int(rng.integers(*ranges.photos, endpoint=True)),
        ground_spots=spots, spot_spread_m=float(rng.uniform(1.5, 3.0)), photo_distance_m=distance,
        ground_long_side=ranges.ground_long_side, gap=AppearanceGap() if gap else AppearanceGap.off())


def random_orbits(rng: np.random.Generator, frames: int, town_radius: float) -> tuple[Orbit, ...]:
    """Two or three full circles, each looking down at the centre at 28-60 deg and at least 30 m outside the town,
    sharing `frames` frames: the lowest at 20-60 m, the others at 20-300 m (log-uniform). Real projects fly low to
    bridge to street level: the .esp files in ../shared (berlin1_theater, memorial_church_1, the Mountain View one)
    keep their cameras 22-32 m above their target."""
    count = int(rng.integers(2, 4))
    lowest = np.exp(rng.uniform(np.log(20.0), np.log(60.0)))
    altitudes = np.sort(np.append(lowest, np.exp(rng.uniform(np.log(20.0), np.log(300.0), count - 1))))
    shares = np.full(count, frames // count)
    shares[: frames - shares.sum()] += 1
    orbits = []
    for altitude, share in zip(altitudes, shares):
        elevation = np.radians(rng.uniform(28.0, 60.0))
        radius = max((altitude - TARGET_HEIGHT_M) / np.tan(elevation), town_radius + 30.0)
        orbits.append(Orbit(float(round(altitude, 1)), float(round(radius, 1)), int(share)))
    return tuple(orbits)


def ground_extent(orbits: tuple[Orbit, ...], vertical_fov_deg: float = 40.0, horizon_deg: float = 4.0) -> float:
    """Side of a ground square that fills every orbit's views down to `horizon_deg` below the horizon (900-2400 m)."""
    far = 0.0
    for orbit in orbits:
        depression = np.degrees(np.arctan2(orbit.altitude_m - TARGET_HEIGHT_M, orbit.radius_m))
        top = max(depression - vertical_fov_deg / 2, horizon_deg)
        far = max(far, orbit.radius_m + orbit.altitude_m / np.tan(np.radians(top)))
    return float(np.clip(2.0 * far, 900.0, 2400.0))
