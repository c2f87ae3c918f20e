"""Geometry of the sample scene (a ground plane with box buildings, in metres, ENU axes) and its ray caster."""

from __future__ import annotations

import dataclasses

import numpy as np

from aerialmd.sample_scene.textures import Texture, facade_texture, ground_texture, roof_texture

NO_HIT = -1
FACES_PER_BOX = 5  # +x, -x, +y, -y walls and the roof (the floor is never seen)


@dataclasses.dataclass
class Box:
    """An upright building: footprint centred at `center` (x, y), half extents, height, yaw about +z (radians)."""

    center: np.ndarray
    half_size: np.ndarray
    height: float
    yaw: float

    def local_from_world(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])

    def rays_near_bounding_sphere(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Indices of the rays from `origin` (one point, or one per ray) that pass within the box's bounding sphere (a
        cheap pre-test)."""
        centre = np.append(self.center, self.height / 2)
        radius2 = float(np.sum(self.half_size**2) + (self.height / 2) ** 2)
        to_centre = centre - origin
        along = np.sum(dirs * to_centre, axis=-1)
        distance2 = np.sum(to_centre * to_centre, axis=-1)
        miss2 = distance2 - along**2 / np.einsum("ij,ij->i", dirs, dirs)
        return np.flatnonzero((miss2 <= radius2) & ((along > 0) | (distance2 <= radius2)))

    def face_sizes(self) -> list[tuple[float, float]]:
        """(width, height) in metres of its faces in World's order: the +x, -x, +y, -y walls, then the roof."""
        hx, hy = 2 * self.half_size[0], 2 * self.half_size[1]
        return [(hy, self.height)] * 2 + [(hx, self.height)] * 2 + [(hx, hy)]

    def contains(self, point: np.ndarray, margin: float = 0.0) -> bool:
        local = self.local_from_world() @ (np.asarray(point) - np.append(self.center, 0.0))
        return bool(np.all(np.abs(local[:2]) <= self.half_size + margin) and -margin <= local[2] <= self.height + margin)


@dataclasses.dataclass
class Hits:
    """Ray-cast result per ray: distance along the (unnormalised) ray, surface index, surface coordinates, normal."""

    t: np.ndarray
    surface: np.ndarray
    uv: np.ndarray
    normal: np.ndarray


@dataclasses.dataclass
class World:
    """The sample town. Surface 0 is the ground; box b's faces are 1 + FACES_PER_BOX * b + face. Box 0 is the landmark."""

    boxes: list[Box]
    ground_extent_m: float
    textures: list[Texture]

    def cast(self, origin: np.ndarray, dirs: np.ndarray) -> Hits:
        """Nearest intersection of rays origin + t * dir (t > 0) with the ground and the boxes; `origin` is one point
        (3,) for all rays or one per ray (N, 3)."""
        n = len(dirs)
        hits = Hits(np.full(n, np.inf), np.full(n, NO_HIT), np.zeros((n, 2)), np.zeros((n, 3)))
        origin = np.asarray(origin, dtype=np.float64)
        self._cast_ground(origin, dirs, hits)
        for index, box in enumerate(self.boxes):
            candidates = box.rays_near_bounding_sphere(origin, dirs)
            if len(candidates):
                self._cast_box(index, box, _rows(origin, candidates), dirs[candidates], candidates, hits)
        return hits

    def in_shadow(self, points: np.ndarray, normals: np.ndarray, sun_direction: np.ndarray) -> np.ndarray:
        """Whether a building (or anything else standing in the world) blocks the sun from each surface point."""
        towards_sun = np.broadcast_to(sun_direction, points.shape)
        hits = self.cast(points + 0.02 * normals, np.ascontiguousarray(towards_sun))
        return hits.surface != NO_HIT

    def _cast_ground(self, origin: np.ndarray, dirs: np.ndarray, hits: Hits) -> None:
        down = np.flatnonzero(dirs[:, 2] < 0)
        start = _rows(origin, down)
        t = -start[..., 2] / dirs[down, 2]
        keep = t > 0
        down, t, start = down[keep], t[keep], start[keep] if start.ndim == 2 else start
        hits.t[down] = t
        hits.surface[down] = 0
        hits.uv[down] = start[..., :2] + t[:, None] * dirs[down, :2] + self.ground_extent_m / 2
        hits.normal[down] = (0.0, 0.0, 1.0)

    def _cast_box(self, index: int, box: Box, origin: np.ndarray, dirs: np.ndarray, rays: np.ndarray, hits: Hits) -> None:
        """Slab test of the rays `rays` (indices into hits, origins `origin`, directions `dirs`) against one box."""
        rot = box.local_from_world()
        o = (origin - np.append(box.center, 0.0)) @ rot.T
        d = dirs @ rot.T
        d = np.where(d == 0, 1e-12, d)
        lo = np.array([-box.half_size[0], -box.half_size[1], 0.0])
        hi = np.array([box.half_size[0], box.half_size[1], box.height])
        t_lo, t_hi = (lo - o) / d, (hi - o) / d
        t_enter_axis = np.minimum(t_lo, t_hi)
        t_near = t_enter_axis.max(axis=1)
        t_far = np.maximum(t_lo, t_hi).min(axis=1)
        sel = np.flatnonzero((t_near <= t_far) & (t_near > 1e-6) & (t_near < hits.t[rays]))
        if not len(sel):
            return
        axis = t_enter_axis[sel].argmax(axis=1)
        entered_low = t_lo[sel, axis] < t_hi[sel, axis]
        t = t_near[sel]
        p = _rows(o, sel) + t[:, None] * d[sel]
        face = np.where(axis == 2, 4, 2 * axis + entered_low.astype(int))
        wall_x, wall_y = (axis == 0)[:, None], (axis == 1)[:, None]
        uv = np.where(wall_x, p[:, [1, 2]], np.where(wall_y, p[:, [0, 2]], p[:, [0, 1]]))
        uv = uv + np.where(wall_x, [box.half_size[1], 0], np.where(wall_y, [box.half_size[0], 0], box.half_size))
        normal_local = np.zeros((len(t), 3))
        normal_local[np.arange(len(t)), axis] = np.where(entered_low, -1.0, 1.0)
        target = rays[sel]
        hits.t[target] = t
        hits.surface[target] = 1 + FACES_PER_BOX * index + face
        hits.uv[target] = uv
        hits.normal[target] = normal_local @ rot

    def obstructed(self, start: np.ndarray, end: np.ndarray) -> bool:
        """Whether any building blocks the segment from start to end (the end point itself excluded)."""
        hits = self.cast(start, (end - start)[None])
        return bool(hits.t[0] < 1.0 - 1e-3)


def _rows(origin: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """The origins of the rays `rays`: the shared one (3,), or their rows of per-ray origins (N, 3)."""
    return origin if origin.ndim == 1 else origin[rays]


@dataclasses.dataclass(frozen=True)
class TownShape:
    """Sizes of the sample town's buildings (metres): lots on a square grid `lot_spacing_m` apart, footprints of half
    extents in `half_size_m`, the landmark (box 0, the most central) `landmark_height_m` tall, the others
    `height_m`; the ground is a square of side `ground_extent_m`."""

    lot_spacing_m: float = 55.0
    half_size_m: tuple[float, float] = (8.0, 17.0)
    landmark_height_m: tuple[float, float] = (35.0, 48.0)
    height_m: tuple[float, float] = (14.0, 30.0)
    ground_extent_m: float = 900.0

    @property
    def ground_texel_m(self) -> float:
        """The ground texture's texel: 0.3 m, coarser for grounds over 900 m (its texture stays 3000 texels wide)."""
        return max(0.3, self.ground_extent_m / 3000.0)


def random_town(rng: np.random.Generator, num_buildings: int, shape: TownShape = TownShape(),
                facade_texel_m: float = 0.06, ground_detail: Texture | None = None,
                wall_detail: Texture | None = None) -> World:
    """Buildings on distinct lots of a square grid around the origin, each with its own textures; the ground's
    texture is modulated by `ground_detail`, every wall's by `wall_detail`, when given."""
    grid = int(np.ceil(np.sqrt(num_buildings)))
    lots = [(i, j) for i in range(grid) for j in range(grid)]
    chosen = sorted(lots[c] for c in rng.permutation(len(lots))[:num_buildings])
    centers = [(np.array(lot, float) - (grid - 1) / 2) * shape.lot_spacing_m + rng.uniform(-6, 6, 2) for lot in chosen]
    order = np.argsort([np.linalg.norm(c) for c in centers], kind="stable")  # the landmark, box 0, is the most central
    ground = dataclasses.replace(ground_texture(rng, shape.ground_extent_m, shape.ground_texel_m), detail=ground_detail)
    boxes, textures = [], [ground]
    for k in order:
        half = rng.uniform(*shape.half_size_m, 2)
        height = float(rng.uniform(*shape.landmark_height_m) if not boxes else rng.uniform(*shape.height_m))
        boxes.append(Box(centers[k], half, height, float(rng.uniform(-0.35, 0.35))))
        textures += box_textures(rng, boxes[-1], facade_texel_m, wall_detail)
    return World(boxes, shape.ground_extent_m, textures)


def box_textures(rng: np.random.Generator, box: Box, facade_texel_m: float,
                 wall_detail: Texture | None = None) -> list[Texture]:
    """A building's own textures, in World's face order: its four walls (modulated by `wall_detail` when given), then
    its roof."""
    *walls, roof = box.face_sizes()
    return [dataclasses.replace(facade_texture(rng, w, h, facade_texel_m), detail=wall_detail) for w, h in walls] + \
        [roof_texture(rng, *roof, 0.1)]
