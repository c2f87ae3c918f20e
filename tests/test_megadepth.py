"""MegaDepth preprocessing: intrinsics rule, resizing, and the real pipeline on two real images of scene 0446."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from aerialmd.formats.depth import read_depth_h5, write_depth_h5
from aerialmd.geometry.camera import colmap_to_opencv_intrinsics, matrix_to_rigid, rescale_intrinsics
from aerialmd.layout import MEGADEPTH_SFM_DIR
from aerialmd.run.scenes import save_scene_list
from aerialmd.stages.preprocess_megadepth import (
    dense_dir,
    downscale,
    output_paths,
    output_size,
    preprocess_megadepth,
    preprocess_megadepth_scene,
    sparse_model_dir,
    undistorted_intrinsics,
)
from tests.helpers import REPO_ROOT, SHARED_DATA, load_view

MEGADEPTH_0446 = SHARED_DATA / "real" / "megadepth_0446"
SCENE, SUBSCENE = "0446", "0"
NAME_A, NAME_B = "5122787062_7ef463a806_o.jpg", "8583256543_96562c14f2_o.jpg"  # 1194x1600 portrait, 1242x827 landscape


def simple_radial(f: float, width: int, height: int, cx: float, cy: float, k1: float) -> pycolmap.Camera:
    """A SIMPLE_RADIAL camera (principal point in COLMAP convention)."""
    camera = pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", f, width, height)
    camera.params = [f, cx, cy, k1]
    return camera


def test_undistorted_intrinsics_without_distortion_is_the_camera_in_opencv_convention() -> None:
    camera = simple_radial(1500.0, 1194, 1600, 597.0, 800.0, 0.0)
    K = undistorted_intrinsics(camera, (1194, 1600))
    assert np.allclose(K, [[1500.0, 0, 596.5], [0, 1500.0, 799.5], [0, 0, 1]], rtol=0, atol=1e-9)


@pytest.mark.parametrize("k1", [-0.08, 0.05])
def test_undistorted_view_has_no_invalid_border(k1: float) -> None:
    """alpha=0: every pixel of the undistorted image comes from inside the distorted one; centred principal point."""
    W_cam, H_cam, W, H = 1600, 1200, 1024, 770
    camera = simple_radial(1300.0, W_cam, H_cam, 805.0, 596.0, k1)
    K = undistorted_intrinsics(camera, (W, H))
    assert K[0, 2] == pytest.approx((W - 1) / 2) and K[1, 2] == pytest.approx((H - 1) / 2)
    assert K[0, 0] == pytest.approx(K[1, 1])
    border = [(u, v) for u in np.linspace(0, W - 1, 50) for v in (0, H - 1)]
    border += [(u, v) for v in np.linspace(0, H - 1, 50) for u in (0, W - 1)]
    u, v = np.array(border, dtype=np.float64).T
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    radial = 1 + k1 * (x**2 + y**2)
    f, cx, cy, _ = camera.params
    u_d, v_d = f * x * radial + cx - 0.5, f * y * radial + cy - 0.5  # distorted pixel, OpenCV convention
    slack = 1.0  # OpenCV samples the border on a grid and rounds the inner rectangle
    assert np.all((u_d > -0.5 - slack) & (u_d < W_cam - 0.5 + slack))
    assert np.all((v_d > -0.5 - slack) & (v_d < H_cam - 0.5 + slack))
    assert min(u_d.min() + 0.5, W_cam - 0.5 - u_d.max(), v_d.min() + 0.5, H_cam - 0.5 - v_d.max()) < 2.0  # tight


def test_undistorted_intrinsics_rejects_other_models() -> None:
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 1000.0, 640, 480)
    with pytest.raises(ValueError, match="SIMPLE_RADIAL"):
        undistorted_intrinsics(camera, (640, 480))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1600, 1200), (800, 600)),
        ((1200, 1600), (600, 800)),
        ((1600, 900), (1067, 600)),
        ((1242, 827), (901, 600)),
        ((1194, 1600), (600, 804)),
        ((640, 480), (640, 480)),  # never upscaled
        ((700, 1000), (600, 857)),
        ((480, 640), (480, 640)),
    ],
)
def test_output_size_covers_800x600_portrait_aware(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert output_size(*size) == expected


def test_downscale_keeps_depth_values_and_scales_intrinsics() -> None:
    rng = np.random.default_rng(1)
    depth = rng.choice(np.array([0.0, 1.5, 7.25], np.float32), size=(1200, 1600))
    image = rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    K = np.array([[1000.0, 0, 799.5], [0, 1000.0, 599.5], [0, 0, 1]])
    image_s, depth_s, K_s = downscale(image, depth, K)
    assert image_s.shape == (600, 800, 3) and depth_s.shape == (600, 800) and depth_s.dtype == np.float32
    assert set(np.unique(depth_s)) <= {0.0, 1.5, 7.25}  # nearest neighbour: no blended depths
    assert np.allclose(K_s, [[500.0, 0, 399.5], [0, 500.0, 299.5], [0, 0, 1]])


def sample_cameras() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (undistorted K in COLMAP convention, 4x4 world-to-camera) from the LoFTR scene info of 0446."""
    info = np.load(MEGADEPTH_0446 / "sample.npz", allow_pickle=True)
    index = {Path(p).name: i for i, p in enumerate(info["image_paths"]) if p is not None}
    return {name: (info["intrinsics"][index[name]], info["poses"][index[name]]) for name in (NAME_A, NAME_B)}


def build_megadepth_layout(root: Path) -> None:
    """A MegaDepth folder for scene 0446 holding the two shared images, with a sparse model reproducing their K.

    Each image gets a SIMPLE_RADIAL camera of the dense image's size with k1 = 0, f = the mean of the sample's fx, fy
    (they differ by < 1e-5) and the sample's principal point (W/2, H/2, COLMAP convention): the undistortion rule then
    returns exactly that K (in OpenCV convention). The model is written by pycolmap and, like MegaDepth's, keeps only
    cameras/images/points3D.txt.
    """
    dense = dense_dir(root, SCENE, SUBSCENE)
    (dense / "imgs").mkdir(parents=True)
    (dense / "depths").mkdir()
    model = pycolmap.Reconstruction()
    for image_id, (name, (K, world_to_cam)) in enumerate(sample_cameras().items(), start=1):
        shutil.copyfile(MEGADEPTH_0446 / name, dense / "imgs" / name)
        shutil.copyfile(MEGADEPTH_0446 / f"{Path(name).stem}.h5", dense / "depths" / f"{Path(name).stem}.h5")
        height, width = cv2.imread(str(MEGADEPTH_0446 / name), cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR).shape[:2]
        camera = simple_radial((K[0, 0] + K[1, 1]) / 2, width, height, K[0, 2], K[1, 2], 0.0)
        camera.camera_id = image_id
        model.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=name, camera_id=image_id, image_id=image_id)
        model.add_image_with_trivial_frame(image, matrix_to_rigid(world_to_cam))
    model_dir = sparse_model_dir(root, SCENE, SUBSCENE)
    model_dir.mkdir(parents=True)
    model.write_text(model_dir)
    for extra in ("rigs.txt", "frames.txt"):
        (model_dir / extra).unlink()


@pytest.fixture(scope="module")
def megadepth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MEGADEPTH_0446.is_dir():
        pytest.skip(f"shared reference data not found at {MEGADEPTH_0446}")
    root = tmp_path_factory.mktemp("megadepth")
    build_megadepth_layout(root)
    return root


@pytest.fixture(scope="module")
def processed(megadepth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of the real preprocessing of both images (SfM folder given, as in the original README)."""
    output_dir = tmp_path_factory.mktemp("processed")
    stats = preprocess_megadepth_scene(
        megadepth_root / MEGADEPTH_SFM_DIR, SCENE, SUBSCENE, [NAME_A, NAME_B], output_dir, workers=2, overwrite=False
    )
    assert (stats.written, stats.skipped, stats.failed) == (2, 0, [])
    return output_dir / SCENE / SUBSCENE


def depth_agreement(view_a: tuple, view_b: tuple) -> tuple[float, int]:
    """Median relative depth error of A's valid depths projected into B, and the number of pixels compared.

    Pixels are OpenCV-convention (integer coordinates at pixel centres), as the exported intrinsics are.
    """
    depth_a, K_a, cam2world_a = view_a
    depth_b, K_b, cam2world_b = view_b
    v, u = np.nonzero(depth_a > 0)
    rays = np.linalg.inv(K_a) @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    world = cam2world_a[:3, :3] @ (rays * depth_a[v, u]) + cam2world_a[:3, 3:]
    world_to_b = np.linalg.inv(cam2world_b)
    in_b = world_to_b[:3, :3] @ world + world_to_b[:3, 3:]
    pix = K_b @ in_b
    z = pix[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ub, vb = np.round(pix[0] / z), np.round(pix[1] / z)
    height, width = depth_b.shape
    inside = (z > 0) & (ub >= 0) & (ub < width) & (vb >= 0) & (vb < height)
    observed = depth_b[vb[inside].astype(int), ub[inside].astype(int)]
    valid = observed > 0
    rel = np.abs(z[inside][valid] - observed[valid]) / observed[valid]
    return (float(np.median(rel)) if rel.size else np.inf), int(rel.size)


def test_raw_sample_depths_agree() -> None:
    """The reference itself: raw depths with the sample's K (COLMAP convention, converted) and poses."""
    if not MEGADEPTH_0446.is_dir():
        pytest.skip(f"shared reference data not found at {MEGADEPTH_0446}")
    views = {
        name: (read_depth_h5(MEGADEPTH_0446 / f"{Path(name).stem}.h5"), colmap_to_opencv_intrinsics(K), np.linalg.inv(P))
        for name, (K, P) in sample_cameras().items()
    }
    median, count = depth_agreement(views[NAME_A], views[NAME_B])
    assert count > 20_000 and median < 1e-3


def test_outputs_have_expected_sizes_and_cameras(processed: Path) -> None:
    for name, (K, world_to_cam) in sample_cameras().items():
        assert sorted(p.name for p in processed.glob(f"{name}.*")) == sorted(p.name for p in output_paths(processed, name))
        depth, intrinsics, cam2world = load_view(processed, name)
        image = cv2.imread(str(processed / f"{name}.jpg"), cv2.IMREAD_UNCHANGED)
        height, width = image.shape[:2]
        assert image.ndim == 3 and depth.shape == (height, width)
        assert (width, height) == {NAME_A: (600, 804), NAME_B: (901, 600)}[name]
        source_h, source_w = cv2.imread(str(MEGADEPTH_0446 / name), cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR).shape[:2]
        expected_K = rescale_intrinsics(colmap_to_opencv_intrinsics(K), width / source_w, height / source_h)
        assert np.allclose(intrinsics, expected_K, rtol=1e-5)
        assert np.allclose(cam2world, np.linalg.inv(world_to_cam), atol=1e-6)
    assert list(processed.glob(".*")) == []  # no temporary files


def test_exported_depths_agree_between_views(processed: Path) -> None:
    view_a, view_b = load_view(processed, NAME_A), load_view(processed, NAME_B)
    for first, second in ((view_a, view_b), (view_b, view_a)):
        median, count = depth_agreement(first, second)
        assert count > 5_000 and median < 2e-3  # measured ~2.2e-4 (raw data: ~2e-4)


def test_resumable_then_overwrite(megadepth_root: Path, tmp_path: Path) -> None:
    args = (megadepth_root, SCENE, SUBSCENE, [NAME_A, NAME_B], tmp_path)
    first = preprocess_megadepth_scene(*args, workers=2, overwrite=False)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    second = preprocess_megadepth_scene(*args, workers=2, overwrite=False)
    assert (first.written, second.written, second.skipped) == (2, 0, 2)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == stamps
    third = preprocess_megadepth_scene(*args, workers=2, overwrite=True)
    assert (third.written, third.skipped) == (2, 0)


def break_missing_depth(dense: Path) -> None:
    (dense / "depths" / f"{Path(NAME_B).stem}.h5").unlink()


def break_corrupt_h5(dense: Path) -> None:
    (dense / "depths" / f"{Path(NAME_B).stem}.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)


def break_size_mismatch(dense: Path) -> None:
    write_depth_h5(dense / "depths" / f"{Path(NAME_B).stem}.h5", np.ones((600, 900), np.float32))


def break_missing_image(dense: Path) -> None:
    (dense / "imgs" / NAME_B).unlink()


def break_corrupt_image(dense: Path) -> None:
    (dense / "imgs" / NAME_B).write_bytes(b"\xff\xd8 truncated")


@pytest.mark.parametrize(
    ("break_b", "problem"),
    [
        (break_missing_depth, f"{Path(NAME_B).stem}.h5: depth file not found"),
        (break_corrupt_h5, f"{Path(NAME_B).stem}.h5: not a readable HDF5"),
        (break_size_mismatch, "image is 1242x827 but depth .* is 900x600"),
        (break_missing_image, f"{NAME_B}: image not found"),
        (break_corrupt_image, f"{NAME_B}: not a readable image"),
    ],
)
def test_bad_image_is_reported_and_others_written(megadepth_root: Path, tmp_path: Path, break_b, problem: str) -> None:
    root = tmp_path / "md"
    shutil.copytree(megadepth_root, root)
    break_b(dense_dir(root, SCENE, SUBSCENE))
    out = tmp_path / "out"
    stats = preprocess_megadepth_scene(root, SCENE, SUBSCENE, [NAME_A, NAME_B], out, workers=2, overwrite=False)
    assert (stats.written, stats.skipped, len(stats.failed)) == (1, 0, 1)
    assert stats.failed[0].startswith(NAME_B) and re.search(problem, stats.failed[0])
    files = sorted(p.name for p in (out / SCENE / SUBSCENE).iterdir())
    assert files == sorted(p.name for p in output_paths(out / SCENE / SUBSCENE, NAME_A))


def test_image_missing_from_sparse_model_is_reported(megadepth_root: Path, tmp_path: Path) -> None:
    stats = preprocess_megadepth_scene(
        megadepth_root, SCENE, SUBSCENE, ["nope.jpg", NAME_B], tmp_path, workers=1, overwrite=False
    )
    assert (stats.written, len(stats.failed)) == (1, 1)
    assert stats.failed[0].startswith("nope.jpg") and "sparse model" in stats.failed[0]


def test_run_exit_codes_and_scene_failures(megadepth_root: Path, tmp_path: Path, capsys) -> None:
    scene_list = tmp_path / "list.npz"
    save_scene_list(scene_list, {SCENE: {SUBSCENE: [NAME_A, NAME_B]}, "9999": {"0": [NAME_A]}})
    assert preprocess_megadepth(megadepth_root, scene_list, tmp_path / "out", scenes=[SCENE], workers=2) == 0
    assert preprocess_megadepth(megadepth_root, scene_list, tmp_path / "out", workers=2) == 1  # 9999: no model
    assert "failed 9999" in capsys.readouterr().out
    save_scene_list(scene_list, {SCENE: {SUBSCENE: ["nope.jpg"]}})
    assert preprocess_megadepth(megadepth_root, scene_list, tmp_path / "out2", workers=2) == 1  # all images failed


def test_script_main(megadepth_root: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "datasets_preprocess"))
    try:
        import preprocess_megadepth as script
    finally:
        sys.path.remove(str(REPO_ROOT / "datasets_preprocess"))
    scene_list = tmp_path / "list.npz"
    save_scene_list(scene_list, {SCENE: {SUBSCENE: [NAME_B]}})
    argv = ["--megadepth_dir", str(megadepth_root / MEGADEPTH_SFM_DIR), "--megadepth_image_list", str(scene_list)]
    assert script.main([*argv, "--output_dir", str(tmp_path / "out"), "--workers", "1"]) == 0
    assert (tmp_path / "out" / SCENE / SUBSCENE / f"{NAME_B}.npz").is_file()
    assert script.main([*argv, "--output_dir", str(tmp_path / "out"), "--scenes", "1234"]) == 2  # unknown scene
    assert script.main(["--megadepth_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 2  # not MegaDepth
