"""Stage 4, step 1: the sparse aerial model, triangulated from the GES frames with their known metric poses held fixed.

The GES cameras (stage 2's sparse_ge/) are exact, so matches are verified against the epipolar geometry the poses
imply (no RANSAC), and COLMAP only triangulates: poses and intrinsics must come out bit-for-bit as they went in, which
is checked, because the original pipeline silently lost the metric frame on some COLMAP versions.

Outputs in the work folder: features.h5, matches.h5, pairs-aerial.txt (hloc formats), database.db, and the model as
COLMAP binary in aerial/ and text in aerial-txt/ (both written under temporary names, renamed when verified).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pycolmap
from tqdm import tqdm

from aerialmd.atomic import atomic_dir, atomic_file, remove_path
from aerialmd.formats.hloc_h5 import keypoints_to_colmap, read_features, read_matches, write_pairs
from aerialmd.layout import (
    AERIAL_MATCHES_FILE,
    AERIAL_MODEL,
    AERIAL_PAIRS_FILE,
    DATABASE_FILE,
    FEATURES_FILE,
    FOOTAGE_DIR,
    SPARSE_GE_DIR,
    TEXT_MODEL_SUFFIX,
    text_model,
)
from aerialmd.run.scenes import Timer
from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features
from aerialmd.sfm.matching import MatcherConf, match_pairs
from aerialmd.sfm.pairs_from_poses import centers_extent, observations, pairs_from_poses

DEFAULT_MAX_SAMPSON_PX = 2.0  # known poses leave only keypoint noise; kept 91% of raw SIFT matches on GESblender
MAX_ROTATION_CHANGE_DEG = 1e-6
MAX_CENTER_CHANGE_FRACTION = 1e-6  # of the scene extent ...
MIN_CENTER_CHANGE_M = 1e-4  # ... or this, whichever is larger
MAX_INTRINSICS_CHANGE = 1e-9  # relative to the parameter (absolute below 1)



class PosesMovedError(RuntimeError):
    """The triangulated model's cameras differ from the known ones: the metric frame was not preserved."""


def image_ids(model: pycolmap.Reconstruction) -> dict[str, int]:
    """Image id per image name."""
    return {image.name: image_id for image_id, image in model.images.items()}


def colmap_keypoints(features_path: Path, name: str, camera: pycolmap.Camera) -> np.ndarray:
    """An image's keypoints in COLMAP pixels, after checking they were detected on an image of the camera's size."""
    features = read_features(features_path, name)
    if tuple(features.image_size) != (camera.width, camera.height):
        raise ValueError(f"{features_path}: {name} has features of a {features.image_size} image, "
                         f"but its camera is {camera.width}x{camera.height}")
    return keypoints_to_colmap(features.keypoints)


def create_database(database_path: Path | str, model: pycolmap.Reconstruction, features_path: Path | str,
                    matches_path: Path | str, pairs: list[tuple[str, str]]) -> None:
    """A new COLMAP database with the model's rigs, cameras, frames and images (same ids and names), every image's
    keypoints (COLMAP convention) and the raw matches of the pairs."""
    database_path = Path(database_path)
    remove_path(database_path)
    ids = image_ids(model)
    with pycolmap.Database.open(database_path) as db:
        for rig in model.rigs.values():
            db.write_rig(rig, use_rig_id=True)
        for camera in model.cameras.values():
            db.write_camera(camera, use_camera_id=True)
        for frame in model.frames.values():
            db.write_frame(frame, use_frame_id=True)
        for image in model.images.values():
            db.write_image(pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image.image_id,
                                          frame_id=image.frame_id), use_image_id=True)
            keypoints = colmap_keypoints(Path(features_path), image.name, model.camera(image.camera_id))
            db.write_keypoints(image.image_id, keypoints.astype(np.float32))
        for name0, name1 in pairs:
            matches, _ = read_matches(matches_path, name0, name1)
            db.write_matches(ids[name0], ids[name1], matches.astype(np.uint32))


def relative_pose(model: pycolmap.Reconstruction, image_id0: int, image_id1: int) -> pycolmap.Rigid3d:
    """cam1_from_cam0 of two images of the model."""
    return model.image(image_id1).cam_from_world() * model.image(image_id0).cam_from_world().inverse()


def sampson_errors_px(camera0: pycolmap.Camera, camera1: pycolmap.Camera, cam1_from_cam0: pycolmap.Rigid3d,
                      xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """Sampson distances (pixels) of correspondences to the epipolar geometry of two posed cameras.

    Keypoints are undistorted to normalized coordinates and scaled by each camera's mean focal length, so the
    distance is in pixels of an ideal pinhole camera: exact for square-pixel pinhole cameras such as GES's."""
    f0, f1 = camera0.mean_focal_length(), camera1.mean_focal_length()
    p0, p1 = camera0.cam_from_img(xy0) * f0, camera1.cam_from_img(xy1) * f1
    E = pycolmap.essential_matrix_from_pose(cam1_from_cam0)
    F = np.diag([1 / f1, 1 / f1, 1.0]) @ E @ np.diag([1 / f0, 1 / f0, 1.0])
    return np.sqrt(np.asarray(pycolmap.compute_squared_sampson_error(p0, p1, F)))


def known_pose_geometry(camera0: pycolmap.Camera, camera1: pycolmap.Camera, cam1_from_cam0: pycolmap.Rigid3d,
                        inliers: np.ndarray) -> pycolmap.TwoViewGeometry:
    """A CALIBRATED two-view geometry from known poses (translation scaled to unit length, as COLMAP stores it;
    F from the calibration matrices, so it ignores distortion)."""
    E = pycolmap.essential_matrix_from_pose(cam1_from_cam0)
    K0, K1 = camera0.calibration_matrix(), camera1.calibration_matrix()
    baseline = np.linalg.norm(cam1_from_cam0.translation)  # 0 for a camera turning in place (E = 0: no inliers)
    unit = pycolmap.Rigid3d(cam1_from_cam0.rotation, cam1_from_cam0.translation / (baseline or 1.0))
    return pycolmap.TwoViewGeometry(config=pycolmap.TwoViewGeometryConfiguration.CALIBRATED, E=E,
                                    F=np.linalg.inv(K1).T @ E @ np.linalg.inv(K0), cam2_from_cam1=unit,
                                    inlier_matches=inliers.astype(np.uint32))


def verify_with_known_poses(database_path: Path | str, model: pycolmap.Reconstruction, features_path: Path | str,
                            matches_path: Path | str, pairs: list[tuple[str, str]],
                            max_sampson_px: float = DEFAULT_MAX_SAMPSON_PX,
                            progress: bool = True) -> dict[tuple[str, str], int]:
    """Keep each pair's matches that fit the epipolar geometry of the known poses; write them to the database as
    two-view geometries. Returns the inlier count per pair."""
    ids = image_ids(model)
    names = {name for pair in pairs for name in pair}
    keypoints = {name: colmap_keypoints(Path(features_path), name, model.camera(model.image(ids[name]).camera_id))
                 for name in names}
    counts = {}
    with pycolmap.Database.open(database_path) as db:
        for name0, name1 in tqdm(pairs, desc="verify matches", disable=not progress):
            id0, id1 = ids[name0], ids[name1]
            camera0, camera1 = model.camera(model.image(id0).camera_id), model.camera(model.image(id1).camera_id)
            matches, _ = read_matches(matches_path, name0, name1)
            pose = relative_pose(model, id0, id1)
            xy0, xy1 = keypoints[name0][matches[:, 0]], keypoints[name1][matches[:, 1]]
            inliers = matches[sampson_errors_px(camera0, camera1, pose, xy0, xy1) < max_sampson_px]
            db.write_two_view_geometry(id0, id1, known_pose_geometry(camera0, camera1, pose, inliers))
            counts[(name0, name1)] = len(inliers)
    return counts


def fixed_pose_options() -> pycolmap.IncrementalPipelineOptions:
    """Triangulation options under which bundle adjustment may move points only: no pose, no intrinsic refinement."""
    options = pycolmap.IncrementalPipelineOptions()
    options.fix_existing_frames = True
    options.ba_refine_focal_length = False
    options.ba_refine_principal_point = False
    options.ba_refine_extra_params = False
    options.ba_refine_sensor_from_rig = False
    options.mapper.fix_existing_frames = True
    # Two-view tracks are kept: with known poses they are well constrained, and the ground photos need as many
    # aerial 3D points as possible to register against (about 8x more points on the sample, depth error 0.5% vs 0.4%).
    options.triangulation.ignore_two_view_tracks = False
    options.triangulation.random_seed = 0
    options.random_seed = 0
    return options


def rotation_angle_deg(a: pycolmap.Rotation3d, b: pycolmap.Rotation3d) -> float:
    """Angle of the rotation between two orientations, degrees (from the chord, accurate for tiny angles too)."""
    chord = np.linalg.norm(a.matrix() - b.matrix()) / (2 * np.sqrt(2))
    return float(np.degrees(2 * np.arcsin(min(chord, 1.0))))


def camera_change(a: pycolmap.Camera, b: pycolmap.Camera) -> float:
    """Largest relative change of an intrinsic parameter (inf if the model or size differs)."""
    if (a.model, a.width, a.height) != (b.model, b.width, b.height):
        return float("inf")
    pa, pb = np.asarray(a.params), np.asarray(b.params)
    return float(np.max(np.abs(pa - pb) / np.maximum(np.abs(pa), 1.0)))


def assert_poses_unchanged(reference: pycolmap.Reconstruction, result: pycolmap.Reconstruction) -> None:
    """Raise PosesMovedError unless every image of `reference` is in `result` (by name) with the same pose and
    intrinsics, naming the worst image. Extra images in `result` are ignored."""
    extent = centers_extent(np.array([image.projection_center() for image in reference.images.values()]))
    tolerance = max(MAX_CENTER_CHANGE_FRACTION * extent, MIN_CENTER_CHANGE_M)
    found = {image.name: image for image in result.images.values()}
    changes = []
    for image in reference.images.values():
        other = found.get(image.name)
        if other is None or not other.has_pose:
            raise PosesMovedError(f"{image.name}: missing or unposed in the triangulated model")
        shift = float(np.linalg.norm(other.projection_center() - image.projection_center()))
        angle = rotation_angle_deg(image.cam_from_world().rotation, other.cam_from_world().rotation)
        change = camera_change(image.camera, other.camera)
        score = max(shift / tolerance, angle / MAX_ROTATION_CHANGE_DEG, change / MAX_INTRINSICS_CHANGE)
        changes.append((score, f"{image.name}: centre moved {shift:.3g} (tolerance {tolerance:.3g}), rotated "
                               f"{angle:.3g} deg, intrinsics changed by {change:.3g} (relative)"))
    moved = [change for change in changes if change[0] > 1.0]
    if moved:
        raise PosesMovedError(f"{len(moved)}/{len(changes)} known cameras changed during triangulation; worst: "
                              f"{max(moved)[1]}")


def triangulate_with_fixed_poses(model: pycolmap.Reconstruction, database_path: Path | str, image_dir: Path | str,
                                 output_dir: Path | str) -> pycolmap.Reconstruction:
    """Triangulate the database's verified matches with the model's poses and intrinsics held fixed; the result
    (written as COLMAP binary to output_dir) is checked to have the input cameras (PosesMovedError otherwise)."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    result = pycolmap.triangulate_points(pycolmap.Reconstruction(model), database_path, image_dir, output_dir,
                                         clear_points=True, options=fixed_pose_options(), refine_intrinsics=False)
    assert_poses_unchanged(model, result)
    return result


def reprojection_errors(rec: pycolmap.Reconstruction) -> np.ndarray:
    """Reprojection error (pixels) of every observation of a 3D point."""
    errors = [np.zeros(0)]
    for image in rec.images.values():
        xy, xyz = observations(rec, image)
        projected = image.camera.img_from_cam(image.cam_from_world() * xyz, check_cheirality=False)
        errors.append(np.linalg.norm(projected - xy, axis=1))
    return np.concatenate(errors)


def model_statistics(rec: pycolmap.Reconstruction) -> dict:
    """Size and quality of a sparse model: points, observations, reprojection errors, track lengths."""
    errors = reprojection_errors(rec)
    per_image = {image.name: image.num_points3D for image in rec.images.values()}
    return {
        "num_images": rec.num_images(),
        "num_points3D": rec.num_points3D(),
        "num_observations": int(errors.size),
        "mean_reprojection_error_px": float(errors.mean()) if errors.size else float("nan"),
        "median_reprojection_error_px": float(np.median(errors)) if errors.size else float("nan"),
        "mean_track_length": float(errors.size / rec.num_points3D()) if rec.num_points3D() else 0.0,
        "mean_observations_per_image": float(np.mean(list(per_image.values()))) if per_image else 0.0,
        "observations_per_image": dict(sorted(per_image.items())),
    }


def select_images(model: pycolmap.Reconstruction, names: list[str]) -> pycolmap.Reconstruction:
    """A copy of a point-less model with only the named images (and their cameras)."""
    wanted = set(names)
    missing = sorted(wanted - set(image_ids(model)))
    if missing:
        raise KeyError(f"images not in the model: {', '.join(missing[:5])}")
    subset = pycolmap.Reconstruction()
    for image_id, image in model.images.items():
        if image.name not in wanted:
            continue
        camera = model.camera(image.camera_id)
        if not subset.exists_camera(camera.camera_id):
            subset.add_camera_with_trivial_rig(camera)
        subset.add_image_with_trivial_frame(pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image_id),
                                            image.cam_from_world())
    return subset


@dataclasses.dataclass(frozen=True)
class TriangulationConf:
    """Settings of the aerial model (recorded with stage 4a's settings): which frame pairs are matched and how matches
    are verified against the known poses."""

    num_neighbors: int = 10  # frames paired with each frame (pairs_from_poses)
    min_overlap: float = 0.2  # share of a frame's view another must see to be paired
    max_angle_deg: float = 60.0  # largest angle between the viewing directions of a pair
    max_sampson_px: float = DEFAULT_MAX_SAMPSON_PX  # matches farther from the known epipolar geometry are dropped


def build_aerial_model(scene_dir: Path | str, work_dir: Path | str, feature_conf: FeatureConf, matcher_conf: MatcherConf,
                       image_names: list[str] | None = None, conf: TriangulationConf = TriangulationConf(),
                       overwrite: bool = False, progress: bool = True,
                       timer: Timer | None = None) -> tuple[pycolmap.Reconstruction, dict]:
    """The whole step on one scene's stage-2 output (optionally only some frames): pairs from poses, features (GES
    logo masked), matching, database, verification by the known poses, fixed-pose triangulation and its check.

    Returns the model and statistics with seconds per step under "timings" (also recorded in `timer` when given).
    Cached features and matches are reused unless `overwrite`; the model is always rebuilt, and a stale one is removed
    first so a failure leaves none."""
    scene_dir, work_dir = Path(scene_dir), Path(work_dir)
    footage = scene_dir / FOOTAGE_DIR
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in (AERIAL_MODEL, AERIAL_MODEL + TEXT_MODEL_SUFFIX):
        remove_path(work_dir / stale)
    features, matches = work_dir / FEATURES_FILE, work_dir / AERIAL_MATCHES_FILE
    timer = timer or Timer()
    model = pycolmap.Reconstruction(str(scene_dir / SPARSE_GE_DIR))
    if image_names is not None:
        model = select_images(model, image_names)
    with timer.step("pairs"):
        pairs = pairs_from_poses(model, conf.num_neighbors, conf.min_overlap, conf.max_angle_deg)
    if not pairs:
        raise RuntimeError(f"{scene_dir}: no overlapping frame pairs among {model.num_images()} frames")
    with atomic_file(work_dir / AERIAL_PAIRS_FILE) as tmp:
        write_pairs(tmp, pairs)
    names = sorted(image.name for image in model.images.values())
    images = [ImageInput(name, footage / name, mask_attribution=True) for name in names]
    with timer.step("extraction"):
        extract_features(images, features, feature_conf, overwrite=overwrite, progress=progress)
    with timer.step("matching"):
        match_pairs(pairs, features, matches, matcher_conf, overwrite=overwrite, progress=progress)
    with atomic_file(work_dir / DATABASE_FILE) as tmp:
        with timer.step("database"):
            create_database(tmp, model, features, matches, pairs)
        with timer.step("verification"):
            inliers = verify_with_known_poses(tmp, model, features, matches, pairs, conf.max_sampson_px, progress)
    with atomic_dir(work_dir / AERIAL_MODEL) as tmp:  # renamed last: aerial/ marks a finished, checked model
        with timer.step("triangulation"):
            rec = triangulate_with_fixed_poses(model, work_dir / DATABASE_FILE, footage, tmp)
        with atomic_dir(text_model(work_dir / AERIAL_MODEL)) as tmp_txt:
            rec.write_text(str(tmp_txt))
    stats = model_statistics(rec)
    stats.update(num_pairs=len(pairs), num_verified_matches=int(sum(inliers.values())), timings=timer.seconds)
    return rec, stats
