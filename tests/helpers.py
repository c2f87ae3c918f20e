"""Helpers shared by the test modules: plain functions and constants (the fixtures are in conftest.py, which imports
from here). A test module imports what it needs from here, never from another test module."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from aerialmd.formats.depth import read_depth_exr, write_depth_exr
from aerialmd.geometry.geodesy import SpherePoint
from aerialmd.run.scenes import save_scene_list
from aerialmd.sample_scene.evaluation import load_ground_truth
from aerialmd.sample_scene.textures import draw_random_shapes, fractal_noise
from aerialmd.sfm.registration import GroundPhoto
from aerialmd.stages.dense import DenseConf

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AERIALMD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# The dense stage as the accuracy tests run it (the dense_output fixture): 320 px and 5 sources keep the test run
# short (8, the default, adds about 2.5 minutes to it); bench/bench_dense.py measures the defaults.
DENSE_CONF = DenseConf(backend="torch", max_image_size=320, num_sources=5, device="cpu")

GESBLENDER_ORIGIN = SpherePoint(27.76847182, -82.63311669, 2.446)  # from ../shared/README.md

# The tests' subprocesses run with one OpenMP thread, as the test process does (conftest.py): on 2 cores they run
# beside it, and on a loaded machine two spinning OpenMP threads per process made the dense stage up to 15x slower.
# The results do not depend on it (tests/test_mvs.py::test_depths_do_not_depend_on_the_thread_count).
PIPELINE_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# The dense stage in the tests of the pipeline's mechanics (the pipeline_run fixture, the kill-and-resume and Ray
# tests): small depth maps, one family of planes, 3 sources, no hole filling (about 4x faster than the defaults at
# 120 px); the dense_output fixture (DENSE_CONF) measures the accuracy.
PIPELINE_DENSE = DenseConf(backend="torch", max_image_size=120, num_sources=3, horizontal_planes=False,
                           vertical_plane_azimuths=(), fill_rounds=0, device="cpu")
# run_pipeline.py's flags for it: those that set the work (the Ray test keeps the backend and device choice) ...
MVS_WORK_FLAGS = ["--mvs_max_image_size", str(PIPELINE_DENSE.max_image_size), "--no-mvs_horizontal_planes",
                  "--no-mvs_vertical_planes", "--mvs_num_sources", str(PIPELINE_DENSE.num_sources),
                  "--mvs_fill_rounds", str(PIPELINE_DENSE.fill_rounds)]
# ... and all of them
PIPELINE_MVS_FLAGS = [*MVS_WORK_FLAGS, "--mvs_backend", PIPELINE_DENSE.backend, "--mvs_device", PIPELINE_DENSE.device]

SFM_NAME = "sfm_sift+nn-ratio"  # stage 4a's output folder with its default features and matcher
# ALIKED + LightGlue registration as the localization test runs it: small images and keypoint budget, on the CPU.
ALIKED_OPTIONS = dict(features="aliked", max_keypoints=1024, resize_max=480)  # LocalizationConf fields; small: CPU


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or a skip (with the reason) where the shared folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared reference data not found: {path}")
    return path


# ---------------------------------------------------------------------------------------------------- the sample


def script_module(relative_path: str, name: str | None = None):
    """A script of the repository (not a package module) imported afresh as a module, named `name` (default: its
    file name); its main(argv), when it has one, runs the command line in this process."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preprocess_script(name: str):
    """A datasets_preprocess script as a module."""
    return script_module(f"datasets_preprocess/{name}.py")


def ground_truth(paths) -> dict:
    """The sample's ground truth (cameras.json with numpy arrays) of its SamplePaths."""
    return load_ground_truth(paths.ground_truth_dir)


def make_data_root(tmp_path, sample_paths, scenes: dict[str, str]) -> tuple:
    """A data root whose downloaded_data holds the sample's render under several scene ids; returns (root, scene list)."""
    downloaded = tmp_path / "downloaded_data"
    downloaded.mkdir(parents=True)
    for scene, _ in scenes.items():
        shutil.copyfile(sample_paths.video, downloaded / f"{scene}.mp4")
        data = json.loads(sample_paths.ges_json.read_text())
        data["name"] = scene
        (downloaded / f"{scene}.json").write_text(json.dumps(data))
    scene_list = tmp_path / "scenes.npz"
    save_scene_list(scene_list, {scene: {"0": []} for scene in scenes})
    return tmp_path, scene_list


def pipeline_command(root: Path) -> list[str]:
    """run_pipeline.py on the tiny sample under `root`, as the pipeline tests run it (with PIPELINE_ENV)."""
    return [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "--sample_root", str(root), "--sample_size", "tiny",
            *PIPELINE_MVS_FLAGS]


def copy_localized(localized: tuple, target: Path) -> tuple:
    """A copy of the pipeline run's sample root (every stage's outputs) at `target`, for a test that changes them:
    the `localized` fixture's (stage-4a output folder, ground truth, sample paths, preprocessed MegaDepth folder)
    pointing into the copy."""
    from aerialmd.sample_scene.generate import SamplePaths

    sfm_dir, truth, paths, processed = localized
    shutil.copytree(paths.root, target)
    return (target / sfm_dir.relative_to(paths.root), truth, SamplePaths(target, paths.scene_id),
            target / processed.relative_to(paths.root))


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `folder` by relative path: the session fixtures compare it at the end of the
    session with their state when made, so that a test writing into one fails."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_unchanged(folder: Path, before: dict[str, tuple[int, int]]) -> None:
    after = tree_state(folder)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, (f"a test changed the session fixture's files under {folder} (work on a copy in tmp_path): "
                         f"{changed[:10]}")


def copy_registration(sfm_dir: Path, target: Path) -> Path:
    """A fresh stage-4a output folder (localized model + registration.json) for an independent dense run."""
    target.mkdir(parents=True)
    shutil.copytree(sfm_dir / "localized", target / "localized")
    shutil.copy(sfm_dir / "registration.json", target)
    return target


# ------------------------------------------------------------------------------------------- geometric checks


def load_view(out_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth, intrinsics, cam2world) of an exported image."""
    camera = np.load(out_dir / f"{name}.npz")
    return read_depth_exr(out_dir / f"{name}.exr"), camera["intrinsics"], camera["cam2world"]


def reprojection_errors(view1: tuple, view2: tuple) -> np.ndarray:
    """Relative depth errors |z2(X) - depth2| / depth2 of view 1's valid pixels lifted to 3D and seen inside view 2,
    written independently of the package's projection code. depth2 is interpolated bilinearly in inverse depth (exact
    on a plane) where its four neighbouring pixels are valid; other points are left out."""
    depth1, K1, c2w1 = view1
    depth2, K2, c2w2 = view2
    v, u = np.nonzero(depth1 > 0)
    rays = np.linalg.inv(K1) @ np.stack([u, v, np.ones_like(u)]).astype(float)
    world = c2w1[:3, :3] @ (rays * depth1[v, u]) + c2w1[:3, 3:]
    w2c = np.linalg.inv(c2w2)
    cam = w2c[:3, :3] @ world + w2c[:3, 3:]
    cam = cam[:, cam[2] > 0]
    pix = K2 @ cam
    x, y = pix[0] / pix[2], pix[1] / pix[2]
    h, w = depth2.shape
    inside = (x >= 0) & (x < w - 1) & (y >= 0) & (y < h - 1)
    x, y, z2 = x[inside], y[inside], cam[2, inside]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    corners = np.stack([depth2[y0, x0], depth2[y0, x0 + 1], depth2[y0 + 1, x0], depth2[y0 + 1, x0 + 1]])
    valid = (corners > 0).all(axis=0)
    inverse = 1.0 / np.where(corners > 0, corners, 1.0)
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    d2 = 1.0 / (weights * inverse).sum(axis=0)
    return np.abs(z2[valid] - d2[valid]) / d2[valid]


def depth_errors(points: np.ndarray, K: np.ndarray, cam2world: np.ndarray, depth: np.ndarray,
                 occluded_beyond: float | None = None) -> np.ndarray:
    """Relative depth error of world points (N, 3) seen by a camera: |z - d| / d, d the stored depth where the point
    projects, interpolated bilinearly in inverse depth (exact on planes; nearest-pixel rounding alone costs over 1% on
    grazing ground), for the points in front of it whose four neighbouring pixels all have valid depth; with
    `occluded_beyond`, without the points farther than d by more than that share (hidden from the camera, e.g. by a
    car only its photo has)."""
    K, cam2world = np.asarray(K, np.float64), np.asarray(cam2world, np.float64)
    cam = (np.asarray(points, np.float64) - cam2world[:3, 3]) @ cam2world[:3, :3]
    cam = cam[cam[:, 2] > 0]
    x = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    y = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]
    inside = (x >= 0) & (x <= depth.shape[1] - 1) & (y >= 0) & (y <= depth.shape[0] - 1)
    x, y, z = x[inside], y[inside], cam[inside, 2]
    u0 = np.minimum(np.floor(x).astype(np.int64), depth.shape[1] - 2)
    v0 = np.minimum(np.floor(y).astype(np.int64), depth.shape[0] - 2)
    fx, fy = x - u0, y - v0
    corners = [depth[v0 + dv, u0 + du].astype(np.float64) for dv in (0, 1) for du in (0, 1)]
    weights = [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]
    valid = np.all([c > 0 for c in corners], axis=0)
    stored = 1 / sum(w / np.where(valid, c, 1) for w, c in zip(weights, corners))[valid]
    z = z[valid]
    if occluded_beyond is not None:
        seen = z <= stored * (1 + occluded_beyond)
        z, stored = z[seen], stored[seen]
    return np.abs(z - stored) / stored


# A textured wall rendered into photos with known poses (tests of the registration steps that match photos).
WALL_Z, WALL_HALF, TEXELS = 10.0, 8.0, 768  # the wall: z = 10 in the SfM frame, x and y within +-8
WIDTH, HEIGHT, FOCAL = 480, 360, 400.0


def wall_texture(seed: int) -> np.ndarray:
    """Plaster noise with marks 10 cm to 1 m wide, as the sample's facades have."""
    rng = np.random.default_rng(seed)
    image = 0.5 + 0.5 * fractal_noise(rng, (TEXELS, TEXELS), 96.0, octaves=6)
    texel = 2 * WALL_HALF / TEXELS
    draw_random_shapes(rng, image, 1500, (0.1 / texel, 1.0 / texel), np.full(3, 0.4, np.float32), 0.35)
    return (255 * np.clip(image, 0, 1)).astype(np.uint8)


def render_photo(folder: Path, name: str, texture: np.ndarray, cam2world: np.ndarray,
                 cam2world_sfm: np.ndarray) -> GroundPhoto:
    """The wall seen from `cam2world` (OpenCV axes), written as an image and a depth map; the photo's SfM pose is
    `cam2world_sfm` (the true pose, or a wrong one)."""
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    world2cam = np.linalg.inv(cam2world)
    texel = 2 * WALL_HALF / TEXELS
    wall_from_texel = np.array([[texel, 0, -WALL_HALF], [0, texel, -WALL_HALF], [0, 0, WALL_Z]])
    homography = K @ (world2cam[:3, :3] @ wall_from_texel + np.outer(world2cam[:3, 3], [0, 0, 1]))
    image = cv2.warpPerspective(texture, homography, (WIDTH, HEIGHT), flags=cv2.INTER_AREA)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    rays = np.stack([(u - WIDTH / 2) / FOCAL, (v - HEIGHT / 2) / FOCAL, np.ones_like(u, float)], -1)
    rays = rays @ cam2world[:3, :3].T
    along = (WALL_Z - cam2world[2, 3]) / rays[..., 2]
    hit = cam2world[:3, 3] + along[..., None] * rays
    on_wall = (along > 0) & (np.abs(hit[..., 0]) < WALL_HALF) & (np.abs(hit[..., 1]) < WALL_HALF)
    path = folder / f"{name}.jpg"
    cv2.imwrite(str(path), image * on_wall[..., None].astype(np.uint8))
    write_depth_exr(folder / f"{name}.exr", np.where(on_wall, along, 0.0).astype(np.float32))
    camera = pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT,
                             params=[FOCAL, FOCAL, WIDTH / 2 + 0.5, HEIGHT / 2 + 0.5])
    return GroundPhoto(path.name, path, camera, cam2world_sfm, folder / f"{name}.exr")


def pose(yaw_deg: float, position: list[float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    out[:3, 3] = position
    return out


def rotated(cam2world: np.ndarray, degrees: float) -> np.ndarray:
    out = cam2world.copy()
    out[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * np.array([0.6, 0.8, 0.0])).as_matrix() @ out[:3, :3]
    return out


def shifted(cam2world: np.ndarray, offset: list[float]) -> np.ndarray:
    out = cam2world.copy()
    out[:3, 3] += offset
    return out
