"""Image pairs to match, chosen from camera poses by view overlap (no image content needed).

Works in any metric or non-metric world frame (ENU, ECEF-parallel, SfM): each camera gets a scene depth, a grid of
its pixels is lifted to that depth, and the share of those points that fall inside another camera's image (in front
of it) measures overlap; a pair's overlap is the smaller of its two directions. The same core serves the aerial model
(known poses, depth from the optical axes or the model's points) and later ground photos (predicted poses and depths).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pycolmap
from scipy.spatial import cKDTree

GRID_SIZE = (12, 8)  # sample points across the image (columns, rows)
PARALLEL_AXES_SIN2 = np.sin(np.radians(3.0)) ** 2  # axes closer to parallel than this fix no common point
MAX_PAIR_CANDIDATES = 64  # others weighed per view or photo in a larger scene (candidate_pairs, frames_facing)


@dataclasses.dataclass(frozen=True)
class PairView:
    """A camera to pair: its model, its world-to-camera pose, and the z-depth of the scene it looks at."""

    name: str
    camera: pycolmap.Camera
    cam_from_world: pycolmap.Rigid3d
    depth: float

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.cam_from_world.inverse().translation)

    @property
    def direction(self) -> np.ndarray:
        """Unit optical axis in the world frame."""
        return np.asarray(self.cam_from_world.rotation.matrix())[2]


def sample_points(view: PairView, grid: tuple[int, int] = GRID_SIZE) -> np.ndarray:
    """World points of a pixel grid (cell centres) lifted to the view's depth, (G, 3)."""
    cols, rows = grid
    u = (np.arange(cols) + 0.5) * view.camera.width / cols
    v = (np.arange(rows) + 0.5) * view.camera.height / rows
    pixels = np.stack(np.meshgrid(u, v), axis=-1).reshape(-1, 2)
    rays = np.column_stack([view.camera.cam_from_img(pixels), np.ones(len(pixels))])
    return view.cam_from_world.inverse() * (rays * view.depth)


def in_image(camera: pycolmap.Camera, cam_from_world: pycolmap.Rigid3d, points: np.ndarray) -> np.ndarray:
    """Mask of the world points (N, 3) in front of the camera that project inside its image (occlusion unknown)."""
    x_cam = cam_from_world * points
    visible = x_cam[:, 2] > 0
    xy = camera.img_from_cam(x_cam[visible], check_cheirality=False)
    visible[visible] = (xy[:, 0] >= 0) & (xy[:, 0] < camera.width) & (xy[:, 1] >= 0) & (xy[:, 1] < camera.height)
    return visible


def visible_fractions(view: PairView, points: np.ndarray) -> np.ndarray:
    """Per set of world points (S, G, 3): the share in front of the view that projects inside its image, (S,)."""
    visible = in_image(view.camera, view.cam_from_world, points.reshape(-1, 3))
    return visible.reshape(points.shape[:2]).mean(axis=1)


def axis_angles_deg(directions: np.ndarray) -> np.ndarray:
    """(N, N) angles between unit directions (N, 3), degrees."""
    return np.degrees(np.arccos(np.clip(directions @ directions.T, -1.0, 1.0)))


def candidate_pairs(views: list[PairView], limit: int = MAX_PAIR_CANDIDATES) -> np.ndarray:
    """(P, 2) index pairs i < j whose overlap pairs_by_overlap computes: every pair among at most `limit` + 1 views;
    else each view with its `limit` nearest others in where it looks from and at (its centre and the point at its
    scene depth on its axis, one 6-D point per view), so that the cost per view stays bounded as scenes grow
    (bench/bench_scale.py). Views that share much of what they see look at nearby points from nearby places; the
    `limit` (the full sample's size) is several times the neighbours kept."""
    count = len(views)
    if count <= limit + 1:
        return np.column_stack(np.triu_indices(count, 1))
    where = np.array([np.r_[view.center, view.center + view.depth * view.direction] for view in views])
    _, nearest = cKDTree(where).query(where, k=limit + 1)
    pairs = np.sort(np.column_stack([np.repeat(np.arange(count), limit + 1), nearest.ravel()]), axis=1)
    pairs = np.unique(pairs, axis=0)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def pair_overlaps(views: list[PairView], pairs: np.ndarray) -> np.ndarray:
    """Overlap of each index pair (P, 2): the smaller of the visible shares of either view's samples in the other."""
    samples = np.stack([sample_points(view) for view in views])
    directed = np.zeros((2, len(pairs)))
    for side, (source, target) in enumerate((pairs.T, pairs[:, ::-1].T)):
        for index in np.unique(target):
            chosen = np.flatnonzero(target == index)
            directed[side, chosen] = visible_fractions(views[index], samples[source[chosen]])
    return directed.min(axis=0)


def pairs_by_overlap(views: list[PairView], num_neighbors: int = 10, min_overlap: float = 0.2,
                     max_angle_deg: float = 60.0, max_candidates: int = MAX_PAIR_CANDIDATES) -> list[tuple[str, str]]:
    """For each view, its `num_neighbors` best-overlapping others (overlap >= min_overlap, axes within max_angle_deg)
    among its candidates (candidate_pairs, `max_candidates` per view).

    Each unordered pair appears once, as (smaller name, larger name); the list is sorted: the result is deterministic."""
    names = [view.name for view in views]
    if len(set(names)) != len(names):
        raise ValueError("pairs_by_overlap: view names must be unique")
    pairs = candidate_pairs(views, max_candidates)
    directions = np.array([view.direction for view in views])
    cosines = np.einsum("ij,ij->i", directions[pairs[:, 0]], directions[pairs[:, 1]])
    overlap = pair_overlaps(views, pairs)
    usable = (overlap >= min_overlap) & (np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))) <= max_angle_deg)
    own, other = np.concatenate([pairs[usable], pairs[usable][:, ::-1]]).T
    score = np.tile(overlap[usable], 2)
    name_rank = np.argsort(np.argsort(names))
    order = np.lexsort((name_rank[other], -score, own))
    own, other = own[order], other[order]
    starts = np.searchsorted(own, np.arange(len(views)))
    rank = np.arange(len(own)) - starts[own]
    chosen = rank < num_neighbors
    return sorted({tuple(sorted((names[a], names[b]))) for a, b in zip(own[chosen], other[chosen])})


def observations(model: pycolmap.Reconstruction, image: pycolmap.Image) -> tuple[np.ndarray, np.ndarray]:
    """An image's keypoints that observe 3D points (M, 2), COLMAP pixels, and those points (M, 3)."""
    observed = [p for p in image.points2D if p.has_point3D()]
    xy = np.array([p.xy for p in observed]).reshape(-1, 2)
    return xy, np.array([model.point3D(p.point3D_id).xyz for p in observed]).reshape(-1, 3)


def depth_from_points(image: pycolmap.Image, model: pycolmap.Reconstruction) -> float | None:
    """Median z-depth of the 3D points an image observes, or None when it observes none."""
    _, xyz = observations(model, image)
    return float(np.median((image.cam_from_world() * xyz)[:, 2])) if len(xyz) else None


def axes_focus(centers: np.ndarray, directions: np.ndarray) -> np.ndarray | None:
    """The point nearest to all optical axes in least squares, or None when the axes are (nearly) parallel."""
    projectors = np.eye(3)[None] - directions[:, :, None] * directions[:, None, :]
    A, b = projectors.sum(axis=0), np.einsum("nij,nj->i", projectors, centers)
    if np.linalg.eigvalsh(A / len(centers))[0] < PARALLEL_AXES_SIN2:
        return None
    return np.linalg.solve(A, b)


def centers_extent(centers: np.ndarray) -> float:
    """Diagonal of the bounding box of camera centres (N, 3): the scale of the scene the poses describe."""
    return float(np.linalg.norm(centers.max(axis=0) - centers.min(axis=0)))


def depths_from_poses(centers: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Scene z-depth per camera from poses alone: distance along its axis to the common focus of all axes (GES
    orbits and fly-bys keep a target in view, so their axes meet near it).

    Cameras looking away from the focus get the median depth of the others. Parallel axes (a nadir strip) fix no
    focus: the extent of the camera centres is used, an overestimate for such rigs, which errs towards more pairs."""
    extent = centers_extent(centers) or 1.0
    focus = axes_focus(centers, directions)
    if focus is None:
        return np.full(len(centers), extent)
    depths = np.einsum("ij,ij->i", focus - centers, directions)
    positive = depths > 0
    fallback = float(np.median(depths[positive])) if positive.any() else extent
    return np.where(positive, depths, fallback)


def model_views(model: pycolmap.Reconstruction) -> list[PairView]:
    """PairViews of a model's registered images; depth from observed points where present, else from the poses."""
    images = sorted((model.image(i) for i in model.reg_image_ids()), key=lambda image: image.name)
    views = [PairView(image.name, model.camera(image.camera_id), image.cam_from_world(), np.nan) for image in images]
    pose_depths = depths_from_poses(np.array([v.center for v in views]), np.array([v.direction for v in views]))
    point_depths = [depth_from_points(image, model) for image in images]
    return [dataclasses.replace(view, depth=float(pose_depth if point_depth is None else point_depth))
            for view, pose_depth, point_depth in zip(views, pose_depths, point_depths)]


def pairs_from_poses(model: pycolmap.Reconstruction, num_neighbors: int = 10, min_overlap: float = 0.2,
                     max_angle_deg: float = 60.0) -> list[tuple[str, str]]:
    """Pairs of a posed model's images by view overlap (see pairs_by_overlap)."""
    return pairs_by_overlap(model_views(model), num_neighbors, min_overlap, max_angle_deg)
