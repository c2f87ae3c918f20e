"""Ray-traced pinhole renders of the sample world: RGB (supersampled, shaded, hazy) and exact z-depth."""

from __future__ import annotations

import dataclasses

import numpy as np

from aerialmd.sample_scene.world import NO_HIT, World

SUN_DIRECTION = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
AMBIENT, DIFFUSE = 0.42, 0.68


@dataclasses.dataclass(frozen=True)
class Lighting:
    """Light on the scene: Lambertian sun from `sun_direction` (a unit vector towards the sun) over an ambient term,
    with the buildings' cast shadows (only the ambient light reaches a shadowed point) when `shadows`."""

    sun_direction: tuple[float, float, float] = tuple(SUN_DIRECTION)
    ambient: float = AMBIENT
    diffuse: float = DIFFUSE
    shadows: bool = False


@dataclasses.dataclass(frozen=True)
class Look:
    """How a view sees the world: its `lighting`, and the finest texture detail it resolves (`min_texel_m`, metres:
    Google Earth's photogrammetry textures hold about 10-30 cm per texel whatever the camera's distance; 0: all)."""

    lighting: Lighting = Lighting()
    min_texel_m: float = 0.0
HAZE_DISTANCE_M = 2500.0
MAX_DEPTH_M = 3000.0  # hits farther than this count as sky (depth 0), like the far cut of the real pipeline


def pixel_rays(K: np.ndarray, cam2world: np.ndarray, width: int, height: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """World-frame ray directions with unit camera-z component (so the ray parameter is z-depth) and the origin.

    Rays go through sub-pixel sample positions in OpenCV's convention (pixel centres at integers); with
    supersample=1 exactly through the pixel centres. Directions are ordered row-major over the supersampled grid.
    """
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    u = (np.arange(width)[:, None] + offsets[None]).reshape(-1)
    v = (np.arange(height)[:, None] + offsets[None]).reshape(-1)
    uu, vv = np.meshgrid(u, v)
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], axis=1)
    dirs_cam = pix @ np.linalg.inv(K).T
    return dirs_cam @ cam2world[:3, :3].T, cam2world[:3, 3]


def sky_colour(dirs: np.ndarray) -> np.ndarray:
    """A vertical gradient from pale horizon to blue zenith."""
    elevation = np.clip(dirs[:, 2] / np.linalg.norm(dirs, axis=1), 0.0, 1.0)[:, None]
    horizon, zenith = np.array([0.82, 0.86, 0.9]), np.array([0.45, 0.62, 0.9])
    return horizon * (1 - elevation) + zenith * elevation


def sunlit(world: World, origin: np.ndarray, dirs: np.ndarray, hits, lighting: Lighting) -> np.ndarray:
    """Share of the sun's light reaching every hit: 1, or 0 where a building casts its shadow."""
    lit = np.ones(len(dirs))
    if lighting.shadows:
        seen = np.flatnonzero(hits.surface != NO_HIT)
        points = origin + hits.t[seen, None] * dirs[seen]
        lit[seen] = ~world.in_shadow(points, hits.normal[seen], np.asarray(lighting.sun_direction))
    return lit


def shade(world: World, origin: np.ndarray, dirs: np.ndarray, hits, focal: float, supersample: int,
          look: Look = Look()) -> np.ndarray:
    """Texture colour of every hit, with Lambertian sun light (and cast shadows), distance haze, and sky where nothing
    was hit."""
    colour = sky_colour(dirs)
    distance = hits.t * np.linalg.norm(dirs, axis=1)
    cos_incidence = np.abs(np.einsum("ij,ij->i", hits.normal, dirs)) / np.linalg.norm(dirs, axis=1)
    footprint = distance / (focal * supersample) / np.sqrt(np.maximum(cos_incidence, 0.05))
    footprint = np.maximum(footprint, look.min_texel_m)
    lighting = look.lighting
    sun = sunlit(world, origin, dirs, hits, lighting)
    for surface in np.unique(hits.surface[hits.surface != NO_HIT]):
        sel = hits.surface == surface
        texture = world.textures[surface]
        albedo = texture.sample(hits.uv[sel], footprint[sel])
        direct = np.maximum(hits.normal[sel] @ np.asarray(lighting.sun_direction), 0.0) * sun[sel]
        light = lighting.ambient + lighting.diffuse * direct
        fog = np.exp(-distance[sel] / HAZE_DISTANCE_M)[:, None]
        colour[sel] = albedo * light[:, None] * fog + colour[sel] * (1 - fog)
    return colour


def render(world: World, K: np.ndarray, cam2world: np.ndarray, width: int, height: int,
           supersample: int = 2, look: Look = Look()) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and z-depth float32 (H, W) in metres (0 = sky) of a pinhole camera (K in OpenCV convention)
    seen with `look` (its light and texture detail; the depth does not depend on it)."""
    dirs, origin = pixel_rays(K, cam2world, width, height, supersample)
    hits = world.cast(origin, dirs)
    too_far = hits.t > MAX_DEPTH_M
    hits.surface[too_far] = NO_HIT
    colour = shade(world, origin, dirs, hits, float(K[0, 0]), supersample, look)
    s = supersample
    rgb = colour.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    depth = _centre_depth(world, K, cam2world, width, height) if s % 2 == 0 else \
        np.where(too_far | (hits.surface == NO_HIT), 0.0, hits.t).reshape(height, s, width, s)[:, s // 2, :, s // 2]
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), depth.astype(np.float32)


def _centre_depth(world: World, K: np.ndarray, cam2world: np.ndarray, width: int, height: int) -> np.ndarray:
    """Exact z-depth through pixel centres (0 = sky or beyond MAX_DEPTH_M)."""
    dirs, origin = pixel_rays(K, cam2world, width, height, 1)
    hits = world.cast(origin, dirs)
    depth = np.where((hits.surface == NO_HIT) | (hits.t > MAX_DEPTH_M), 0.0, hits.t)
    return depth.reshape(height, width)
