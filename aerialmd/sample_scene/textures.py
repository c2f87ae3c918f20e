"""Procedural, non-repeating textures for the sample scene, stored as mip pyramids for alias-free sampling."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class Texture:
    """An RGB texture mapped onto a surface: texel (0, 0) covers surface coordinates [0, texel_size) x [0, texel_size).
    An optional `detail` texture (mean 1, finer texels, tiled) multiplies it: fine structure for close views without
    a huge unique texture; coarser views see its mip average, about 1."""

    levels: list[np.ndarray]  # float32 HxWx3, level k downsampled by 2**k
    texel_size: float  # metres per texel at level 0
    detail: "Texture | None" = None

    def sample(self, uv: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Bilinear RGB at surface coordinates uv (N, 2) in metres, from the mip level matching each sample's
        footprint on the surface (metres)."""
        out = np.empty((len(uv), 3), np.float32)
        level = np.round(np.log2(np.maximum(footprint / self.texel_size, 1.0))).astype(int)
        level = np.clip(level, 0, len(self.levels) - 1)
        for k in np.unique(level):
            sel = level == k
            out[sel] = bilinear(self.levels[k], uv[sel] / (self.texel_size * 2**k) - 0.5)
        return out if self.detail is None else out * self.detail.sample(uv, footprint)


def bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear lookup at pixel-centre coordinates xy (N, 2); coordinates outside the image are mirrored."""
    h, w = image.shape[:2]
    x = _mirror(xy[:, 0], w)
    y = _mirror(xy[:, 1], h)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 2)
    fx = (x - x0)[:, None].astype(np.float32)
    fy = (y - y0)[:, None].astype(np.float32)
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _mirror(coord: np.ndarray, size: int) -> np.ndarray:
    period = 2.0 * (size - 1)
    coord = np.mod(coord, period)
    return np.where(coord > size - 1, period - coord, coord)


def mip_pyramid(image: np.ndarray, min_size: int = 8) -> list[np.ndarray]:
    """Successive 2x box-filtered downsamplings of an image."""
    levels = [image]
    while min(levels[-1].shape[:2]) >= 2 * min_size:
        levels.append(cv2.resize(levels[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    return levels


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float, channels: int = 3) -> np.ndarray:
    """Smooth random noise in [0, 1] with features about `cell_px` pixels wide."""
    h, w = shape
    gh, gw = max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2)
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    big = cv2.resize(grid, (int(gw * cell_px), int(gh * cell_px)), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(big.shape[0], big.shape[1], channels)
    return np.clip(big[:h, :w], 0, 1)


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], largest_cell_px: float, octaves: int = 5) -> np.ndarray:
    """Sum of value-noise octaves, normalised to [0, 1] per channel."""
    total = np.zeros((*shape, 3), np.float32)
    cell, amplitude = largest_cell_px, 1.0
    for _ in range(octaves):
        if cell < 1.5:
            break
        total += amplitude * value_noise(rng, shape, cell)
        cell, amplitude = cell / 2.0, amplitude * 0.55
    total -= total.min(axis=(0, 1))
    return total / np.maximum(total.max(axis=(0, 1)), 1e-6)


def _random_colour(rng: np.random.Generator, base: np.ndarray, spread: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(base + rng.normal(0, spread, 3), 0.02, 0.98))


def draw_random_shapes(rng: np.random.Generator, image: np.ndarray, count: int, size_px: tuple[float, float],
                       base: np.ndarray, spread: float) -> None:
    """Scatter rectangles, ellipses and strokes of random size and colour (in place): corners and blobs for matching."""
    h, w = image.shape[:2]
    for _ in range(count):
        colour = _random_colour(rng, base, spread)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        sx, sy = (int(v) for v in np.exp(rng.uniform(np.log(size_px[0]), np.log(size_px[1]), 2)))
        kind = rng.integers(0, 4)
        if kind == 0:
            cv2.rectangle(image, (cx, cy), (cx + sx, cy + sy), colour, -1)
        elif kind == 1:
            cv2.ellipse(image, (cx, cy), (max(1, sx // 2), max(1, sy // 2)), float(rng.uniform(0, 180)), 0, 360, colour, -1)
        elif kind == 2:
            cv2.line(image, (cx, cy), (cx + sx - sy, cy + sy - sx // 2), colour, max(1, min(sx, sy) // 6))
        else:
            cv2.rectangle(image, (cx, cy), (cx + sx, cy + sy), colour, max(1, min(sx, sy) // 8))


def facade_texture(rng: np.random.Generator, width_m: float, height_m: float, texel: float) -> Texture:
    """A building wall: tinted plaster noise with irregular window-like openings and signs."""
    shape = (max(16, int(np.ceil(height_m / texel))), max(16, int(np.ceil(width_m / texel))))
    base = rng.uniform(0.3, 0.85, 3).astype(np.float32)
    image = (0.65 + 0.35 * fractal_noise(rng, shape, 4.0 / texel)) * base
    area = width_m * height_m
    draw_random_shapes(rng, image, int(area / 6), (0.6 / texel, 3.0 / texel), base * 0.5, 0.15)
    draw_random_shapes(rng, image, int(area / 40), (1.5 / texel, 6.0 / texel), base, 0.3)
    return Texture(mip_pyramid(np.clip(image, 0, 1).astype(np.float32)), texel)


def roof_texture(rng: np.random.Generator, width_m: float, depth_m: float, texel: float) -> Texture:
    """A flat roof: grey-brown noise with vents and solar-panel-like patches."""
    shape = (max(16, int(np.ceil(depth_m / texel))), max(16, int(np.ceil(width_m / texel))))
    base = rng.uniform(0.25, 0.6, 3).astype(np.float32)
    image = (0.6 + 0.4 * fractal_noise(rng, shape, 6.0 / texel)) * base
    draw_random_shapes(rng, image, int(width_m * depth_m / 12), (0.8 / texel, 5.0 / texel), base, 0.25)
    return Texture(mip_pyramid(np.clip(image, 0, 1).astype(np.float32)), texel)


@dataclasses.dataclass(frozen=True)
class Grain:
    """The character of a surface's fine structure: noise cells and scattered marks (sizes in metres) around a
    level, as a mean-1 gray modulation (Texture.detail)."""

    noise_cell_m: float
    mark_sizes_m: tuple[float, float]
    mark_spacing_m: float  # one mark per square of this side, on average
    low: float  # the noise spans [low, low + span] before the marks and the normalisation to mean 1
    span: float
    mark_spread: float  # standard deviation of the marks' brightness around 1
    tile_m: float  # side of the square tile it is made of, mirrored beyond


PAVEMENT = Grain(noise_cell_m=0.12, mark_sizes_m=(0.04, 0.3), mark_spacing_m=0.5, low=0.4, span=1.2, mark_spread=0.35,
                 tile_m=40.0)
# Plaster and masonry seen from a few metres: finer and fainter than the pavement's specks and pebbles.
WALL = Grain(noise_cell_m=0.05, mark_sizes_m=(0.02, 0.12), mark_spacing_m=0.25, low=0.6, span=0.8, mark_spread=0.2,
             tile_m=16.0)


def grain_detail(rng: np.random.Generator, grain: Grain, texel: float) -> Texture:
    """Mean-1 modulation with a surface's `grain` at `texel` metres: fine structure for views a few metres away, where
    the surface's own texels (0.3 m on the ground, 6 cm on walls) are magnified into blur or flat blocks; views whose
    pixels cover many grain texels see its average, about 1."""
    size = int(np.ceil(grain.tile_m / texel))
    image = grain.low + grain.span * fractal_noise(rng, (size, size), grain.noise_cell_m / texel, octaves=4)
    marks = int((grain.tile_m / grain.mark_spacing_m) ** 2)
    low, high = grain.mark_sizes_m
    draw_random_shapes(rng, image, marks, (low / texel, high / texel), np.ones(3, np.float32), grain.mark_spread)
    image = image.mean(axis=2, keepdims=True).repeat(3, axis=2)
    return Texture(mip_pyramid((image / image.mean()).astype(np.float32)), texel)


def ground_texture(rng: np.random.Generator, extent_m: float, texel: float) -> Texture:
    """Terrain around the town: fields, paths, trees and clutter, unique everywhere within `extent_m`."""
    size = int(np.ceil(extent_m / texel))
    base = np.array([0.35, 0.45, 0.3], np.float32)
    image = (0.5 + 0.5 * fractal_noise(rng, (size, size), 80.0 / texel, octaves=7)) * base
    draw_random_shapes(rng, image, int((extent_m / 30) ** 2), (8 / texel, 60 / texel), base, 0.18)
    draw_random_shapes(rng, image, int((extent_m / 6) ** 2), (0.8 / texel, 5 / texel), base, 0.25)
    detail = fractal_noise(rng, (size, size), 2.0 / texel, octaves=3)
    image *= 0.8 + 0.4 * detail
    return Texture(mip_pyramid(np.clip(image, 0, 1).astype(np.float32)), texel)
