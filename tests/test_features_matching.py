"""Tests for aerialmd.sfm.features and aerialmd.sfm.matching: hloc formats, resuming, the GES logo mask, configuration names,
and accuracy against the exact epipolar geometry of the tiny sample scene."""

from __future__ import annotations

import dataclasses
import itertools
import json
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aerialmd.formats.hloc_h5 import names_to_pair, read_features, read_matches
from aerialmd.formats.video import extract_frames
from aerialmd.mvs.plane_sweep import single_threaded
from aerialmd.sfm import features as features_module
from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features, outside_attribution, unscale_keypoints
from aerialmd.sfm.matching import CONFIGS, MatcherConf, match_pairs, nn_ratio_match, pairs_to_match, resolve_configs
from aerialmd.stages.localization import LocalizationConf

# Each method must match three pairs of the tiny sample, chosen from its ground truth: the two nearest aerial frames,
# the two nearest ground photos looking the same way, and the aerial frame and ground photo with the most parallel
# optical axes. ALIKED runs downscaled (so keypoints must come back in original pixels) with at most 512 keypoints:
# LightGlue on one CPU thread takes 0.36 s a pair at 512 keypoints, 0.9 s at 1024, 3 s at 2048. Measured on the
# 480 x 270 sample (matches, median Sampson error): SIFT 111/0.24 px, 217/0.07 px, 108/0.12 px; ALIKED+LightGlue
# 199/0.34 px, 181/0.23 px, 102/0.39 px. Swapping the two poses of a pair, or mirroring one camera, fails every case.
METHODS: dict[str, tuple[FeatureConf, MatcherConf]] = {
    "sift": (FeatureConf("sift"), MatcherConf("nn-ratio")),
    "aliked+lightglue": (FeatureConf("aliked", max_keypoints=512, resize_max=320, device="cpu"),
                         MatcherConf("lightglue", device="cpu")),
}
CASES = ("aerial", "ground", "aerial-ground")
MIN_MATCHES = 50
MAX_MEDIAN_SAMPSON_PX = 1.0
MIN_SHARE_UNDER_2PX = 0.6
SAME_DIRECTION_MAX_DEG = 30.0


@dataclasses.dataclass
class Scene:
    """The tiny sample's images (aerial frames extracted from its video) and their exact cameras."""

    images: dict[str, list[ImageInput]]  # kind ('aerial' | 'ground') -> images in cameras.json order
    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (OpenCV intrinsics, cam2world)

    def centre(self, name: str) -> np.ndarray:
        return self.cameras[name][1][:3, 3]

    def axis(self, name: str) -> np.ndarray:
        return self.cameras[name][1][:3, 2]

    def nearest_pair(self, kind: str) -> tuple[str, str]:
        """The two images of a kind with the closest cameras among those looking the same way."""
        min_cos = np.cos(np.radians(SAME_DIRECTION_MAX_DEG))
        pairs = [(a.name, b.name) for a, b in itertools.combinations(self.images[kind], 2)
                 if self.axis(a.name) @ self.axis(b.name) > min_cos]
        return min(pairs, key=lambda pair: float(np.linalg.norm(self.centre(pair[0]) - self.centre(pair[1]))))

    def most_parallel_aerial_ground_pair(self) -> tuple[str, str]:
        """The aerial frame and ground photo whose optical axes are closest to parallel."""
        pairs = itertools.product(self.images["aerial"], self.images["ground"])
        return max(((a.name, g.name) for a, g in pairs), key=lambda pair: self.axis(pair[0]) @ self.axis(pair[1]))

    def test_pairs(self) -> dict[str, tuple[str, str]]:
        return {"aerial": self.nearest_pair("aerial"), "ground": self.nearest_pair("ground"),
                "aerial-ground": self.most_parallel_aerial_ground_pair()}


@dataclasses.dataclass
class Run:
    """Features and matches of one method on the test pairs."""

    feature_conf: FeatureConf
    matcher_conf: MatcherConf
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
    feature_conf, matcher_conf = METHODS[request.param]
    pairs = scene.test_pairs()
    names = sorted({name for pair in pairs.values() for name in pair})
    images = [image for kind in scene.images.values() for image in kind if image.name in names]
    out = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    with pytest.MonkeyPatch.context() as patch, single_threaded(torch.device("cpu")):
        patch.setattr(torch.hub, "download_url_to_file", no_downloads)
        patch.setattr(urllib.request, "urlopen", no_downloads)
        features = extract_features(images, out / "features.h5", feature_conf, progress=False)
        matches = match_pairs(list(pairs.values()), features, out / "matches.h5", matcher_conf, progress=False)
    return Run(feature_conf, matcher_conf, features, matches, pairs, images)


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
    """Keypoints of each match of a pair, in image 0 and image 1."""
    pairs, _ = read_matches(run.matches, name0, name1)
    keypoints0, keypoints1 = (read_features(run.features, name).keypoints for name in (name0, name1))
    return keypoints0[pairs[:, 0]], keypoints1[pairs[:, 1]]


@pytest.mark.parametrize("case", CASES)
def test_matches_agree_with_ground_truth_geometry(run: Run, scene: Scene, case: str):
    name0, name1 = run.pairs[case]
    points0, points1 = matched_points(run, name0, name1)
    errors = sampson_errors(fundamental_matrix(scene.cameras[name0], scene.cameras[name1]), points0, points1)
    quartiles = np.percentile(errors, [25, 50, 75]) if len(errors) else []
    summary = f"{case} {name0} {name1}: {len(errors)} matches, Sampson error quartiles {quartiles} px"
    assert len(errors) >= MIN_MATCHES, summary
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
    with single_threaded(torch.device("cpu")):
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
    conf = FeatureConf("sift", max_keypoints=256, resize_max=240)
    first, second = scene.images["ground"][:2]
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
    monkeypatch.setattr("aerialmd.sfm.matching.NN_BLOCK_ROWS", 7)
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


def test_nn_mutual_check_keeps_the_better_of_two_claims():
    desc0 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.3]]), dim=1)
    desc1 = torch.eye(2)
    assert nn_ratio_match(desc0, desc1, None, mutual_check=False)[0].tolist() == [0, 0]
    assert nn_ratio_match(desc0, desc1, None, mutual_check=True)[0].tolist() == [0, -1]


def test_unscale_keypoints_maps_pixel_centres():
    """A pixel of an image halved in size covers two original pixels: its centre lies between them."""
    np.testing.assert_allclose(unscale_keypoints(np.array([[0.0, 0.0], [9.0, 4.0]]), np.array([0.5, 0.5])),
                               [[0.5, 0.5], [18.5, 8.5]])


def test_resized_extraction_reports_original_pixels(scene: Scene, tmp_path: Path):
    """SIFT keypoints found at half size land on those found at full size (median 0.2-0.25 px measured; a half-pixel
    convention error gives 0.75-0.8 px), and the stored size is the original one."""
    image = scene.images["ground"][0]
    full_path = extract_features([image], tmp_path / "full.h5", FeatureConf("sift"), progress=False)
    full = read_features(full_path, image.name)
    half_conf = FeatureConf("sift", resize_max=max(full.image_size) // 2)
    half = read_features(extract_features([image], tmp_path / "half.h5", half_conf, progress=False), image.name)
    assert half.image_size == full.image_size
    distances = np.linalg.norm(half.keypoints[:, None] - full.keypoints[None], axis=2).min(axis=1)
    assert np.median(distances) < 0.5


def test_resolve_configs_names_supported_combinations():
    assert [c.name for c in resolve_configs("sift")] == ["sift", "nn-ratio"]
    assert [c.name for c in resolve_configs("aliked", "lightglue")] == ["aliked", "lightglue"]
    assert [c.name for c in resolve_configs("aliked+lightglue")] == ["aliked", "lightglue"]
    feature_conf, _ = resolve_configs("sift")
    feature_conf.resize_max = 1024
    assert CONFIGS["sift"][0].resize_max is None  # callers get copies they may change
    with pytest.raises(ValueError, match="unsupported combination.*supported: sift"):
        resolve_configs("sift", "lightglue")
    with pytest.raises(ValueError, match="unknown features 'superpoint'"):
        resolve_configs("superpoint")
    with pytest.raises(ValueError, match="unknown matcher"):
        MatcherConf("superglue")


def test_auto_features_are_aliked_on_cuda_and_sift_on_the_cpu():
    assert [c.name for c in resolve_configs("auto", device="cuda")] == ["aliked", "lightglue"]
    assert [c.name for c in resolve_configs("auto", device="cpu")] == ["sift", "nn-ratio"]
    assert LocalizationConf(device="cuda:1").output_name() == "sfm_aliked+lightglue"
    assert LocalizationConf(device="cpu").output_name() == "sfm_sift+nn-ratio"
    assert LocalizationConf(features="sift", device="cuda").output_name() == "sfm_sift+nn-ratio"
