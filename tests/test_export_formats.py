"""The export's formats for other trainers (aerialmd/stages/export_formats.py), read back by small readers written
from each format's published description (LoFTR's and D2-Net's MegaDepth scene info; the covisibility file's
documented keys), never with the package's readers, on the tiny sample's exact dense model: images, depths and poses
equal the truth, and pixels lifted with a view's depth and pose land on its partner's depth."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import OpenEXR
import pytest

from aerialmd.stages.export import DEFAULT_MAX_DEPTH
from tests.helpers import preprocess_script, reprojection_errors

KINDS = ("aerial-aerial", "aerial-ground", "ground-ground")
AGREEMENT = 0.02  # make_pairs' relative depth tolerance, as the formats' descriptions state it


@pytest.fixture(scope="module")
def dense_scene(sample_dense_model, sample_truth):
    """(scene id, dense model folder, ground truth by dense-model name) of the sample's exact dense model."""
    _, scene, dense = sample_dense_model
    return scene, dense, sample_truth


@pytest.fixture(scope="module")
def exported_formats(sample_dense_model, sample_pairs_path, tmp_path_factory) -> Path:
    """The exporter's command line with every format, on make_pairs' pair file of the exact dense model."""
    out = tmp_path_factory.mktemp("export_formats")
    argv = ["--megadepth_aerial_dir", str(sample_dense_model[0]), "--precomputed_pairs", str(sample_pairs_path),
            "--output_dir", str(out), "--workers", "1", "--format", "megadepth_scene_info", "covisibility"]
    assert preprocess_script("preprocess_aerialmegadepth").main(argv) == 0
    return out


def read_exr_depth(path: Path) -> np.ndarray:
    """A single-channel float32 EXR (channel Y) with the OpenEXR package."""
    with OpenEXR.File(str(path)) as exr:
        return np.asarray(exr.channels()["Y"].pixels, np.float32)


def kind_of(truth: dict, a: str, b: str) -> str:
    aerial = (truth[a]["kind"] == "aerial") + (truth[b]["kind"] == "aerial")
    return KINDS[2 - aerial]


def independent_overlap(source: tuple, target: tuple) -> float:
    """The share of the source's depth pixels the target sees with a depth within AGREEMENT (tests.helpers'
    reprojection, full resolution)."""
    errors = reprojection_errors(source, target)
    return float((errors <= AGREEMENT).sum() / (source[0] > 0).sum())


def expected_depth(truth: dict, name: str) -> np.ndarray:
    return np.where(truth[name]["depth"] <= DEFAULT_MAX_DEPTH, truth[name]["depth"], 0).astype(np.float32)


def test_megadepth_scene_info_as_loftr_and_d2net_read_it(dense_scene, exported_formats) -> None:
    """LoFTR's reader: image_paths and depth_paths relative to the root (depth: HDF5 dataset 'depth'), intrinsics
    (COLMAP's pixel centres: the top-left pixel's centre is (0.5, 0.5)) and world-to-camera poses, pair_infos
    ((i, j), score, central_matches); D2-Net's overlap_matrix (directed, -1 on the diagonal), scale_ratio_matrix and
    angles."""
    scene, dense, truth = dense_scene
    info = np.load(exported_formats / "scene_info" / f"{scene}.npz", allow_pickle=True)
    names, loftr_views = [], []  # per image: (depth, K in OpenCV's convention, identity) as LoFTR lifts them
    for k, (image_path, depth_path) in enumerate(zip(info["image_paths"], info["depth_paths"])):
        name = Path(image_path).name[: -len(".jpg")]
        names.append(name)
        image = cv2.imread(str(exported_formats / image_path))
        np.testing.assert_array_equal(image, cv2.imread(str(dense / "images" / name)))
        with h5py.File(exported_formats / depth_path, "r") as f:
            depth = np.asarray(f["depth"])
        np.testing.assert_array_equal(depth, expected_depth(truth, name))
        K_opencv = info["intrinsics"][k] - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
        np.testing.assert_allclose(K_opencv, truth[name]["intrinsics"], atol=1e-9)
        np.testing.assert_allclose(np.linalg.inv(info["poses"][k]), truth[name]["cam2world"], atol=1e-9)
        loftr_views.append((depth, K_opencv, np.eye(4)))
    assert sorted(names) == sorted(truth)
    overlap, scale_ratio, angles = info["overlap_matrix"], info["scale_ratio_matrix"], info["angles"]
    assert (np.diag(overlap) == -1).all() and (np.diag(scale_ratio) == -1).all()
    checked = dict.fromkeys(KINDS, 0)
    for (i, j), score, central_matches in sorted(info["pair_infos"], key=lambda p: -p[1]):
        kind = kind_of(truth, names[i], names[j])
        assert central_matches.shape == (0, 2)
        if checked[kind] >= 3:
            continue
        for a, b in ((i, j), (j, i)):
            # LoFTR: points lifted with depth0 and K0 in camera 0, moved by T_0to1 = T1 inv(T0), land on depth1
            T_0to1 = info["poses"][b] @ np.linalg.inv(info["poses"][a])
            source, target = loftr_views[a], (*loftr_views[b][:2], np.linalg.inv(T_0to1))
            errors = reprojection_errors(source, target)
            assert np.median(errors[errors <= AGREEMENT]) < 0.01, (kind, names[a], names[b])
            # computed at make_pairs' scoring resolution: up to 0.06 below the full-resolution share on aerial-ground
            assert abs(overlap[a, b] - independent_overlap(source, target)) < 0.06, (kind, names[a], names[b])
        views = [truth[names[k]] for k in (i, j)]
        axes = [view["cam2world"][:3, 2] for view in views]
        assert angles[i, j] == pytest.approx(np.degrees(np.arccos(np.clip(axes[0] @ axes[1], -1, 1))), abs=1e-6)
        assert scale_ratio[i, j] >= 1.0
        assert min(overlap[i, j], overlap[j, i]) == pytest.approx(score, abs=0.05)  # the pair file's score
        checked[kind] += 1
    assert min(checked.values()) >= 1, checked


def test_scale_ratio_is_the_footprint_ratio_of_a_zoomed_view(dense_scene, exported_formats) -> None:
    """Two views of the same surface: the scale ratio is the ratio of their pixel footprints (depth / focal length)
    measured from the truth, within 5 %."""
    scene, _, truth = dense_scene
    info = np.load(exported_formats / "scene_info" / f"{scene}.npz", allow_pickle=True)
    names = [Path(p).name[: -len(".jpg")] for p in info["image_paths"]]
    checked = 0
    for (i, j), _, _ in info["pair_infos"]:
        a, b = names[i], names[j]
        depth_a, depth_b = expected_depth(truth, a), expected_depth(truth, b)
        K_a, K_b, c2w_a, c2w_b = (truth[a]["intrinsics"], truth[b]["intrinsics"], truth[a]["cam2world"],
                                  truth[b]["cam2world"])
        v, u = np.nonzero(depth_a > 0)
        world = c2w_a[:3, :3] @ (np.linalg.inv(K_a) @ np.stack([u, v, np.ones_like(u)]) * depth_a[v, u]) + c2w_a[:3, 3:]
        cam_b = np.linalg.inv(c2w_b)[:3, :3] @ world + np.linalg.inv(c2w_b)[:3, 3:]
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = (K_b @ cam_b)[:2] / cam_b[2]
        inside = (cam_b[2] > 0) & (x >= 0) & (x <= depth_b.shape[1] - 1) & (y >= 0) & (y <= depth_b.shape[0] - 1)
        stored = np.zeros(len(x))
        stored[inside] = depth_b[np.round(y[inside]).astype(int), np.round(x[inside]).astype(int)]
        agree = inside & (stored > 0) & (np.abs(cam_b[2] - stored) <= AGREEMENT * stored)
        if agree.sum() < 1000:
            continue
        focal_a, focal_b = (K_a[0, 0] + K_a[1, 1]) / 2, (K_b[0, 0] + K_b[1, 1]) / 2
        footprint = (depth_a[v, u][agree] / focal_a) / (cam_b[2, agree] / focal_b)
        expected = np.median(footprint)
        assert info["scale_ratio_matrix"][i, j] == pytest.approx(max(expected, 1 / expected), rel=0.05), (a, b)
        checked += 1
        if checked == 5:
            break
    assert checked >= 3


def test_covisibility_files_read_back_the_truth(dense_scene, exported_formats) -> None:
    scene, _, truth = dense_scene
    data = np.load(exported_formats / "covisibility" / f"{scene}.npz")  # no pickles
    names, views = list(data["images"]), {}
    assert sorted(names) == sorted(truth)
    for k, name in enumerate(names):
        assert str(data["image_paths"][k]) == f"{scene}/{name}.jpg"
        assert cv2.imread(str(exported_formats / data["image_paths"][k])).shape[:2] == truth[name]["depth"].shape
        views[name] = (read_exr_depth(exported_formats / data["depth_paths"][k]), data["intrinsics"][k],
                       data["cam2world"][k])
        np.testing.assert_array_equal(views[name][0], expected_depth(truth, name))
        np.testing.assert_allclose(data["intrinsics"][k], truth[name]["intrinsics"], atol=1e-9)
        np.testing.assert_allclose(data["cam2world"][k], truth[name]["cam2world"], atol=1e-9)
        assert data["is_aerial"][k] == (truth[name]["kind"] == "aerial")
    covisibility = data["covisibility"]
    np.testing.assert_array_equal(covisibility, covisibility.T)
    assert (np.diag(covisibility) == 1).all()
    checked = dict.fromkeys(KINDS, 0)
    order = np.argsort(-covisibility, axis=None)
    for flat in order[: len(order) // 2]:
        i, j = divmod(int(flat), len(names))
        kind = kind_of(truth, names[i], names[j])
        if i >= j or checked[kind] >= 3:
            continue
        source, target = views[names[i]], views[names[j]]
        expected = min(independent_overlap(source, target), independent_overlap(target, source))
        assert covisibility[i, j] == pytest.approx(expected, abs=0.06), (kind, names[i], names[j])  # see above
        errors = reprojection_errors(source, target)
        assert np.median(errors[errors <= AGREEMENT]) < 0.01
        checked[kind] += 1
    assert min(checked.values()) >= 1, checked
