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

GRID_SIZE = (12, 8)  # sample points across the image (columns, rows)
PARALLEL_AXES_SIN2 = np.sin(np.radians(3.0)) ** 2  # axes closer to parallel than this fix no common point


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


def overlap_matrix(views: list[PairView]) -> np.ndarray:
    """Symmetric (N, N) overlap: min over both directions of the visible share of one view's samples in the other."""
    samples = np.stack([sample_points(view) for view in views])
    directed = np.stack([visible_fractions(target, samples) for target in views], axis=1)  # [source, target]
    overlap = np.minimum(directed, directed.T)
    np.fill_diagonal(overlap, 0.0)
    return overlap


def angle_matrix_deg(views: list[PairView]) -> np.ndarray:
    """(N, N) angles between the views' optical axes, degrees."""
    return axis_angles_deg(np.array([view.direction for view in views]))


def axis_angles_deg(directions: np.ndarray) -> np.ndarray:
    """(N, N) angles between unit directions (N, 3), degrees."""
    return np.degrees(np.arccos(np.clip(directions @ directions.T, -1.0, 1.0)))


def pairs_by_overlap(views: list[PairView], num_neighbors: int = 10, min_overlap: float = 0.2,
                     max_angle_deg: float = 60.0) -> list[tuple[str, str]]:
    """For each view, its `num_neighbors` best-overlapping others (overlap >= min_overlap, axes within max_angle_deg).

    Each unordered pair appears once, as (smaller name, larger name); the list is sorted: the result is deterministic."""
    names = [view.name for view in views]
    if len(set(names)) != len(names):
        raise ValueError("pairs_by_overlap: view names must be unique")
    overlap = overlap_matrix(views)
    overlap[angle_matrix_deg(views) > max_angle_deg] = -1.0  # never selected, whatever min_overlap
    pairs = set()
    for i, name in enumerate(names):
        candidates = [j for j in np.flatnonzero(overlap[i] >= min_overlap) if j != i]
        candidates.sort(key=lambda j: (-overlap[i, j], names[j]))
        pairs.update(tuple(sorted((name, names[j]))) for j in candidates[:num_neighbors])
    return sorted(pairs)


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
