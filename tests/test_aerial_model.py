"""Registration step 1, the aerial model from known poses: pairs by view overlap, verification by the known epipolar
geometry, fixed-pose triangulation, and the check that the metric cameras come out unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pycolmap
import pytest

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.hloc_h5 import keypoints_to_colmap, read_features, read_pairs
from aerialmd.geometry.camera import cam_from_world_from_cam2world, opencv_to_colmap_intrinsics
from aerialmd.layout import SPARSE_GE_DIR
from aerialmd.run.scenes import save_scene_list
from aerialmd.sample_scene.viewpoints import look_at
from aerialmd.sfm.features import FeatureConf
from aerialmd.sfm.matching import MatcherConf
from aerialmd.sfm.pairs_from_poses import (
    MAX_PAIR_CANDIDATES,
    PairView,
    axis_angles_deg,
    candidate_pairs,
    model_views,
    observations,
    pair_overlaps,
    pairs_by_overlap,
    pairs_from_poses,
)
from aerialmd.sfm.triangulation import (
    PosesMovedError,
    TriangulationConf,
    assert_poses_unchanged,
    build_aerial_model,
    select_images,
)
from aerialmd.stages.preprocess_ge import preprocess_ge
from tests.helpers import GESBLENDER_ORIGIN, make_data_root, shared_file

SIFT = FeatureConf("sift")
NN = MatcherConf("nn-ratio")
MODEL_FILES = ("features.h5", "matches.h5", "pairs-aerial.txt", "database.db", "aerial/points3D.bin",
               "aerial-txt/points3D.txt")


# --- ground truth helpers ---------------------------------------------------------------------------------------------

def gt_document(paths) -> dict:
    return json.loads((paths.ground_truth_dir / "cameras.json").read_text())


def gt_model(paths) -> pycolmap.Reconstruction:
    """The sample's aerial cameras as a point-less COLMAP model, straight from the ground truth."""
    model = pycolmap.Reconstruction()
    aerial = [im for im in gt_document(paths)["images"] if im["kind"] == "aerial"]
    for ident, image in enumerate(aerial, start=1):
        K = opencv_to_colmap_intrinsics(np.array(image["intrinsics"]))
        model.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=image["width"], height=image["height"],
                                                          params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], camera_id=ident))
        model.add_image_with_trivial_frame(pycolmap.Image(name=image["name"], camera_id=ident, image_id=ident),
                                           cam_from_world_from_cam2world(np.array(image["cam2world"])))
    return model


def gt_overlap(model: pycolmap.Reconstruction, depths: dict[str, np.ndarray], name0: str, name1: str,
               step: int = 4) -> float:
    """Share of image 0's scene pixels that image 1 sees too (GT depth warp with an occlusion test)."""
    image0, image1 = model.find_image_with_name(name0), model.find_image_with_name(name1)
    depth0, depth1 = depths[name0], depths[name1]
    v, u = (a.ravel() for a in np.mgrid[0:depth0.shape[0]:step, 0:depth0.shape[1]:step])
    z = depth0[v, u]
    v, u, z = v[z > 0], u[z > 0], z[z > 0]
    rays = np.column_stack([image0.camera.cam_from_img(np.column_stack([u, v]) + 0.5), np.ones(len(u))])
    world = image0.cam_from_world().inverse() * (rays * z[:, None])
    cam1 = image1.cam_from_world() * world
    xy = image1.camera.img_from_cam(cam1, check_cheirality=False)
    iu, iv = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    inside = (cam1[:, 2] > 0) & (iu >= 0) & (iu < depth1.shape[1]) & (iv >= 0) & (iv < depth1.shape[0])
    seen = np.zeros(len(z), bool)
    seen[inside] = np.abs(depth1[iv[inside], iu[inside]] - cam1[inside, 2]) < 0.01 * cam1[inside, 2]
    return float(seen.mean())


def point_depth_errors(rec: pycolmap.Reconstruction, depth_dir) -> np.ndarray:
    """Relative error of every observation's point depth against the GT z-depth at its projection."""
    errors = []
    for image in rec.images.values():
        _, xyz = observations(rec, image)
        if len(xyz) == 0:
            continue
        depth = read_depth_exr(depth_dir / f"{image.name}.exr")
        cam = image.cam_from_world() * xyz
        xy = image.camera.img_from_cam(cam)
        iu, iv = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
        inside = (iu >= 0) & (iu < depth.shape[1]) & (iv >= 0) & (iv < depth.shape[0])
        truth = depth[iv[inside], iu[inside]]
        on_sky = truth <= 0  # a point seen on the sky is wrong by any amount
        errors.append(np.where(on_sky, np.inf, np.abs(cam[inside, 2] - truth) / np.where(on_sky, 1.0, truth)))
    return np.concatenate(errors)


def assert_no_leftovers(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --- sample scene: the tiny sample's dense arcs, which the SIFT pipeline can triangulate --------------------------------

@pytest.fixture(scope="module")
def orbit_sample(tiny_sample, tmp_path_factory):
    """The tiny sample taken through stage 2; returns (sample paths, stage-2 scene folder)."""
    paths, config = tiny_sample
    root, scene_list = make_data_root(tmp_path_factory.mktemp("orbit_data"), paths, {config.scene_id: ""})
    assert preprocess_ge(root, scene_list, workers=1) == 0
    return paths, root / "data" / config.scene_id


@pytest.fixture(scope="module")
def orbit_model(orbit_sample, tmp_path_factory):
    _, scene_dir = orbit_sample
    work = tmp_path_factory.mktemp("orbit_work")
    rec, stats = build_aerial_model(scene_dir, work, SIFT, NN, progress=False)
    return rec, stats, work


@pytest.mark.slow
def test_sample_points_agree_with_ground_truth_depth(orbit_sample, orbit_model):
    paths, scene_dir = orbit_sample
    rec, stats, work = orbit_model
    errors = point_depth_errors(rec, paths.ground_truth_dir / "depth")
    print(f"orbit sample: {stats['num_points3D']} points, reprojection median {stats['median_reprojection_error_px']:.3f} "
          f"px, depth error median {np.median(errors):.4%}, 90th percentile {np.percentile(errors, 90):.4%}, "
          f"timings {stats['timings']}")
    assert stats["num_points3D"] >= 300 and stats["mean_track_length"] >= 2.0  # two-view tracks are kept
    assert stats["median_reprojection_error_px"] < 0.5
    assert np.median(errors) < 0.005
    assert np.percentile(errors, 90) < 0.035  # two-view tracks: some low-parallax points
    assert_poses_unchanged(pycolmap.Reconstruction(str(scene_dir / SPARSE_GE_DIR)), rec)
    assert_poses_unchanged(gt_model(paths), pycolmap.Reconstruction(str(work / "aerial")))
    for name in MODEL_FILES:
        assert (work / name).is_file(), name
    assert_no_leftovers(work)


@pytest.mark.slow
def test_database_holds_shifted_keypoints_and_verified_pairs(orbit_model):
    rec, stats, work = orbit_model
    pairs = read_pairs(work / "pairs-aerial.txt")
    assert len(pairs) == stats["num_pairs"]
    with pycolmap.Database.open(work / "database.db") as db:
        assert db.num_images() == rec.num_images() and db.num_matched_image_pairs() == len(pairs)
        assert db.num_inlier_matches() == stats["num_verified_matches"] < db.num_matches()
        _, geometries = db.read_two_view_geometries()
        assert {g.config for g in geometries} == {pycolmap.TwoViewGeometryConfiguration.CALIBRATED}
        image = rec.images[1]
        keypoints = read_features(work / "features.h5", image.name).keypoints
        assert np.allclose(db.read_keypoints(1)[:, :2], keypoints_to_colmap(keypoints))


@pytest.mark.slow
def test_depth_from_model_points_matches_ground_truth(orbit_sample, orbit_model):
    paths, _ = orbit_sample
    rec, _, _ = orbit_model
    for view in model_views(rec):
        depth = read_depth_exr(paths.ground_truth_dir / "depth" / f"{view.name}.exr")
        assert view.depth == pytest.approx(np.median(depth[depth > 0]), rel=0.25)


def _shift(rec: pycolmap.Reconstruction, name: str, translation=(0.0, 0.0, 0.0), angle_deg: float = 0.0) -> None:
    """Move an image's frame in place (translation in metres, rotation about the camera's x axis)."""
    frame = rec.frame(rec.find_image_with_name(name).frame_id)
    pose = frame.rig_from_world
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    turn = pycolmap.Rotation3d(np.array([[1, 0, 0], [0, c, -s], [0, s, c]]))
    frame.rig_from_world = pycolmap.Rigid3d(turn * pose.rotation, pose.translation + np.asarray(translation))


def _zoom(rec: pycolmap.Reconstruction, name: str) -> None:
    camera = rec.camera(rec.find_image_with_name(name).camera_id)
    camera.params = np.asarray(camera.params) * np.array([1 + 1e-7, 1, 1, 1])


@pytest.mark.slow
@pytest.mark.parametrize("perturb", [
    lambda rec, name: _shift(rec, name, translation=(0.0, 0.01, 0.0)),
    lambda rec, name: _shift(rec, name, angle_deg=1e-4),
    _zoom,
], ids=["1 cm", "1e-4 deg", "focal 1e-7"])
def test_moved_cameras_raise(orbit_model, perturb):
    rec, _, _ = orbit_model
    moved = pycolmap.Reconstruction(rec)
    name = sorted(image.name for image in rec.images.values())[5]
    perturb(moved, name)
    with pytest.raises(PosesMovedError, match=f"1/{rec.num_images()} known cameras changed.*worst: {name}"):
        assert_poses_unchanged(rec, moved)
    assert_poses_unchanged(rec, pycolmap.Reconstruction(rec))  # an untouched copy passes


@pytest.mark.slow
def test_pose_check_failure_leaves_no_model(orbit_sample, orbit_model, tmp_path, monkeypatch):
    """If COLMAP moved a pose, the step fails naming the image and writes no aerial model."""
    _, scene_dir = orbit_sample
    _, _, work = orbit_model
    for name in ("features.h5", "matches.h5"):  # cached: only database and triangulation rerun
        shutil.copyfile(work / name, tmp_path / name)
    triangulate = pycolmap.triangulate_points
    victim = sorted(p.name for p in (scene_dir / "footage").iterdir())[3]

    def drifting_triangulation(*args, **kwargs):
        rec = triangulate(*args, **kwargs)
        _shift(rec, victim, translation=(0.5, 0.0, 0.0))
        return rec

    monkeypatch.setattr(pycolmap, "triangulate_points", drifting_triangulation)
    with pytest.raises(PosesMovedError, match=victim):
        build_aerial_model(scene_dir, tmp_path, SIFT, NN, progress=False)
    assert not (tmp_path / "aerial").exists() and not (tmp_path / "aerial-txt").exists()
    assert_no_leftovers(tmp_path)


# --- pairs from poses --------------------------------------------------------------------------------------------------

def test_pairs_from_poses_overlap_in_ground_truth(tiny_sample):
    paths, config = tiny_sample
    model = gt_model(paths)
    depths = {im.name: read_depth_exr(paths.ground_truth_dir / "depth" / f"{im.name}.exr") for im in model.images.values()}
    pairs = pairs_from_poses(model, num_neighbors=3)
    assert pairs == sorted(set(pairs)) and all(a < b for a, b in pairs)
    names = sorted(depths)
    everything = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    overlap = {pair: min(gt_overlap(model, depths, *pair), gt_overlap(model, depths, *pair[::-1])) for pair in everything}
    chosen = [overlap[p] for p in pairs]
    assert len(pairs) >= config.num_frames and min(chosen) > 0.25  # measured: 0.29-0.65
    views = {v.name: v for v in model_views(model)}
    angles = axis_angles_deg(np.array([views[n].direction for n in names]))
    far = [(a, b) for (i, a) in enumerate(names) for (j, b) in enumerate(names) if i < j and angles[i, j] > 60]
    assert far and not set(far) & set(pairs)  # opposite sides of the orbit are never paired
    assert min(overlap[p] for p in far) < min(chosen)


def test_pairs_by_overlap_on_a_nadir_strip():
    """Nadir cameras 50 m apart at 100 m height: only close neighbours overlap; output is order-independent."""
    camera = pycolmap.Camera(model="PINHOLE", width=400, height=300, params=[200, 200, 200, 150])
    views = []
    for k in range(8):
        center = np.array([50.0 * k, 0.0, 100.0])
        pose = cam_from_world_from_cam2world(look_at(center, center + np.array([0.0, 1e-3, -100.0])))
        views.append(PairView(f"strip_{k}.jpg", camera, pose, depth=100.0))
    pairs = pairs_by_overlap(views, num_neighbors=5, min_overlap=0.2)
    gaps = {int(b[6]) - int(a[6]) for a, b in pairs}
    assert gaps == {1, 2, 3}  # frame width 200 m: overlap 75%, 50%, 25%; 4 apart is 0%
    assert pairs_by_overlap(views[::-1], num_neighbors=5, min_overlap=0.2) == pairs
    assert all(int(b[6]) - int(a[6]) == 1 for a, b in pairs_by_overlap(views, num_neighbors=1))


def test_pairs_among_pose_neighbours_overlap_nearly_as_much_as_the_best_on_long_orbits():
    """Three orbits of 60 frames around a target: the overlap is computed for each frame's MAX_PAIR_CANDIDATES
    nearest others only (a bounded cost per frame). Every frame still gets partners whose overlaps are, rank by rank,
    within 5 % (of its samples) of its best possible ones among all frames (where most frames see the whole target, so
    many overlaps are near-equal, the frames chosen may differ)."""
    camera = pycolmap.Camera(model="PINHOLE", width=480, height=270, params=[400, 400, 240, 135])
    views = []
    for orbit, (radius, height) in enumerate([(150.0, 120.0), (220.0, 160.0), (110.0, 60.0)]):
        for k in range(60):
            angle = 2 * np.pi * k / 60
            center = np.array([radius * np.cos(angle), radius * np.sin(angle), height])
            target = np.array([30.0 * np.sin(3 * angle), 0.0, 0.0])
            pose = cam_from_world_from_cam2world(look_at(center, target))
            views.append(PairView(f"o{orbit}_{k:02d}.jpg", camera, pose, depth=float(np.linalg.norm(target - center))))
    count = len(views)
    assert len(candidate_pairs(views)) <= count * MAX_PAIR_CANDIDATES < count * (count - 1) // 2
    every = np.column_stack(np.triu_indices(count, 1))
    overlap = np.full((count, count), -1.0)
    overlap[every[:, 0], every[:, 1]] = overlap[every[:, 1], every[:, 0]] = pair_overlaps(views, every)
    overlap[axis_angles_deg(np.array([view.direction for view in views])) > 60.0] = -1.0
    index = {view.name: i for i, view in enumerate(views)}
    partners: dict[int, list[float]] = {i: [] for i in range(count)}
    for a, b in pairs_by_overlap(views, num_neighbors=10):
        partners[index[a]].append(overlap[index[a], index[b]])
        partners[index[b]].append(overlap[index[a], index[b]])
    for i in range(count):
        best = np.sort(overlap[i][overlap[i] >= 0.2])[::-1][:10]
        chosen = np.sort(partners[i])[::-1][:10]
        assert len(chosen) == len(best) and np.all(chosen >= best - 0.05)


# --- real data ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gesblender_aerial_model(tmp_path):
    """The real GESblender render (every 3rd frame, SIFT at 640 px): a sharp model, cameras untouched."""
    source = shared_file("real/ges_gesblender_local")
    downloaded = tmp_path / "downloaded_data" / "GESblender"
    shutil.copytree(source / "footage", downloaded / "footage")
    shutil.copyfile(source / "GESblender.json", downloaded / "GESblender.json")
    save_scene_list(tmp_path / "scenes.npz", {"GESblender": {"0": []}})
    assert preprocess_ge(tmp_path, tmp_path / "scenes.npz", ["GESblender"], origin=GESBLENDER_ORIGIN) == 0
    scene_dir = tmp_path / "data" / "GESblender"
    reference = pycolmap.Reconstruction(str(scene_dir / SPARSE_GE_DIR))
    names = sorted(image.name for image in reference.images.values())[::3]
    rec, stats = build_aerial_model(scene_dir, tmp_path / "work", FeatureConf("sift", max_keypoints=2048, resize_max=640),
                                    NN, image_names=names, conf=TriangulationConf(num_neighbors=5),
                                    progress=False)
    print(f"GESblender: {stats['num_points3D']} points, reprojection median {stats['median_reprojection_error_px']:.3f} "
          f"/ mean {stats['mean_reprojection_error_px']:.3f} px, track {stats['mean_track_length']:.2f}, "
          f"timings {stats['timings']}")
    assert rec.num_images() == len(names) == 21
    assert stats["median_reprojection_error_px"] < 1.0 and stats["mean_reprojection_error_px"] < 1.5
    assert stats["num_points3D"] > 2000 and min(stats["observations_per_image"].values()) > 100
    assert_poses_unchanged(select_images(reference, names), pycolmap.Reconstruction(str(tmp_path / "work" / "aerial")))
    for name in MODEL_FILES:
        assert (tmp_path / "work" / name).is_file(), name
