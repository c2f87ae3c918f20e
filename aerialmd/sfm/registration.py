"""MegaDepth photos registered into the metric aerial model.

MegaDepth gives every photo intrinsics and a pose in its own SfM frame, known up to a similarity. So the photos are
not localised one by one from scratch:
1. anchor photos, spread over the scene, are matched to every aerial frame; their 2D-3D matches with MegaDepth depth
   give 3D-3D correspondences (SfM frame <-> aerial points in metres), pooled over the anchors, from which one robust
   Sim(3) maps the whole MegaDepth scene into the metric frame. Anchors are added a batch at a time until the Sim(3)
   has RegistrationConf.min_sim3_inliers inliers: across the appearance gap one photo may have too few good matches
   for a pose of its own, while pooled they settle the scene;
2. that Sim(3) predicts every photo's metric pose, which picks the aerial frames each photo is matched to
   (pose-guided pairs);
3. once every photo is matched to its guided pairs, all photos' matches are pooled the same way for a second robust
   Sim(3), which is refined on the 2D-3D matches it verified (reprojection error, robust loss), moving the MegaDepth
   scene as one rigid body;
4. every photo is localised by PnP on its matches, and registered when its own matches confirm its predicted pose:
   enough of them, and a share far above chance, reproject within a few pixels and do not pull the pose away from
   where it is (pose_support), or its PnP pose agrees with it (place_registered_photos). No photo is kept on an
   unconfirmed pose; every rejected photo gets its reason in registration.json;
5. the photos left are tested the same way against the aerial frames warped to their predicted viewpoint
   (aerialmd/sfm/aerial_views.py: across the change of viewpoint few aerial descriptors match), then against the
   registered photos that see them, round after round (aerialmd/sfm/photo_neighbours.py: across the appearance gap
   many photos have no correct aerial match at all).

Which pose a registered photo keeps (`RegistrationConf.registered_pose`): `predicted`, its MegaDepth pose through the
refined Sim(3), because MegaDepth's own bundle adjustment ties its photos together far more tightly than a few hundred
matches to aerial points triangulated from far above (docs/registration.md has the figures), or `pnp`, its own PnP pose,
for MegaDepth models noisier than PnP; with `pnp`, only photos whose PnP pose agrees with the prediction are kept.
bench/bench_localization.py measures both on the sample, bench/bench_sweep.py the default over a sweep of scenes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import pycolmap
from scipy.optimize import least_squares
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.hloc_h5 import COLMAP_KEYPOINT_SHIFT, has_matches, read_features, read_matches
from aerialmd.geometry.camera import (
    cam2world_from_cam_from_world,
    cam_from_world_from_cam2world,
    image_diagonal_px,
    opencv_intrinsics,
    opencv_to_colmap_intrinsics,
    pose_errors,
    unit_rays,
    values_at_pixels,
)
from aerialmd.sfm.pairs_from_poses import MAX_PAIR_CANDIDATES, in_image

MIN_SIM3_CORRESPONDENCES = 10  # 3D-3D pairs below which no Sim(3) is tried
STATUS_REGISTERED = "registered"  # its pose is confirmed by its own matches (see the module doc)
STATUS_REJECTED = "rejected"  # with the reason, in PhotoResult.reason
POSE_PREDICTED = "predicted"  # the MegaDepth SfM pose through the scene Sim(3)
POSE_PNP = "pnp"  # the photo's own PnP pose against the aerial points
CONFIRMED_BY_SUPPORT = "support"  # its matches reproject tightly (place_registered_photos)
CONFIRMED_BY_PNP = "pnp"  # its PnP pose agreed with the prediction
CONFIRMED_BY_VIEWS = "aerial_views"  # its matches to aerial frames warped to its viewpoint agree (sfm/aerial_views.py)
CONFIRMED_BY_NEIGHBOURS = "neighbours"  # its matches to registered photos agree with it (sfm/photo_neighbours.py)
MAX_VIEW_ANGLE_DEG = 60.0  # an aerial frame sees a photo's surface alike from within this angle of the photo's rays


@dataclasses.dataclass(frozen=True)
class RegistrationConf:
    num_anchors: int = 8  # photos per batch of anchors; batches are added until the Sim(3) is settled
    max_anchor_pairs: int = 400  # aerial frames an anchor is matched to (evenly spread when there are more)
    min_sim3_inliers: int = 40  # 3D-3D inliers that settle the scene Sim(3) (else the next batch of anchors)
    guided_pairs: int = 10  # aerial frames per photo in the pose-guided step
    pnp_max_error_px: float = 6.0
    min_inliers: int = 12  # matches a pose must explain: PnP inliers, or a predicted pose's support
    agree_rotation_deg: float = 2.0
    agree_position_fraction: float = 0.01  # of the scene extent
    sim3_max_error_fraction: float = 0.005  # RANSAC threshold of the 3D-3D fit, of the scene extent
    guided_radius_fraction: float = 0.04  # search radius around predicted projections, of the image diagonal
    support_radius_px: float = 3.0  # a match confirms a predicted pose when it reprojects this close
    min_support_share: float = 0.08  # of the keypoints matched around a predicted pose, those that must confirm it
    min_refined_share: float = 0.7  # of the support of the pose its matches pull it to, what a pose must have
    refine_radius_px: float = 6.0  # search radius around the projections of the first PnP pose
    max_points_per_cell: int = 32  # aerial points searched per cell of the guided radius (registration.thinned_rows)
    view_frames: int = 6  # aerial frames warped to a rejected photo's predicted viewpoint (sfm/aerial_views.py)
    neighbour_pairs: int = 5  # registered photos a rejected photo's pose is tested against (sfm/photo_neighbours.py)
    min_neighbour_overlap: float = 0.1  # share of the photo a registered photo must see to be one of them
    registered_pose: str = POSE_PREDICTED  # pose kept for a "registered" photo: predicted | pnp (see the module doc)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.registered_pose not in (POSE_PREDICTED, POSE_PNP):
            raise ValueError(f"registered_pose must be {POSE_PREDICTED!r} or {POSE_PNP!r}, "
                             f"not {self.registered_pose!r}")


@dataclasses.dataclass
class GroundPhoto:
    """A preprocessed MegaDepth photo: image, PINHOLE camera (COLMAP convention), SfM-frame pose and depth."""

    name: str  # the processed file name, e.g. '123_abc_o.jpg.jpg', also its name in the localized model
    path: Path
    camera: pycolmap.Camera
    cam2world_sfm: np.ndarray
    depth_path: Path


@dataclasses.dataclass
class PhotoResult:
    name: str
    status: str
    num_correspondences: int = 0
    num_inliers: int = 0  # of the PnP pose (the observations kept are those of the kept pose)
    rotation_vs_prediction_deg: float | None = None
    position_vs_prediction_m: float | None = None
    pose: str | None = None  # which pose was kept: POSE_PREDICTED or POSE_PNP
    predicted_pose_support: int | None = None  # keypoints matched around the predicted pose that confirm it
    predicted_pose_inliers: int | None = None  # matches found around the predicted pose that it explains (kept)
    reason: str | None = None  # why it was rejected
    confirmed_by: str | None = None  # what confirmed a registered photo's predicted pose: CONFIRMED_BY_*
    view_support: int | None = None  # keypoints on which aerial frames seen from its pose confirm it (aerial_views)
    view_matches: int | None = None  # its keypoints matched to those of the warped aerial frames
    neighbour_support: int | None = None  # keypoints on which registered photos confirm its pose (photo_neighbours)
    neighbour_matches: int | None = None  # its keypoints matched to theirs around the projections through its pose
    cam_from_world: pycolmap.Rigid3d | None = None
    inlier_keypoints: np.ndarray | None = None  # keypoint index per inlier
    inlier_point3D_ids: np.ndarray | None = None

    def to_json(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if k not in ("cam_from_world", "inlier_keypoints", "inlier_point3D_ids")}
        if self.cam_from_world is not None:
            out["cam2world"] = cam2world_from_cam_from_world(self.cam_from_world).tolist()
        return out


def load_ground_photos(processed_dir: Path, names: list[str]) -> tuple[list[GroundPhoto], list[str]]:
    """The preprocessed photos of a subscene (`<name>.jpg`, `.npz`, `.exr`); also the names with missing outputs."""
    photos, missing = [], []
    for name in names:
        image, camera_file, depth = (processed_dir / f"{name}{suffix}" for suffix in (".jpg", ".npz", ".exr"))
        if not (image.is_file() and camera_file.is_file() and depth.is_file()):
            missing.append(name)
            continue
        data = np.load(camera_file)
        height, width = read_depth_exr(depth).shape  # the depth has the image's size
        K = opencv_to_colmap_intrinsics(data["intrinsics"])
        camera = pycolmap.Camera(model="PINHOLE", width=width, height=height,
                                 params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
        photos.append(GroundPhoto(image.name, image, camera, np.array(data["cam2world"], dtype=np.float64), depth))
    return photos, missing


def spread_order(positions: np.ndarray) -> list[int]:
    """All indices in farthest-point order from the most central position (deterministic): every prefix is spread
    over the scene, so anchors taken in this order cover it batch after batch."""
    chosen = [int(np.argmin(np.linalg.norm(positions - positions.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(positions - positions[chosen[0]], axis=1)
    distance[chosen[0]] = -1.0
    while len(chosen) < len(positions):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(positions - positions[chosen[-1]], axis=1))
        distance[chosen] = -1.0
    return chosen


def point3D_ids_per_keypoint(model: pycolmap.Reconstruction) -> dict[str, np.ndarray]:
    """For every image of the model: the 3D point id of each of its points2D (-1 where none)."""
    table = {}
    for image in model.images.values():
        ids = np.array([p.point3D_id if p.has_point3D() else -1 for p in image.points2D], dtype=np.int64)
        table[image.name] = ids
    return table


@dataclasses.dataclass
class Correspondences:
    """2D-3D matches of one photo: keypoint index, its COLMAP pixel coordinates, the aerial 3D point and its id."""

    keypoints: np.ndarray
    xy: np.ndarray
    xyz: np.ndarray
    point3D_ids: np.ndarray

    def subset(self, mask: np.ndarray) -> Correspondences:
        return Correspondences(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    @staticmethod
    def joined(parts: list[Correspondences]) -> Correspondences:
        """All matches of several sets, as they are (a keypoint may appear once per set)."""
        empty = Correspondences(np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0, np.int64))
        return Correspondences(*(np.concatenate([getattr(c, f.name) for c in [empty, *parts]])
                                 for f in dataclasses.fields(Correspondences)))


def correspondences_2d3d(photo: str, aerial: list[str], features_path: Path, matches_path: Path,
                         model: pycolmap.Reconstruction, point_ids: dict[str, np.ndarray]) -> Correspondences:
    """Matches of a photo to aerial frames that land on triangulated aerial points, one per (keypoint, point)."""
    keypoints = read_features(features_path, photo).keypoints
    found: dict[tuple[int, int], None] = {}
    for name in aerial:
        if not has_matches(matches_path, photo, name):
            continue
        pairs, _ = read_matches(matches_path, photo, name)
        ids = point_ids[name][pairs[:, 1]]
        for kp, pid in zip(pairs[ids >= 0, 0], ids[ids >= 0]):
            found[(int(kp), int(pid))] = None
    kp_idx = np.array([k for k, _ in found], dtype=np.int64)
    pids = np.array([p for _, p in found], dtype=np.int64)
    xyz = np.array([model.point3D(int(p)).xyz for p in pids]).reshape(-1, 3)
    xy = keypoints[kp_idx].astype(np.float64).reshape(-1, 2) + COLMAP_KEYPOINT_SHIFT
    return Correspondences(kp_idx, xy, xyz, pids)


def absolute_pose(camera: pycolmap.Camera, corr: Correspondences, conf: RegistrationConf) -> tuple[pycolmap.Rigid3d, np.ndarray] | None:
    """LO-RANSAC PnP + refinement (fixed intrinsics); the pose and the inlier mask, or None."""
    if len(corr.xy) < 4:
        return None
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = conf.pnp_max_error_px
    options.ransac.random_seed = conf.seed
    result = pycolmap.estimate_and_refine_absolute_pose(corr.xy, corr.xyz, camera, options)
    if result is None:
        return None
    return result["cam_from_world"], np.asarray(result["inlier_mask"], dtype=bool).reshape(-1)


def sfm_points_of_keypoints(photo: GroundPhoto, keypoints_xy_opencv: np.ndarray,
                            depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """3D points in the MegaDepth SfM frame of keypoints, from the photo's depth (read from its file unless given);
    and which keypoints had depth."""
    depth = read_depth_exr(photo.depth_path) if depth is None else depth
    d = values_at_pixels(depth, keypoints_xy_opencv)
    valid = d > 0
    K = opencv_intrinsics(photo.camera)
    rays = np.column_stack([keypoints_xy_opencv, np.ones(len(d))]) @ np.linalg.inv(K).T
    cam = rays * d[:, None]
    world = cam @ photo.cam2world_sfm[:3, :3].T + photo.cam2world_sfm[:3, 3]
    return world[valid], valid


def seen_at_depth(camera: pycolmap.Camera, cam_from_world: pycolmap.Rigid3d, depth: np.ndarray, points: np.ndarray,
                  tolerance: float) -> np.ndarray:
    """Mask of the points (N, 3) a camera sees unhidden: in front, inside the image, and at the depth its depth map
    (same units as the points) has there, within `tolerance` of it."""
    seen = in_image(camera, cam_from_world, points)
    cam = cam_from_world * points[seen]
    there = values_at_pixels(depth, camera.img_from_cam(cam, check_cheirality=False) - COLMAP_KEYPOINT_SHIFT)
    seen[seen] = (there > 0) & (np.abs(cam[:, 2] - there) <= tolerance * there)
    return seen


def estimate_scene_sim3(src_sfm: np.ndarray, dst_metric: np.ndarray, max_error: float, seed: int) -> tuple[pycolmap.Sim3d, int]:
    """Robust Sim(3) metric_from_sfm from 3D-3D correspondences; the transform and its inlier count."""
    options = pycolmap.RANSACOptions()
    options.max_error = max_error
    options.random_seed = seed
    sim = pycolmap.estimate_sim3d_robust(src_sfm, dst_metric, options)
    if sim is None:
        raise RuntimeError("no Sim(3) between the MegaDepth and aerial frames (too few consistent 3D-3D matches)")
    if isinstance(sim, dict):
        sim = sim["tgt_from_src"]
    residual = np.linalg.norm(transform_points(sim, src_sfm) - dst_metric, axis=1)
    return sim, int(np.sum(residual < max_error))


def transform_points(sim: pycolmap.Sim3d, points: np.ndarray) -> np.ndarray:
    """Apply a Sim(3) to (N, 3) points."""
    M = np.asarray(sim.matrix())
    return points @ M[:3, :3].T + M[:3, 3]


def predict_cam2world(sim: pycolmap.Sim3d, cam2world_sfm: np.ndarray) -> np.ndarray:
    """Metric camera-to-world of a photo from its SfM-frame pose and the scene Sim(3)."""
    R_sim = np.asarray(sim.rotation.matrix())
    out = np.eye(4)
    out[:3, :3] = R_sim @ cam2world_sfm[:3, :3]
    out[:3, 3] = transform_points(sim, cam2world_sfm[None, :3, 3])[0]
    return out


def scene_extent(model: pycolmap.Reconstruction) -> float:
    """A robust size of the aerial scene: diagonal of the 5-95 percentile box of its 3D points (metres)."""
    xyz = np.array([p.xyz for p in model.points3D.values()])
    if len(xyz) < 10:
        raise RuntimeError("the aerial model has too few 3D points to register photos into")
    lo, hi = np.percentile(xyz, [5, 95], axis=0)
    return float(np.linalg.norm(hi - lo))


def seen_alike(image: pycolmap.Image, camera: pycolmap.Camera, samples: np.ndarray,
               viewpoint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the world points `samples` inside the aerial `image`, and of those it sees from within
    MAX_VIEW_ANGLE_DEG of the rays to them from `viewpoint` (a photo's centre): such a frame sees the photo's surface
    from its side, likely unhidden and alike."""
    inside = in_image(camera, image.cam_from_world(), samples)
    cosines = np.einsum("ij,ij->i", unit_rays(viewpoint, samples[inside]),
                        unit_rays(image.projection_center(), samples[inside]))
    alike = np.zeros(len(samples), dtype=bool)
    alike[inside] = cosines >= np.cos(np.radians(MAX_VIEW_ANGLE_DEG))
    return inside, alike


def frames_facing(points: np.ndarray, center: np.ndarray, model: pycolmap.Reconstruction,
                  limit: int) -> list[pycolmap.Image]:
    """The model's `limit` frames whose centres, seen from the middle of the points (a photo's surface), lie closest
    in angle to the photo's `center` (all frames when there are no more): a frame's view of the surface can only be
    like the photo's if it looks at it from a similar direction."""
    images = list(model.images.values())
    if len(images) <= limit:
        return images
    middle = np.median(points, axis=0)
    centers = np.array([image.projection_center() for image in images])
    cosines = unit_rays(middle, centers) @ unit_rays(middle, center[None])[0]
    return [images[i] for i in np.argsort(-cosines, kind="stable")[:limit]]


def aerial_frames_seeing(points: np.ndarray, center: np.ndarray, model: pycolmap.Reconstruction, top: int,
                         candidates: int = MAX_PAIR_CANDIDATES) -> list[str]:
    """The aerial frames that see most of the given metric 3D points (a photo's surface) from within
    MAX_VIEW_ANGLE_DEG of the photo's rays from `center`, then most of them at all (in front, inside the image); none
    for no points (a photo without depth). Wide orbits see the whole of a photo's surface from many frames, most of
    them from behind or far aside, where the photo's keypoints do not match; the denser the orbits, the more such
    frames tie on what they see (docs/registration.md). Only the `candidates` frames facing the surface most like
    the photo are tested (frames_facing), so that the cost per photo stays bounded as the orbits grow denser
    (bench/bench_scale.py)."""
    if not len(points):
        return []
    scores = []
    for image in frames_facing(points, center, model, candidates):
        inside, alike = seen_alike(image, model.camera(image.camera_id), points, center)
        scores.append((-int(alike.sum()), -int(inside.sum()), image.name))
    return [name for alike, inside, name in sorted(scores)[:top] if inside < 0]


def photo_depth_points(photo: GroundPhoto, sim: pycolmap.Sim3d, step: int = 16) -> np.ndarray:
    """Metric 3D points of a grid of the photo's pixels with depth, through the predicted pose."""
    depth = read_depth_exr(photo.depth_path)
    v, u = np.mgrid[0:depth.shape[0]:step, 0:depth.shape[1]:step]
    keep = depth[v, u] > 0
    xy = np.column_stack([u[keep], v[keep]]).astype(np.float64)
    sfm, _ = sfm_points_of_keypoints(photo, xy)
    return transform_points(sim, sfm)


def judge(prediction: np.ndarray, found: tuple[pycolmap.Rigid3d, np.ndarray] | None, corr: Correspondences,
          extent: float, conf: RegistrationConf, name: str) -> PhotoResult:
    """A photo's PnP pose against the prediction: "registered" (with the PnP pose) when it has conf.min_inliers
    inliers and agrees; otherwise rejected with the reason. The final word with registered_pose="predicted" is
    place_registered_photos's."""
    result = PhotoResult(name, STATUS_REJECTED, num_correspondences=len(corr.xy))
    if found is None:
        result.reason = f"no PnP pose from {len(corr.xy)} 2D-3D matches"
        return result
    pose, inliers = found
    result.num_inliers = int(inliers.sum())
    distance, angle = pose_errors(cam2world_from_cam_from_world(pose), prediction)
    result.rotation_vs_prediction_deg, result.position_vs_prediction_m = angle, distance
    if result.num_inliers < conf.min_inliers:
        result.reason = f"PnP pose with only {result.num_inliers} inliers of {len(corr.xy)} matches"
        return result
    if angle > conf.agree_rotation_deg or distance > conf.agree_position_fraction * extent:
        result.reason = (f"PnP pose ({result.num_inliers} inliers) {angle:.2f} deg / {distance:.2f} m from the "
                         "Sim(3) prediction")
        return result
    result.status = STATUS_REGISTERED
    result.pose = POSE_PNP
    result.cam_from_world = pose
    result.inlier_keypoints = corr.keypoints[inliers]
    result.inlier_point3D_ids = corr.point3D_ids[inliers]
    return result


def projections(camera: pycolmap.Camera, cam2world: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP pixel coordinates of metric points seen from cam2world, and whether each lies in front of the camera."""
    cam = cam_from_world_from_cam2world(cam2world) * xyz
    return camera.img_from_cam(cam, check_cheirality=False), cam[:, 2] > 0


def explained(camera: pycolmap.Camera, cam2world: np.ndarray, corr: Correspondences, max_error_px: float) -> np.ndarray:
    """Which 2D-3D matches a pose explains: the point in front of the camera, projecting within `max_error_px`."""
    if not len(corr.xy):
        return np.zeros(0, dtype=bool)
    uv, in_front = projections(camera, cam2world, corr.xyz)
    return in_front & (np.linalg.norm(uv - corr.xy, axis=1) <= max_error_px)


# Reprojection error (px) beyond which the scene refinement's Cauchy loss discounts a match. Its matches are those the
# pooled 3D-3D Sim(3) verified (pooled_sim3), mostly right; a loss that grows without bound even linearly (soft-L1) let
# the wrong ones pull the Sim(3) 2 deg off on a sweep scene where the Cauchy loss ended 0.01 deg from the truth.
ROBUST_SCALE_PX = 2.0


def refine_scene_sim3(sim: pycolmap.Sim3d, photos: list[GroundPhoto], observations: list[Correspondences]) -> pycolmap.Sim3d:
    """The scene Sim(3) refined by moving the MegaDepth scene as one rigid body: the similarity (about the photos'
    centroid) that minimises the robust (Cauchy) reprojection error of the photos' 2D-3D matches when every photo takes
    its SfM pose through it. The 3D-3D fit from the anchors rests on MegaDepth depth read at keypoints, which sit on
    depth edges; one Sim(3) for all photos pools their matches, so outliers of one photo do not move it."""
    centroid = transform_points(sim, np.array([photo.cam2world_sfm[:3, 3] for photo in photos])).mean(axis=0)

    def correction(x: np.ndarray) -> pycolmap.Sim3d:
        """Rotation vector x[:3] and scale exp(x[6]) about the centroid, then shift x[3:6]."""
        rotation, scale = Rotation.from_rotvec(x[:3]).as_matrix(), np.exp(x[6])
        return pycolmap.Sim3d(scale, pycolmap.Rotation3d(rotation), centroid + x[3:6] - scale * rotation @ centroid)

    def residuals(x: np.ndarray) -> np.ndarray:
        moved = correction(x) * sim
        return np.concatenate([
            (projections(photo.camera, predict_cam2world(moved, photo.cam2world_sfm), corr.xyz)[0] - corr.xy).ravel()
            for photo, corr in zip(photos, observations)])

    solution = least_squares(residuals, np.zeros(7), loss="cauchy", f_scale=ROBUST_SCALE_PX,
                             x_scale=np.array([1e-3] * 3 + [0.1] * 3 + [1e-3]))
    return correction(solution.x) * sim


def guided_radius_px(photo: GroundPhoto, conf: RegistrationConf) -> float:
    """Search radius around predicted projections for a photo (RegistrationConf.guided_radius_fraction)."""
    return conf.guided_radius_fraction * image_diagonal_px(photo.camera)


def place_registered_photos(sim: pycolmap.Sim3d, photos: list[GroundPhoto], results: list[PhotoResult],
                            wide_matches: list[Correspondences],
                            matches_around: Callable[[int, np.ndarray], Correspondences],
                            conf: RegistrationConf) -> None:
    """Give every photo whose predicted pose its own matches confirm that pose (the MegaDepth pose through `sim`).

    A predicted pose is confirmed by its support (pose_support) over the keypoints matched within
    guided_radius_fraction of its projections (`wide_matches`, per photo, those its PnP started from). Or it is
    confirmed by PnP: the photo's PnP pose, with min_inliers inliers, agreed with it (`judge`), the test before the
    support one, which registers many photos with few matches (on a sweep scene 48 of 55 photos, against 19 by support
    alone, all within 0.2 deg). A registered photo keeps the predicted pose whatever its PnP pose; its observations
    are the matches within refine_radius_px of its projections (`matches_around(photo index, cam2world)`) that it
    reprojects within pnp_max_error_px. A photo confirmed neither way is rejected, with both reasons."""
    for i, result in enumerate(results):
        pose = predict_cam2world(sim, photos[i].cam2world_sfm)
        support = pose_support(photos[i].camera, pose, wide_matches[i], [], conf)
        result.predicted_pose_support = support.support
        supported = support.confirms(conf)
        agreed = result.status == STATUS_REGISTERED  # judge: its PnP pose agreed with the prediction
        if not (supported or agreed):
            result.status, result.pose, result.cam_from_world = STATUS_REJECTED, None, None
            result.reason = f"predicted pose: {support.shortfall('aerial points', conf)}; {result.reason}"
            continue
        keep_predicted_pose(result, photos[i].camera, pose, matches_around(i, pose), conf)
        result.confirmed_by = CONFIRMED_BY_SUPPORT if supported else CONFIRMED_BY_PNP


@dataclasses.dataclass(frozen=True)
class PoseSupport:
    """What matches found around a photo's projections through a pose say about that pose (pose_support)."""

    sources: list[str]  # the images the matches come from (registered photos, warped aerial frames), or none
    matched: int  # the photo's keypoints matched around the projections through the pose
    support: int  # of those, the keypoints the pose reprojects their match onto (support_radius_px)
    refined_support: int  # the same count for the pose the matches pull it to (refined_pose)

    def counted(self, conf: RegistrationConf) -> bool:
        """Enough supporting keypoints: at least min_inliers and min_support_share of those matched."""
        return self.support >= conf.min_inliers and self.support >= conf.min_support_share * self.matched

    def confirms(self, conf: RegistrationConf) -> bool:
        return self.counted(conf) and self.support >= conf.min_refined_share * self.refined_support

    def shortfall(self, what: str, conf: RegistrationConf) -> str:
        """Why the matches (to `what`, e.g. "registered photos") did not confirm the pose, for registration.json."""
        counted = f"{self.support} of its {self.matched} keypoints matched to {what} confirm it"
        if not self.counted(conf):
            return f"{counted} (needs {conf.min_inliers} and {conf.min_support_share:.0%})"
        return (f"{counted}, but {self.refined_support} confirm the pose they pull it to (it needs "
                f"{conf.min_refined_share:.0%} of that)")


def pose_support(camera: pycolmap.Camera, cam2world: np.ndarray, corr: Correspondences, sources: list[str],
                 conf: RegistrationConf) -> PoseSupport:
    """The support test of a pose (cam2world, in the frame of the matches' 3D points) by the 2D-3D matches found
    within guided_radius_fraction of its projections. Of the keypoints matched, at least min_inliers and
    min_support_share must reproject within support_radius_px: matches found around a wrong pose land anywhere in the
    search disc, and only (support_radius_px / radius)^2 of them (about 1 %) that close by chance; on a sweep scene,
    poses 3 deg off had at most 7 such keypoints and 3 %, the true poses 11-29 %. And the pose must keep
    min_refined_share of the support of the pose the matches pull it to (refined_pose): a roll about the optical axis
    moves the projections near the image centre by less than support_radius_px, so a rolled pose keeps the support
    there while the refined pose, rolled back, gains the matches farther out. A share of support rather than the
    angle between the two poses, because a pan and a sideways shift move nearby projections alike: with few matches
    the refinement trades one for the other by degrees without changing what it explains (docs/registration.md)."""
    matched = len(np.unique(corr.keypoints))

    def supported(pose: np.ndarray) -> int:
        return len(np.unique(corr.keypoints[explained(camera, pose, corr, conf.support_radius_px)]))

    support = supported(cam2world)
    refined = supported(refined_pose(camera, cam2world, corr)) if support else 0
    return PoseSupport(sources, matched, support, refined)


def pooled_support(photo: GroundPhoto, cam2world: np.ndarray, point_sets: list[PointDescriptors], names: list[str],
                   features_path: Path, conf: RegistrationConf) -> PoseSupport:
    """pose_support of a photo's pose `cam2world` (in the frame of the points) by the matches to several sets of 3D
    points with descriptors (`names`), each matched around its projections (projection_guided_correspondences)."""
    radius = guided_radius_px(photo, conf)
    corr = Correspondences.joined([projection_guided_correspondences(photo, cam2world, points, features_path, radius)
                                   for points in point_sets])
    return pose_support(photo.camera, cam2world, corr, names, conf)


def refined_pose(camera: pycolmap.Camera, cam2world: np.ndarray, corr: Correspondences) -> np.ndarray:
    """The pose (cam2world) that minimises the robust (Cauchy, ROBUST_SCALE_PX) reprojection error of the matches,
    starting from `cam2world`: a rotation about the camera centre and a shift of it. The matches found around a pose's
    projections pull the refined pose to where they agree, so a pose the support test cannot tell from the right one
    (a roll about the optical axis moves the projections near the image centre by under support_radius_px) is
    moved back towards the right one, where it explains more of them (pose_support)."""
    centre = cam2world[:3, 3]

    def moved(x: np.ndarray) -> np.ndarray:
        out = cam2world.copy()
        out[:3, :3] = cam2world[:3, :3] @ Rotation.from_rotvec(x[:3]).as_matrix()
        out[:3, 3] = centre + x[3:]
        return out

    def residuals(x: np.ndarray) -> np.ndarray:
        return (projections(camera, moved(x), corr.xyz)[0] - corr.xy).ravel()

    if len(corr.xy) < 3:
        return cam2world
    solution = least_squares(residuals, np.zeros(6), loss="cauchy", f_scale=ROBUST_SCALE_PX, x_scale="jac")
    return moved(solution.x)


def keep_predicted_pose(result: PhotoResult, camera: pycolmap.Camera, pose: np.ndarray, tight: Correspondences,
                        conf: RegistrationConf) -> None:
    """Register a photo on its predicted pose (cam2world `pose`), observing the aerial points among `tight` (the
    matches within refine_radius_px of its projections) that it reprojects within pnp_max_error_px."""
    inliers = explained(camera, pose, tight, conf.pnp_max_error_px)
    result.status, result.reason = STATUS_REGISTERED, None
    result.predicted_pose_inliers = int(inliers.sum())
    result.pose, result.cam_from_world = POSE_PREDICTED, cam_from_world_from_cam2world(pose)
    result.inlier_keypoints, result.inlier_point3D_ids = tight.keypoints[inliers], tight.point3D_ids[inliers]


@dataclasses.dataclass
class SceneRegistration:
    """Outcome of registering a scene's photos: the Sim(3), per-photo results, and what the anchors gave."""

    sim3: pycolmap.Sim3d
    sim3_inliers: int
    sim3_correspondences: int
    sim3_refined_on_photos: int
    anchors: list[str]
    results: list[PhotoResult]
    extent_m: float

    def to_json(self) -> dict:
        counts = {status: sum(r.status == status for r in self.results)
                  for status in (STATUS_REGISTERED, STATUS_REJECTED)}
        return {
            "scene_extent_m": self.extent_m,
            "sim3_metric_from_sfm": {"scale": float(np.squeeze(self.sim3.scale)),
                                     "rotation_matrix": np.asarray(self.sim3.rotation.matrix()).tolist(),
                                     "translation": np.asarray(self.sim3.translation).tolist(),
                                     "inliers": self.sim3_inliers, "correspondences": self.sim3_correspondences,
                                     "refined_on_photos": self.sim3_refined_on_photos},
            "anchors": self.anchors,
            "counts": counts,
            "images": {r.name: r.to_json() for r in self.results},
        }


def with_depth(photo: GroundPhoto, corr: Correspondences) -> tuple[np.ndarray, Correspondences]:
    """The 2D-3D matches whose keypoints have MegaDepth depth, and their keypoints' 3D points in the SfM frame: 3D-3D
    pairs (SfM frame, metric aerial point) for the scene Sim(3)."""
    sfm, valid = sfm_points_of_keypoints(photo, corr.xy - COLMAP_KEYPOINT_SHIFT)
    return sfm, corr.subset(valid)


def pooled_sim3(photos: list[GroundPhoto], matches: list[Correspondences], max_error: float,
                seed: int) -> tuple[pycolmap.Sim3d, int, list[Correspondences]] | None:
    """One robust Sim(3) (metric from SfM) from the 3D-3D pairs of all the photos' 2D-3D matches pooled: across the
    appearance gap a photo may have too few good matches for a pose of its own, while pooled they settle the scene.
    Returns it, its inlier count and per photo the 2D-3D matches it verified (None: too few pairs, or no Sim(3))."""
    pairs = [with_depth(photo, corr) for photo, corr in zip(photos, matches)]
    src = np.concatenate([sfm for sfm, _ in pairs] + [np.zeros((0, 3))])
    dst = np.concatenate([corr.xyz for _, corr in pairs] + [np.zeros((0, 3))])
    if len(src) < MIN_SIM3_CORRESPONDENCES:
        return None
    try:
        sim, inliers = estimate_scene_sim3(src, dst, max_error, seed)
    except RuntimeError:  # no consistent subset
        return None
    verified = [corr.subset(np.linalg.norm(transform_points(sim, sfm) - corr.xyz, axis=1) < max_error)
                for sfm, corr in pairs]
    return sim, inliers, verified


def evenly_spaced(names: list[str], count: int) -> list[str]:
    if len(names) <= count:
        return names
    return [names[i] for i in np.linspace(0, len(names) - 1, count).round().astype(int)]


@dataclasses.dataclass
class PointDescriptors:
    """Aerial 3D points with one unit descriptor per observation (several rows may share a point). With
    `max_per_cell`, a search around their projections takes at most that many points per square cell, those with the
    longest tracks (`thinned_rows`); a cell's side is the search radius, or `cell_fraction` of the photo's diagonal
    when that is larger, so that a search with a small radius is bounded as well."""

    point3D_ids: np.ndarray  # (M,)
    xyz: np.ndarray  # (M, 3)
    descriptors: np.ndarray  # (M, D) float32, L2-normalised
    track_lengths: np.ndarray | None = None  # (M,) the track length of each row's point
    max_per_cell: int | None = None
    cell_fraction: float = 0.0


def thinned_rows(rows: np.ndarray, uv: np.ndarray, points: PointDescriptors, cell_px: float) -> np.ndarray:
    """The `rows` (of `points`, projecting at `uv`) whose point is one of the points.max_per_cell with the longest
    tracks (then the lowest id) among those projecting into its square cell of side `cell_px`; all of them without a
    cap. A photo's search then costs at most the cap per neighbourhood of a keypoint however dense the aerial model
    (denser orbits triangulate more points of the same surfaces: bench/bench_scale.py), and the points it keeps are
    the ones seen from most frames. The order of `rows` is kept."""
    if points.max_per_cell is None or points.track_lengths is None or not len(rows):
        return rows
    cells = np.floor(uv / cell_px).astype(np.int64)
    ids = points.point3D_ids[rows]
    order = np.lexsort((ids, -points.track_lengths[rows], cells[:, 1], cells[:, 0]))
    sorted_cells, sorted_ids = cells[order], ids[order]
    new_cell = np.r_[True, (sorted_cells[1:] != sorted_cells[:-1]).any(axis=1)]
    point_number = np.cumsum(new_cell | np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    rank_in_cell = point_number - np.maximum.accumulate(np.where(new_cell, point_number, 0))
    return rows[np.sort(order[rank_in_cell < points.max_per_cell])]


def unit_rows(descriptors_dn: np.ndarray) -> np.ndarray:
    """(N, D) float32 unit rows of descriptors stored (D, N) in any dtype."""
    rows = np.ascontiguousarray(descriptors_dn.T, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def aerial_point_descriptors(model: pycolmap.Reconstruction, features_path: Path, per_point: int = 3,
                             max_per_cell: int | None = None, cell_fraction: float = 0.0) -> PointDescriptors:
    """Descriptors of every triangulated aerial point, taken from (up to `per_point` of) its observations; searched
    with at most `max_per_cell` points per cell (PointDescriptors)."""
    by_image: dict[int, list[tuple[int, int]]] = {}
    for pid, point in model.points3D.items():
        for element in list(point.track.elements)[:per_point]:
            by_image.setdefault(element.image_id, []).append((pid, element.point2D_idx))
    ids, descriptors = [], []
    for image_id, entries in by_image.items():
        rows = unit_rows(read_features(features_path, model.image(image_id).name).descriptors)
        ids.append(np.array([pid for pid, _ in entries], dtype=np.int64))
        descriptors.append(rows[[idx for _, idx in entries]])
    point_ids = np.concatenate(ids)
    points = [model.point3D(int(p)) for p in point_ids]
    xyz = np.array([point.xyz for point in points])
    track_lengths = np.array([point.track.length() for point in points])
    return PointDescriptors(point_ids, xyz, np.concatenate(descriptors), track_lengths, max_per_cell,
                            cell_fraction)


def projection_guided_correspondences(photo: GroundPhoto, cam2world: np.ndarray, points: PointDescriptors,
                                      features_path: Path, radius_px: float, ratio: float = 0.9) -> Correspondences:
    """2D-3D matches found by projecting the aerial points through the predicted pose: each point is compared only
    with the photo's keypoints within `radius_px` of its projection (best vs second best, then one point per
    keypoint). Far more matches survive than with global nearest neighbours across the aerial-ground gap."""
    features = read_features(features_path, photo.name)
    keypoints, descriptors = features.keypoints.astype(np.float64), unit_rows(features.descriptors)
    world2cam = np.linalg.inv(cam2world)
    cam = points.xyz @ world2cam[:3, :3].T + world2cam[:3, 3]
    K = opencv_intrinsics(photo.camera)
    front = cam[:, 2] > 0
    uv = np.full((len(cam), 2), -1e9)
    uv[front] = (cam[front] / cam[front, 2:]) @ K[:2].T
    inside = front & (uv[:, 0] >= -radius_px) & (uv[:, 0] < photo.camera.width + radius_px) & \
        (uv[:, 1] >= -radius_px) & (uv[:, 1] < photo.camera.height + radius_px)
    rows = np.flatnonzero(inside)
    cell_px = max(radius_px, points.cell_fraction * image_diagonal_px(photo.camera))
    rows = thinned_rows(rows, uv[rows], points, cell_px)
    near, candidates = pairs_within(uv[rows], keypoints, radius_px)
    point_rows = rows[near]
    distances = descriptor_distances(descriptors, candidates, points.descriptors, point_rows)
    best, second = two_nearest(point_rows, distances)
    passed = best[(second < 0) | (distances[best] <= ratio * distances[np.maximum(second, 0)])]
    # one point per keypoint: the nearest, the lower row on a tie
    order = np.lexsort((point_rows[passed], distances[passed], candidates[passed]))
    chosen = passed[order][first_of_runs(candidates[passed][order])]
    kp_idx, rows = candidates[chosen], point_rows[chosen]
    return Correspondences(kp_idx, keypoints[kp_idx].reshape(-1, 2) + COLMAP_KEYPOINT_SHIFT,
                           points.xyz[rows].reshape(-1, 3), points.point3D_ids[rows])


def pairs_within(queries: np.ndarray, points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (query, point) index pair of 2D `queries` and `points` at most `radius` apart, ordered by query, then
    point (the order of cKDTree.query_ball_point's lists, without building them: a list per query cost more than
    the search itself)."""
    if not len(queries) or not len(points):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = cKDTree(queries).sparse_distance_matrix(cKDTree(points), radius, output_type="ndarray")
    keys = np.sort(pairs["i"].astype(np.int64) * len(points) + pairs["j"])
    return keys // len(points), keys % len(points)


def descriptor_distances(descriptors: np.ndarray, keypoints: np.ndarray, point_descriptors: np.ndarray,
                         point_rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Euclidean distance between keypoint descriptors[keypoints[k]] and point_descriptors[point_rows[k]], per k."""
    out = np.empty(len(keypoints), np.float32)
    for start in range(0, len(keypoints), chunk):
        part = slice(start, start + chunk)
        out[part] = np.linalg.norm(descriptors[keypoints[part]] - point_descriptors[point_rows[part]], axis=1)
    return out


def first_of_runs(values: np.ndarray) -> np.ndarray:
    """Indices where a run of equal consecutive values starts."""
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.zeros(0, np.int64)


def two_nearest(groups: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (one per run of equal values of `groups`, which must be sorted): the index of its smallest distance
    and of its second smallest (-1 for a group of one); of equal distances the first. Per-run minima instead of a
    sort: the search pairs are many (bench/bench_scale.py)."""
    if not len(groups):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = first_of_runs(groups)
    run = np.cumsum(np.r_[False, groups[1:] != groups[:-1]])
    best = first_at_run_minimum(distances, starts, run)
    rest = distances.astype(np.float64)
    rest[best] = np.inf
    second = first_at_run_minimum(rest, starts, run)
    second[np.isinf(rest[second])] = -1
    return best, second


def first_at_run_minimum(values: np.ndarray, starts: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Per run (beginning at `starts`; `run`: each value's run number) the index of the first of its smallest values."""
    at_minimum = np.flatnonzero(values == np.minimum.reduceat(values, starts)[run])
    return at_minimum[first_of_runs(run[at_minimum])]


def merge_correspondences(a: Correspondences, b: Correspondences) -> Correspondences:
    """Union of two sets of 2D-3D matches, each (keypoint, point) pair once."""
    keys = np.concatenate([np.stack([a.keypoints, a.point3D_ids], 1), np.stack([b.keypoints, b.point3D_ids], 1)])
    _, first = np.unique(keys, axis=0, return_index=True)
    fields = [np.concatenate([getattr(a, f.name), getattr(b, f.name)])[first] for f in dataclasses.fields(Correspondences)]
    return Correspondences(*fields)


def matches_near_pose(photo: GroundPhoto, cam2world: np.ndarray, pair_matches: Correspondences,
                      points: PointDescriptors, features_path: Path, radius_px: float) -> Correspondences:
    """The pair matches plus the projection-guided matches within `radius_px` of the points' projections."""
    return merge_correspondences(pair_matches, projection_guided_correspondences(
        photo, cam2world, points, features_path, radius_px))


def localize_photo(photo: GroundPhoto, wide_matches: Correspondences, pair_matches: Correspondences,
                   points: PointDescriptors, features_path: Path,
                   conf: RegistrationConf) -> tuple[Correspondences, tuple | None]:
    """PnP on the matches around the predicted pose (`wide_matches`: the pair matches plus projection-guided matches
    within guided_radius_px), then once more around the PnP pose with a tight radius; returns the correspondences
    used and the better result."""
    found = absolute_pose(photo.camera, wide_matches, conf)
    if found is None:
        return wide_matches, None
    tight = matches_near_pose(photo, cam2world_from_cam_from_world(found[0]), pair_matches, points, features_path,
                              conf.refine_radius_px)
    refound = absolute_pose(photo.camera, tight, conf)
    if refound is not None and refound[1].sum() >= found[1].sum():
        return tight, refound
    return wide_matches, found
