"""Camera placement for the sample scene: Google-Earth-like orbits and street-level photos."""

from __future__ import annotations

import dataclasses

import numpy as np

from aerialmd.geometry.geodesy import WORLD_UP
from aerialmd.sample_scene.world import World


def look_at(center: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """4x4 cam2world of an OpenCV camera (x right, y down, z forward) at `center` looking at `target`."""
    forward = target - center
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, WORLD_UP)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    roll = np.radians(roll_deg)
    right, down = np.cos(roll) * right + np.sin(roll) * down, -np.sin(roll) * right + np.cos(roll) * down
    cam2world = np.eye(4)
    cam2world[:3, :3] = np.stack([right, down, forward], axis=1)
    cam2world[:3, 3] = center
    return cam2world


@dataclasses.dataclass(frozen=True)
class Orbit:
    """`frames` views at `altitude_m` on a circle of `radius_m` around the scene centre, all looking at it: the full
    circle, or an arc of `arc_deg` centred on the azimuth `center_deg` (degrees from east; random when None)."""

    altitude_m: float
    radius_m: float
    frames: int
    arc_deg: float = 360.0
    center_deg: float | None = None

    def azimuths(self, rng: np.random.Generator) -> np.ndarray:
        """Azimuth (radians) of every frame."""
        center = rng.uniform(0, 2 * np.pi) if self.center_deg is None else np.radians(self.center_deg)
        arc = np.radians(self.arc_deg)
        if self.arc_deg >= 360.0:
            return center + arc * np.arange(self.frames) / self.frames
        return center - arc / 2 + arc * np.arange(self.frames) / max(self.frames - 1, 1)


def orbit_poses(rng: np.random.Generator, orbits: tuple[Orbit, ...], target_height_m: float) -> list[np.ndarray]:
    """cam2world of every frame of consecutive orbits."""
    poses = []
    for orbit in orbits:
        for angle in orbit.azimuths(rng):
            center = np.array([orbit.radius_m * np.cos(angle), orbit.radius_m * np.sin(angle), orbit.altitude_m])
            target = np.array([0.0, 0.0, target_height_m]) + rng.normal(0, 3.0, 3)
            poses.append(look_at(center, target))
    return poses


LANDMARK_SHARE = 0.75  # like MegaDepth, most photos show the landmark's two famous facades


@dataclasses.dataclass(frozen=True)
class StreetSpot:
    """Where a person stands (eye height) and the facade point they photograph."""

    center: np.ndarray
    target: np.ndarray


def street_spot(rng: np.random.Generator, world: World, distance_m: tuple[float, float] = (35.0, 110.0),
                max_tries: int = 200) -> StreetSpot:
    """A place to photograph a facade from: eye height, `distance_m` (range) from a facade point, unobstructed, not
    inside a building."""
    for _ in range(max_tries):
        on_landmark = rng.random() < LANDMARK_SHARE
        box = world.boxes[0 if on_landmark else rng.integers(len(world.boxes))]
        face = 2 * rng.integers(2) if on_landmark else rng.integers(4)
        axis, sign = face // 2, (1.0 if face % 2 == 0 else -1.0)
        local_normal = np.zeros(3)
        local_normal[axis] = sign
        local_point = np.array([rng.uniform(-0.7, 0.7) * box.half_size[0], rng.uniform(-0.7, 0.7) * box.half_size[1],
                                rng.uniform(0.15, 0.6) * box.height])
        local_point[axis] = sign * box.half_size[axis]
        rot = box.local_from_world().T
        target = rot @ local_point + np.append(box.center, 0.0)
        normal = rot @ local_normal
        heading = np.arctan2(normal[1], normal[0]) + rng.uniform(-0.8, 0.8)
        distance = rng.uniform(*distance_m)
        center = target + distance * np.array([np.cos(heading), np.sin(heading), 0.0])
        center[2] = rng.uniform(1.5, 2.0)
        if is_free_view(world, center, target):
            return StreetSpot(center, target)
    raise RuntimeError("could not place a street-level camera; the town is too crowded")


def is_free_view(world: World, center: np.ndarray, target: np.ndarray) -> bool:
    """A camera at `center` is outside every building (3 m clear) and sees `target` unobstructed."""
    return not any(b.contains(center, margin=3.0) for b in world.boxes) and not world.obstructed(center, target)


def handheld(rng: np.random.Generator, center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """cam2world of a photo taken by hand at `center` aiming at `target`: slightly rolled."""
    return look_at(center, target, roll_deg=rng.normal(0, 2.0))


def street_pose(rng: np.random.Generator, world: World, distance_m: tuple[float, float] = (35.0, 110.0)) -> np.ndarray:
    """cam2world of a person's photo from a spot of its own (street_spot)."""
    spot = street_spot(rng, world, distance_m)
    return handheld(rng, spot.center, spot.target)


def pose_near_spot(rng: np.random.Generator, world: World, spot: StreetSpot, spread_m: float,
                   max_tries: int = 200) -> np.ndarray:
    """cam2world of a photo taken at a popular spot: a few metres from where others stood, framing another part of
    the view."""
    for _ in range(max_tries):
        center = spot.center + np.append(rng.normal(0, spread_m, 2), 0.0)
        center[2] = rng.uniform(1.5, 2.0)
        target = spot.target + rng.normal(0, 2.0 * spread_m, 3)
        target[2] = max(target[2], 2.0)
        if is_free_view(world, center, target):
            return handheld(rng, center, target)
    return handheld(rng, spot.center, spot.target)
