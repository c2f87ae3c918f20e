"""Tests for aerialmd.features and aerialmd.matching: hloc formats, resuming, the GES logo mask, configuration names,
and accuracy against the exact epipolar geometry of the tiny sample scene."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aerialmd import features as features_module
from aerialmd.features import FeatureConf, ImageInput, extract_features, outside_attribution, unscale_keypoints
from aerialmd.h5io import names_to_pair, read_features, read_matches
from aerialmd.matching import (CONFIGS, MatcherConf, match_pairs, nn_ratio_match, pairs_to_match, resolve_configs)
from aerialmd.video import extract_frames

# Pairs of the tiny sample (aerial frame numbers, ground photo indices in cameras.json order) that each method matches
# well, chosen from all 91 pairs. Its aerial frames are 72 degrees apart on their orbits, so even the closest frames
# are wide-baseline. Measured (matches, median Sampson error, share under 2 px):
#   sift+nn-ratio     aerial 6-8: 31, 0.28 px, 90%   ground 1-3: 29, 0.23 px, 83%   aerial 2-ground 1: 33, 0.14 px, 88%
#   aliked+lightglue  aerial 3-9: 54, 0.70 px, 89%   ground 2-3: 140, 0.51 px, 99%  aerial 2-ground 1: 145, 0.42 px, 97%
# ALIKED is not rotation invariant, so the aerial pair SIFT matches (seen from headings 144 degrees apart) defeats it.
# ALIKED is capped at 1024 keypoints: LightGlue on this CPU takes 0.35 s a pair at ~1000 keypoints, seconds at ~2000.
Pair = tuple[tuple[str, int], tuple[str, int]]
METHODS: dict[str, tuple[FeatureConf, MatcherConf, int, dict[str, Pair]]] = {
    "sift": (FeatureConf("sift"), MatcherConf("nn-ratio"), 20,
             {"aerial": (("aerial", 6), ("aerial", 8)), "ground": (("ground", 1), ("ground", 3)),
              "aerial-ground": (("aerial", 2), ("ground", 1))}),
    "aliked+lightglue": (FeatureConf("aliked", max_keypoints=1024, resize_max=640, device="cpu"),
                         MatcherConf("lightglue", device="cpu"), 40,
                         {"aerial": (("aerial", 3), ("aerial", 9)), "ground": (("ground", 2), ("ground", 3)),
                          "aerial-ground": (("aerial", 2), ("ground", 1))}),
}
MAX_MEDIAN_SAMPSON_PX = 1.0
MIN_SHARE_UNDER_2PX = 0.6


@dataclasses.dataclass
class Scene:
    """The tiny sample's images (aerial frames extracted from its video) and their exact cameras."""

    images: dict[str, list[ImageInput]]  # kind ('aerial' | 'ground') -> images in cameras.json order
    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (OpenCV intrinsics, cam2world)

    def image(self, kind: str, index: int) -> ImageInput:
        return self.images[kind][index]


@dataclasses.dataclass
class Run:
    """Features and matches of one method on its test pairs."""

    feature_conf: FeatureConf
    matcher_conf: MatcherConf
    min_matches: int
    features: Path
    matches: Path
    pairs: dict[str, tuple[str, str]]  # case -> image names
    images: list[ImageInput]


@pytest.fixture(scope="module")
def scene(tiny_sample, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    paths, config = tiny_sample
    frames_dir = tmp_path_factory.mktemp("frames")
    extract_frames(paths.video, frames_dir, config.scene_id, progress=False)
    truth = json.loads((paths.ground_truth_dir / "cameras.json").read_text())
    folders = {"aerial": frames_dir, "ground": paths.dense_dir / "imgs"}
    images: dict[str, list[ImageInput]] = {"aerial": [], "ground": []}
    for entry in truth["images"]:
        images[entry["kind"]].append(ImageInput(entry["name"], folders[entry["kind"]] / entry["name"],
                                                mask_attribution=entry["kind"] == "aerial"))
    cameras = {e["name"]: (np.array(e["intrinsics"]), np.array(e["cam2world"])) for e in truth["images"]}
    return Scene(images, cameras)


def no_downloads(*args, **kwargs):
    raise AssertionError(f"attempted download: {args}")


@pytest.fixture(scope="module", params=list(METHODS))
def run(request: pytest.FixtureRequest, scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Extract and match one method's test pairs, with every download path blocked."""
    feature_conf, matcher_conf, min_matches, cases = METHODS[request.param]
    pairs = {case: tuple(scene.image(*side).name for side in pair) for case, pair in cases.items()}
    names = sorted({name for pair in pairs.values() for name in pair})
    images = [image for kind in scene.images.values() for image in kind if image.name in names]
    out = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "download_url_to_file", no_downloads)
        patch.setattr(urllib.request, "urlopen", no_downloads)
        features = extract_features(images, out / "features.h5", feature_conf, progress=False)
        matches = match_pairs(list(pairs.values()), features, out / "matches.h5", matcher_conf, progress=False)
    return Run(feature_conf, matcher_conf, min_matches, features, matches, pairs, images)


def fundamental_matrix(camera0: tuple[np.ndarray, np.ndarray], camera1: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """F with x1^T F x0 = 0 for OpenCV-convention pixels, from intrinsics and cam2world poses."""
    (K0, cam2world0), (K1, cam2world1) = camera0, camera1
    cam1_from_cam0 = np.linalg.inv(cam2world1) @ cam2world0
    R, t = cam1_from_cam0[:3, :3], cam1_from_cam0[:3, 3]
    t_cross = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(K1).T @ t_cross @ R @ np.linalg.inv(K0)


def sampson_errors(F: np.ndarray, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of each correspondence to the epipolar geometry F."""
    x0 = np.column_stack([points0, np.ones(len(points0))])
    x1 = np.column_stack([points1, np.ones(len(points1))])
    Fx0, Ftx1 = x0 @ F.T, x1 @ F
    numerator = np.sum(x1 * Fx0, axis=1) ** 2
    return np.sqrt(numerator / (Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2))


def matched_points(run: Run, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    pairs, _ = read_matches(run.matches, name0, name1)
    return read_features(run.features, name0).keypoints[pairs[:, 0]], read_features(run.features, name1).keypoints[pairs[:, 1]]


@pytest.mark.parametrize("case", ["aerial", "ground", "aerial-ground"])
def test_matches_agree_with_ground_truth_geometry(run: Run, scene: Scene, case: str):
    name0, name1 = run.pairs[case]
    points0, points1 = matched_points(run, name0, name1)
    errors = sampson_errors(fundamental_matrix(scene.cameras[name0], scene.cameras[name1]), points0, points1)
    summary = f"{case} {name0} {name1}: {len(errors)} matches, errors {np.percentile(errors, [25, 50, 75]) if len(errors) else []}"
    assert len(errors) >= run.min_matches, summary
    assert np.median(errors) < MAX_MEDIAN_SAMPSON_PX, summary
    assert np.mean(errors < 2.0) >= MIN_SHARE_UNDER_2PX, summary


def test_features_h5_follows_hloc(run: Run):
    descriptor_dtype = {"sift": np.uint8, "aliked": np.float16}[run.feature_conf.name]
    with h5py.File(run.features, "r") as f:
        assert sorted(f) == sorted(image.name for image in run.images)
        for image in run.images:
            group = f[image.name]
            assert set(group) == {"keypoints", "descriptors", "scores", "image_size"}
            keypoints, descriptors, scores = group["keypoints"][()], group["descriptors"][()], group["scores"][()]
            width, height = group["image_size"][()]
            expected_size = features_module.read_image(image.path, grayscale=True).shape[::-1]
            assert (width, height) == expected_size
            assert keypoints.dtype == np.float32 and keypoints.ndim == 2 and keypoints.shape[1] == 2
            assert len(keypoints) > 50
            assert descriptors.shape == (128, len(keypoints))
            assert descriptors.dtype == descriptor_dtype
            assert scores.dtype == np.float32 and scores.shape == (len(keypoints),)
            assert np.all(keypoints >= -0.5) and np.all(keypoints <= [width - 0.5, height - 0.5])


def test_matches_h5_follows_hloc(run: Run):
    with h5py.File(run.matches, "r") as f:
        for name0, name1 in run.pairs.values():
            group = f[names_to_pair(name0, name1)]
            matches0, scores0 = group["matches0"][()], group["matching_scores0"][()]
            n0 = len(read_features(run.features, name0).keypoints)
            n1 = len(read_features(run.features, name1).keypoints)
            assert matches0.dtype == np.int32 and matches0.shape == (n0,)
            assert scores0.dtype == np.float32 and scores0.shape == (n0,)
            valid = matches0[matches0 > -1]
            assert len(valid) and valid.max() < n1 and len(np.unique(valid)) == len(valid)  # one-to-one
            assert np.all(scores0[matches0 > -1] > 0)


def test_attribution_box_has_no_keypoints(run: Run, scene: Scene, tmp_path: Path):
    """Masked frames keep no keypoint in the logo, while the same frame unmasked does have some there."""
    aerial = [image for image in run.images if image.mask_attribution]
    assert aerial
    for image in aerial:
        features = read_features(run.features, image.name)
        assert outside_attribution(features.keypoints, features.image_size).all()
    unmasked = extract_features([dataclasses.replace(aerial[0], mask_attribution=False)], tmp_path / "f.h5",
                                run.feature_conf, progress=False)
    features = read_features(unmasked, aerial[0].name)
    assert not outside_attribution(features.keypoints, features.image_size).all()


def test_extraction_resumes_and_overwrites(scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    extracted: list[str] = []
    extract_one = features_module.extract_one

    def counting_extract_one(detect, image: ImageInput, *args):
        extracted.append(image.name)
        return extract_one(detect, image, *args)

    monkeypatch.setattr(features_module, "extract_one", counting_extract_one)
    conf = FeatureConf("sift", max_keypoints=256)
    first, second = scene.image("ground", 0), scene.image("ground", 1)
    path = extract_features([first], tmp_path / "features.h5", conf, progress=False)
    before = read_features(path, first.name)
    extract_features([first, second], path, conf, progress=False)
    assert extracted == [first.name, second.name]
    np.testing.assert_array_equal(read_features(path, first.name).keypoints, before.keypoints)
    extract_features([first, second], path, conf, overwrite=True, progress=False)
    assert extracted == [first.name, second.name, first.name, second.name]


def test_matching_resumes_in_either_order(run: Run, tmp_path: Path):
    name0, name1 = run.pairs["ground"]
    matches = tmp_path / "matches.h5"
    matches.write_bytes(run.matches.read_bytes())
    match_pairs([(name1, name0)], run.features, matches, run.matcher_conf, progress=False)
    assert matches.read_bytes() == run.matches.read_bytes()


def test_pairs_to_match_skips_stored_and_repeated_pairs():
    done = {names_to_pair("a", "b")}
    assert pairs_to_match([("b", "a"), ("a", "b"), ("c", "d"), ("d", "c"), ("c", "d")], done) == [("c", "d")]


def test_nn_ratio_finds_mutual_unambiguous_neighbours(monkeypatch: pytest.MonkeyPatch):
    """A permuted noisy copy is matched back across several similarity blocks; a near-duplicate is rejected."""
    monkeypatch.setattr("aerialmd.matching.NN_BLOCK_ROWS", 7)
    generator = torch.Generator().manual_seed(0)
    desc1 = torch.nn.functional.normalize(torch.randn(40, 128, generator=generator), dim=1)
    permutation = torch.randperm(40, generator=generator)
    desc0 = torch.nn.functional.normalize(desc1[permutation] + 0.05 * torch.randn(40, 128, generator=generator), dim=1)
    desc1 = torch.cat([desc1, torch.nn.functional.normalize(desc1[permutation[0]] + 1e-3, dim=0)[None]])
    matches0, scores0 = nn_ratio_match(desc0, desc1, ratio_threshold=0.8, mutual_check=True)
    assert matches0[0] == -1 and scores0[0] == 0  # two equally good neighbours
    assert torch.equal(matches0[1:], permutation[1:])
    assert torch.all(scores0[1:] > 0.8)
    assert nn_ratio_match(desc0, desc1[:0], 0.8, True)[0].eq(-1).all()


def test_unscale_keypoints_maps_pixel_centres():
    """A pixel of an image halved in size covers two original pixels: its centre lies between them."""
    np.testing.assert_allclose(unscale_keypoints(np.array([[0.0, 0.0], [9.0, 4.0]]), np.array([0.5, 0.5])),
                               [[0.5, 0.5], [18.5, 8.5]])


def test_resized_extraction_reports_original_pixels(scene: Scene, tmp_path: Path):
    """Keypoints found at half size spread over the image as those found at full size do, with the full image size."""
    image = scene.image("ground", 2)
    full, half = (read_features(extract_features([image], tmp_path / f"{size}.h5", FeatureConf("sift", resize_max=size),
                                                 progress=False), image.name) for size in (None, 160))
    assert half.image_size == full.image_size and max(full.image_size) == 320
    np.testing.assert_allclose(np.percentile(half.keypoints, [10, 50, 90], axis=0),
                               np.percentile(full.keypoints, [10, 50, 90], axis=0), atol=0.05 * 320)


def test_resolve_configs_names_supported_combinations():
    assert [c.name for c in resolve_configs("sift")] == ["sift", "nn-ratio"]
    assert [c.name for c in resolve_configs("aliked", "lightglue")] == ["aliked", "lightglue"]
    assert [c.name for c in resolve_configs("aliked+lightglue")] == ["aliked", "lightglue"]
    assert resolve_configs("sift") is not CONFIGS["sift"]
    with pytest.raises(ValueError, match="unsupported combination.*supported: sift"):
        resolve_configs("sift", "lightglue")
    with pytest.raises(ValueError, match="unknown features 'superpoint'"):
        resolve_configs("superpoint")
    with pytest.raises(ValueError, match="unknown matcher"):
        MatcherConf("superglue")
