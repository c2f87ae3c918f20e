"""Photos confirmed by aerial frames seen from their predicted viewpoint: the aerial frames that observe a photo's
surface are warped into the photo's pixels through its own MegaDepth depth and its predicted pose, and matched to
the photo keypoint by keypoint where they lie.

The aerial step (registration.place_registered_photos) matches a photo's keypoints to descriptors the aerial frames
computed from 100-300 m up at an oblique angle: across that change of viewpoint few descriptors of a facade seen
from the street match, and a photo with a correct pose can find almost none. A warped frame shows the aerial texture
from the photo's own viewpoint, so the viewpoint part of the gap is gone (the texture's resolution, light and
content remain). Through the right pose the warped frame lines up with the photo, and keypoints detected in both
match within support_radius_px; through a wrong pose the depth lifts each pixel to another surface point, the warped
content is displaced, and matches land that close only by chance. The test is the aerial step's, unchanged
(registration.pooled_support): each warped keypoint is lifted to the surface point the photo's depth puts at its
pixel, so that it projects back onto that pixel, and matched to the photo's keypoints around it.

The frames warped are those whose own triangulated points lie on the photo's surface (in view, at the depth the photo
has there): a frame that observed a point saw it unhidden, so the choice needs no aerial depth map; where too few
points lie there, those that see the surface from closest to the photo's viewpoint (frames_to_warp).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pycolmap

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.hloc_h5 import COLMAP_KEYPOINT_SHIFT
from aerialmd.geometry.camera import cam_from_world_from_cam2world, values_at_pixels
from aerialmd.sfm.features import DETECTORS, Detector, FeatureConf, features_of_array, read_image
from aerialmd.sfm.pairs_from_poses import in_image
from aerialmd.sfm.registration import (
    CONFIRMED_BY_VIEWS,
    MAX_VIEW_ANGLE_DEG,
    STATUS_REGISTERED,
    GroundPhoto,
    PhotoResult,
    PointDescriptors,
    PoseSupport,
    RegistrationConf,
    pooled_support,
    predict_cam2world,
    seen_alike,
    seen_at_depth,
    sfm_points_of_keypoints,
    transform_points,
    unit_rows,
)

SURFACE_DEPTH_TOLERANCE = 0.05  # relative depth difference within which an aerial point lies on the photo's surface
FACING_SAMPLES = 2000  # surface points that measure how much of the photo a frame sees from near its viewpoint
WARP_BORDER_PX = 8  # keypoints this close to the edge of the warped area are dropped (the edge itself is no feature)


@dataclasses.dataclass(frozen=True)
class AerialObservations:
    """The aerial model's triangulated points and, per frame, which of them it observed."""

    xyz: np.ndarray  # (P, 3) metric
    observed: dict[int, np.ndarray]  # image id -> rows of xyz


def aerial_observations(model: pycolmap.Reconstruction) -> AerialObservations:
    """The model's points and observations, gathered once per scene."""
    point_ids = np.array(sorted(model.points3D), dtype=np.int64)
    row_of = {int(pid): row for row, pid in enumerate(point_ids)}
    observed = {image_id: np.array([row_of[p.point3D_id] for p in image.points2D if p.has_point3D()], dtype=np.int64)
                for image_id, image in model.images.items()}
    xyz = np.array([model.point3D(int(pid)).xyz for pid in point_ids]).reshape(-1, 3)
    return AerialObservations(xyz, observed)


@dataclasses.dataclass(frozen=True)
class PhotoSurface:
    """A photo's depth through its predicted pose: the metric 3D point of every pixel that has depth."""

    pixels: np.ndarray  # (N, 2) integer (x, y), OpenCV convention
    xyz: np.ndarray  # (N, 3) metric
    depth_sfm: np.ndarray  # (H, W) the MegaDepth depth map as read (SfM units), 0 where none
    scale: float  # metres per SfM unit (the scene Sim(3)'s scale)


def photo_surface(photo: GroundPhoto, sim: pycolmap.Sim3d) -> PhotoSurface:
    """The photo's MegaDepth depth through its pose predicted by `sim`; its depth map must have the image's size."""
    depth = read_depth_exr(photo.depth_path)
    if depth.shape != (photo.camera.height, photo.camera.width):
        raise ValueError(f"{photo.depth_path}: depth map is {depth.shape[1]}x{depth.shape[0]}, its image "
                         f"{photo.camera.width}x{photo.camera.height}")
    v, u = np.nonzero(depth > 0)
    pixels = np.column_stack([u, v])
    sfm, _ = sfm_points_of_keypoints(photo, pixels.astype(np.float64), depth)
    return PhotoSurface(pixels, transform_points(sim, sfm), depth, float(sim.scale))


def frames_to_warp(photo: GroundPhoto, cam2world: np.ndarray, surface: PhotoSurface, model: pycolmap.Reconstruction,
                   aerial: AerialObservations, count: int, min_points: int) -> list[int]:
    """Up to `count` aerial frames (image ids) to warp to the photo seen from the pose `cam2world`: first those that
    observed at least `min_points` points lying on the photo's surface (inside the photo, depth within
    SURFACE_DEPTH_TOLERANCE of the photo's), most first; a frame that observed a point saw it unhidden. Then, where the
    aerial points miss what the photo sees (a facade triangulated from nowhere above), those that see most of its
    surface from within MAX_VIEW_ANGLE_DEG of the photo's own rays (similar views, likely to see the same surfaces
    unhidden and alike). Ties by id."""
    observed = points_on_surface(photo, cam2world, surface, aerial)
    samples = surface.xyz[::max(1, len(surface.xyz) // FACING_SAMPLES)]
    ranked = []
    for image_id, rows in aerial.observed.items():
        image = model.image(image_id)
        facing = int(seen_alike(image, model.camera(image.camera_id), samples, cam2world[:3, 3])[1].sum())
        on_surface = int(observed[rows].sum())
        if on_surface >= min_points or facing:
            ranked.append((-(on_surface if on_surface >= min_points else 0), -facing, image_id))
    return [image_id for *_, image_id in sorted(ranked)[:count]]


def points_on_surface(photo: GroundPhoto, cam2world: np.ndarray, surface: PhotoSurface,
                      aerial: AerialObservations) -> np.ndarray:
    """Mask of the aerial points that lie on the photo's surface seen from `cam2world`: inside the photo, at a depth
    within SURFACE_DEPTH_TOLERANCE of the photo's there."""
    return seen_at_depth(photo.camera, cam_from_world_from_cam2world(cam2world), surface.depth_sfm * surface.scale,
                         aerial.xyz, SURFACE_DEPTH_TOLERANCE)


def warped_frame(frame: np.ndarray, camera: pycolmap.Camera, cam_from_world: pycolmap.Rigid3d,
                 surface: PhotoSurface) -> tuple[np.ndarray, np.ndarray]:
    """The aerial frame (image array) resampled at the photo's pixels: each pixel with depth shows the frame where
    its surface point projects. Also the mask of the pixels where keypoints may be taken (matchable_area)."""
    height, width = surface.depth_sfm.shape
    map_x = np.full((height, width), -1.0, np.float32)
    map_y = np.full((height, width), -1.0, np.float32)
    seen = in_image(camera, cam_from_world, surface.xyz)
    uv = camera.img_from_cam(cam_from_world * surface.xyz[seen], check_cheirality=False) - COLMAP_KEYPOINT_SHIFT
    x, y = surface.pixels[seen].T
    map_x[y, x], map_y[y, x] = uv[:, 0], uv[:, 1]
    warped = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    shown = np.zeros((height, width), bool)
    shown[y, x] = True
    return warped, matchable_area(shown, surface.depth_sfm)


def matchable_area(shown: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The pixels that show the frame, less WARP_BORDER_PX around the edges of that area and around the photo's depth
    discontinuities. Both are edges the warp draws where the photo's depth puts them, whatever the pose: a keypoint
    there would match the photo's own silhouette in the same place through a wrong pose too."""
    depth = np.where(depth > 0, depth, depth.max()).astype(np.float32)  # holes show nothing: any value will do
    larger, smaller = cv2.dilate(depth, np.ones((3, 3), np.uint8)), cv2.erode(depth, np.ones((3, 3), np.uint8))
    smooth = larger <= (1.0 + SURFACE_DEPTH_TOLERANCE) * smaller
    size = 2 * WARP_BORDER_PX + 1
    return cv2.erode((shown & smooth).astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def warped_keypoints(photo: GroundPhoto, surface: PhotoSurface, warped: np.ndarray, shown: np.ndarray,
                     detect: Detector, feature_conf: FeatureConf) -> PointDescriptors:
    """Keypoints of a warped frame (only on `shown` pixels), lifted to the SfM-frame surface point the photo's depth
    puts at their pixel."""
    features = features_of_array(detect, warped, feature_conf, lambda keypoints: values_at_pixels(shown, keypoints))
    xyz, valid = sfm_points_of_keypoints(photo, features.keypoints.astype(np.float64), surface.depth_sfm)
    return PointDescriptors(np.flatnonzero(valid), xyz, unit_rows(features.descriptors)[valid])


@dataclasses.dataclass(frozen=True)
class AerialScene:
    """What the aerial views need of a scene: its model, its footage folder and the scene Sim(3)."""

    model: pycolmap.Reconstruction
    footage: Path
    sim: pycolmap.Sim3d


def view_support(photo: GroundPhoto, scene: AerialScene, aerial: AerialObservations, detect: Detector,
                 grayscale: bool, features_path: Path, feature_conf: FeatureConf,
                 conf: RegistrationConf) -> PoseSupport:
    """The support test of a photo's predicted pose, pooled over the conf.view_frames aerial frames frames_to_warp
    chooses, each warped to its viewpoint (no frames: nothing matched)."""
    cam2world = predict_cam2world(scene.sim, photo.cam2world_sfm)
    surface = photo_surface(photo, scene.sim)
    frame_ids = frames_to_warp(photo, cam2world, surface, scene.model, aerial, conf.view_frames, conf.min_inliers)
    point_sets, names = [], []
    for image_id in frame_ids:
        image = scene.model.image(image_id)
        frame = read_image(scene.footage / image.name, grayscale)
        warped, shown = warped_frame(frame, scene.model.camera(image.camera_id), image.cam_from_world(), surface)
        point_sets.append(warped_keypoints(photo, surface, warped, shown, detect, feature_conf))
        names.append(image.name)
    return pooled_support(photo, photo.cam2world_sfm, point_sets, names, features_path, conf)


def view_shortfall(support: PoseSupport, conf: RegistrationConf) -> str:
    """Why the warped aerial frames did not confirm a photo's pose, for registration.json."""
    if not support.sources:
        return f"no aerial frame sees its surface from within {MAX_VIEW_ANGLE_DEG:g} deg of its view"
    return support.shortfall("aerial frames seen from its predicted pose", conf)


def confirm_through_aerial_views(photos: list[GroundPhoto], results: list[PhotoResult], scene: AerialScene,
                                 features_path: Path, feature_conf: FeatureConf, keep: Callable[[int], None],
                                 conf: RegistrationConf) -> None:
    """Test every rejected photo's predicted pose against the aerial frames warped to its viewpoint; register
    (`keep(index)`, which gives it its predicted pose) those they confirm, add the reason to the others."""
    rejected = [i for i, result in enumerate(results) if result.status != STATUS_REGISTERED]
    if not rejected:
        return
    factory, grayscale = DETECTORS[feature_conf.name]
    detect = factory(feature_conf)
    aerial = aerial_observations(scene.model)
    for i in rejected:
        support = view_support(photos[i], scene, aerial, detect, grayscale, features_path, feature_conf, conf)
        results[i].view_support, results[i].view_matches = support.support, support.matched
        if support.confirms(conf):
            keep(i)
            results[i].confirmed_by = CONFIRMED_BY_VIEWS
        else:
            results[i].reason = f"{results[i].reason}; {view_shortfall(support, conf)}"
