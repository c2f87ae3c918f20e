"""The AerialMegaDepth dataloader (aerialmd/training/dataset.py, misc/megadepth_aerial.py) on data exported from the sample's
ground truth: pts3d agree across the two views of a pair, with and without crop/resize, and every output pixel holds
the stored depth of the source pixel its intrinsics point at."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import torch

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.video import extract_frames
from aerialmd.sample_scene.evaluation import load_ground_truth
from aerialmd.training.dataset import (
    MegaDepthAerial,
    Pair,
    StereoViewDataset,
    crop_resize,
    parse_resolutions,
    read_pair_file,
    select_split,
)
from tests.helpers import depth_errors, script_module, shared_file

KINDS = ("aerial-aerial", "aerial-ground", "ground-ground")
PAIRS_PER_KIND = 2
MIN_OVERLAP = 0.15  # share of one view's pixels seen (with the right depth) by the other, both ways
CONSISTENT = 0.01  # the bound on the median relative depth error
SETTINGS = {  # loader arguments: stored size (no crop/resize), DUSt3R's training resolutions, random zoom
    "stored": dict(resolution=None),
    "224": dict(resolution=224),
    "512x384": dict(resolution=(512, 384)),
    "512x288": dict(resolution=(512, 288)),
    "512x384+aug_crop": dict(resolution=(512, 384), aug_crop=16),
    "list": dict(resolution=[(512, 384), (224, 224)]),
}


@dataclasses.dataclass
class Export:
    """Exported sample: ROOT, scene, pair file name, per image its ground truth, chosen pairs per kind."""

    root: Path
    scene: str
    pair_file: str
    truth: dict[str, dict]
    pairs: dict[str, list[tuple[str, str, float]]]

    def depth(self, name: str) -> np.ndarray:
        return read_depth_exr(self.root / self.scene / f"{name}.exr")

    def dataset(self, split: str | None = None, **kwargs) -> MegaDepthAerial:
        kwargs = {"seed": 0, **kwargs}
        return MegaDepthAerial(split=split, ROOT=self.root, split_file=self.pair_file, **kwargs)


# --------------------------------------------------------------------------------------------- geometry checks
def pair_consistency(view_a: dict, view_b: dict) -> tuple[float, int]:
    """Median relative depth error of view a's pts3d seen from view b, and the number of overlapping pixels that b
    does not see hidden (behind its depth by more than 5 %: a photo's own cars and people hide what an aerial view
    sees)."""
    errors = depth_errors(view_a["pts3d"][view_a["valid_mask"]], view_b["camera_intrinsics"], view_b["camera_pose"],
                          view_b["depthmap"], occluded_beyond=0.05)
    return (float(np.median(errors)) if len(errors) else np.inf), len(errors)


def world_points(depth: np.ndarray, K: np.ndarray, cam2world: np.ndarray, step: int = 1) -> np.ndarray:
    """World points of every `step`-th pixel with valid depth (an independent back-projection)."""
    v, u = np.nonzero(depth[::step, ::step] > 0)
    v, u = v * step, u * step
    z = depth[v, u].astype(np.float64)
    rays = np.linalg.solve(K, np.stack([u, v, np.ones_like(u)]).astype(np.float64))
    return (rays * z).T @ cam2world[:3, :3].T + cam2world[:3, 3]


def overlap(a: dict, b: dict, depth_a: np.ndarray, depth_b: np.ndarray) -> float:
    """Share of a's (sub-sampled) valid pixels that b sees with the right depth."""
    points = world_points(depth_a, a["intrinsics"], a["cam2world"], step=4)
    errors = depth_errors(points, b["intrinsics"], b["cam2world"], depth_b)
    return float((errors < CONSISTENT).sum() / max(len(points), 1))


def source_pixels(view: dict, K_source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel's centre lies in the stored image, per the output and stored intrinsics."""
    height, width = view["depthmap"].shape
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    mapping = K_source @ np.linalg.inv(np.asarray(view["camera_intrinsics"], np.float64))
    xs = mapping[0, 0] * u + mapping[0, 1] * v + mapping[0, 2]
    ys = mapping[1, 0] * u + mapping[1, 1] * v + mapping[1, 2]
    return xs, ys


def interpolate_inverse_depth(depth: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Depth at (xs, ys) (OpenCV pixel coordinates) by bilinear interpolation of inverse depth; 0 where a neighbour
    is invalid or outside."""
    h, w = depth.shape
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    inside = (x0 >= 0) & (x0 < w - 1) & (y0 >= 0) & (y0 < h - 1)
    x0, y0 = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    fx, fy = np.clip(xs - x0, 0, 1), np.clip(ys - y0, 0, 1)
    corners = [depth[y0 + dy, x0 + dx].astype(np.float64) for dy in (0, 1) for dx in (0, 1)]
    weights = [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]
    valid = inside & np.all([c > 0 for c in corners], axis=0)
    inverse = sum(wt / np.where(valid, c, 1) for wt, c in zip(weights, corners))
    return np.where(valid, 1 / inverse, 0.0)


def depth_match(view: dict, K_source: np.ndarray, source_depth: np.ndarray) -> tuple[float, float]:
    """Where its intrinsics map each valid output pixel into the stored depth, the output depth must be either the
    nearest stored depth (either neighbour within 0.01 px of a pixel boundary) or, on surfaces, the inverse-depth
    interpolation there. Returns (share of valid pixels matching, share matching by interpolation only)."""
    xs, ys = source_pixels(view, K_source)
    out, valid = view["depthmap"], view["depthmap"] > 0
    nearest = np.zeros_like(valid)
    h, w = source_depth.shape
    for dx in (-0.01, 0.01):
        for dy in (-0.01, 0.01):
            cols = np.clip(np.floor(xs + 0.5 + dx).astype(np.int64), 0, w - 1)
            rows = np.clip(np.floor(ys + 0.5 + dy).astype(np.int64), 0, h - 1)
            nearest |= source_depth[rows, cols] == out
    interpolated = np.abs(interpolate_inverse_depth(source_depth, xs, ys) - out) <= 1e-5 * out
    return float((nearest | interpolated)[valid].mean()), float((interpolated & ~nearest)[valid].mean())


def shifted(view: dict, du: float, dv: float) -> dict:
    """The view with its principal point moved by (du, dv) pixels: a wrong crop/resize bookkeeping."""
    K = np.array(view["camera_intrinsics"], np.float64)
    K[0, 2] += du
    K[1, 2] += dv
    return {**view, "camera_intrinsics": K}


# ---------------------------------------------------------------------------------------------- exported sample
def write_pair_file(path: Path, scenes: list[str], images: list[tuple[str, str]],
                    pairs: list[tuple[str, str, str, float]]) -> None:
    """A pair file in the published layout: scenes, images (+ their scenes), pairs as an object array."""
    index = {im: k for k, im in enumerate(images)}
    rows = np.empty((len(pairs), 4), dtype=object)
    for k, (scene, a, b, score) in enumerate(pairs):
        rows[k] = [scenes.index(scene), index[(scene, a)], index[(scene, b)], np.float64(score)]
    np.savez(path, scenes=np.array(scenes), images=np.array([im for _, im in images]),
             images_scene_name=np.array([scene for scene, _ in images]), pairs=rows)


def export_image(folder: Path, name: str, rgb_path: Path, depth_path: Path, truth: dict) -> None:
    """One image in the export format, straight from the ground truth (so pairs are exactly consistent)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rgb_path, folder / f"{name}.jpg")
    shutil.copyfile(depth_path, folder / f"{name}.exr")  # the ground truth is already a float32 `Y` EXR in metres
    np.savez(folder / f"{name}.npz", intrinsics=truth["intrinsics"], cam2world=truth["cam2world"])


def choose_pairs(truth: dict[str, dict], depths: dict[str, np.ndarray]) -> dict[str, list[tuple[str, str, float]]]:
    """The best-overlapping pairs of each kind (overlap = the smaller of both directions)."""
    names = list(truth)
    scored: dict[str, list[tuple[float, str, str]]] = {kind: [] for kind in KINDS}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            kind = "-".join(sorted((truth[a]["kind"], truth[b]["kind"])))
            score = min(overlap(truth[a], truth[b], depths[a], depths[b]),
                        overlap(truth[b], truth[a], depths[b], depths[a]))
            scored[kind].append((score, a, b))
    chosen = {kind: [(a, b, s) for s, a, b in sorted(scored[kind], reverse=True)[:PAIRS_PER_KIND]] for kind in KINDS}
    for kind, pairs in chosen.items():
        assert len(pairs) == PAIRS_PER_KIND and all(s > MIN_OVERLAP for _, _, s in pairs), (kind, pairs)
    return chosen


@pytest.fixture(scope="module")
def exported(tiny_sample, tmp_path_factory) -> Export:
    """The tiny sample's images, ground-truth depths and cameras in the export format, with a pair file."""
    paths, config = tiny_sample
    tmp = tmp_path_factory.mktemp("dataloader")
    root, scene = tmp / "export", config.scene_id
    truth = {im["name"]: im for im in load_ground_truth(paths.ground_truth_dir)["images"]}
    frames = {p.name: p for p in extract_frames(paths.video, tmp / "frames", scene, progress=False)}
    for name, image in truth.items():
        rgb = frames[name] if image["kind"] == "aerial" else paths.dense_dir / "imgs" / name
        export_image(root / scene, name, rgb, paths.ground_truth_dir / "depth" / f"{name}.exr", image)
    depths = {name: read_depth_exr(root / scene / f"{name}.exr") for name in truth}
    chosen = choose_pairs(truth, depths)
    rows = [(scene, a, b, s) for kind in KINDS for a, b, s in chosen[kind]]
    write_pair_file(root / "pairs.npz", [scene], [(scene, name) for name in truth], rows)
    return Export(root, scene, "pairs.npz", truth, chosen)


def indices_of_kind(dataset: MegaDepthAerial, export: Export, kind: str) -> list[int]:
    wanted = {(a, b) for a, b, _ in export.pairs[kind]}
    return [k for k, p in enumerate(dataset.pairs) if (p.im1, p.im2) in wanted]


# ------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_pts3d_agree_across_the_views_of_a_pair(exported, kind, setting):
    dataset = exported.dataset(**SETTINGS[setting])
    for idx in indices_of_kind(dataset, exported, kind):
        for r, resolution in enumerate(parse_resolutions(SETTINGS[setting]["resolution"])):
            views = dataset[idx, r]
            for view in views:
                check_view_format(view, exported, resolution)
            for a, b in ((0, 1), (1, 0)):
                median, count = pair_consistency(views[a], views[b])
                assert count > 200 and median < CONSISTENT, (kind, setting, views[a]["instance"], median, count)


def check_view_format(view: dict, export: Export, resolution: tuple[int, int] | None) -> None:
    """DUSt3R's view fields, types and shapes; the output size is the resolution, oriented like the image."""
    truth = export.truth[view["instance"]]
    height, width = view["depthmap"].shape
    if resolution is None:
        assert (width, height) == (truth["width"], truth["height"])
    elif truth["height"] > 1.1 * truth["width"]:
        assert (width, height) == resolution[::-1]
    else:
        assert (width, height) in (resolution, resolution[::-1])
    assert view["img"].shape == (3, height, width) and view["img"].dtype == torch.float32
    assert -1 <= float(view["img"].min()) and float(view["img"].max()) <= 1
    assert tuple(view["true_shape"]) == (height, width)
    for key, shape in (("depthmap", (height, width)), ("pts3d", (height, width, 3)), ("camera_pose", (4, 4)),
                       ("camera_intrinsics", (3, 3))):
        assert view[key].shape == shape and view[key].dtype == np.float32, key
    assert view["valid_mask"].dtype == bool and np.array_equal(view["valid_mask"], view["depthmap"] > 0)
    assert np.allclose(view["camera_pose"], truth["cam2world"], rtol=0, atol=1e-4)
    assert view["label"] == export.scene and view["dataset"] == "MegaDepth"


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_output_pixel_holds_the_depth_its_intrinsics_point_at(exported, setting):
    """Against the stored (ground-truth) depth: catches half-pixel slips that a 1% consistency bound lets through."""
    dataset = exported.dataset(depth_percentile=None, **SETTINGS[setting])
    num_resolutions = len(parse_resolutions(SETTINGS[setting]["resolution"]))
    for idx in range(len(dataset)):
        for view in dataset[idx, idx % num_resolutions]:
            K_source = exported.truth[view["instance"]]["intrinsics"]
            source = exported.depth(view["instance"])
            matching, interpolated = depth_match(view, K_source, source)
            assert matching > 0.999, (setting, view["instance"], matching)
            if setting != "stored":
                assert interpolated > 0.3  # surfaces are interpolated, not only sampled
                wrong, _ = depth_match(shifted(view, 0.5, 0.5), K_source, source)  # the check can fail
                assert wrong < 0.5, (setting, view["instance"], wrong)


def test_images_are_resampled_like_the_depth(exported):
    """The RGB of a resized view matches the stored image sampled where the intrinsics point (blurred to the
    output's resolution), better than when sampled one pixel off."""
    dataset = exported.dataset(resolution=(224, 224), aug_crop=16)
    for view in dataset[0] + dataset[len(dataset) - 1]:
        folder = exported.root / exported.scene
        source = cv2.cvtColor(cv2.imread(str(folder / f"{view['instance']}.jpg")), cv2.COLOR_BGR2RGB)
        output = ((view["img"].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.float32)
        K_source = exported.truth[view["instance"]]["intrinsics"]
        scale = K_source[0, 0] / float(view["camera_intrinsics"][0, 0])
        blurred = cv2.GaussianBlur(source.astype(np.float32), (0, 0), max(0.5 * scale, 0.3))

        def error(du: float) -> float:
            xs, ys = source_pixels(shifted(view, du, 0.0), K_source)
            sampled = cv2.remap(blurred, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR)
            return float(np.abs(sampled - output)[8:-8, 8:-8].mean())

        assert error(0.0) < 0.7 * min(error(-1.0), error(1.0)), view["instance"]


def test_a_wrong_pose_breaks_the_consistency(exported, tmp_path):
    """The check can fail: the same pair, one camera moved 10 m along its axis and turned by 1 degree."""
    a, b, score = exported.pairs["aerial-aerial"][0]
    folder = tmp_path / exported.scene
    for name in (a, b):
        for suffix in (".jpg", ".exr", ".npz"):
            folder.mkdir(exist_ok=True)
            shutil.copyfile(exported.root / exported.scene / f"{name}{suffix}", folder / f"{name}{suffix}")
    wrong = np.array(exported.truth[b]["cam2world"])
    wrong[:3, 3] += 10.0 * wrong[:3, 2]
    wrong[:3, :3] = wrong[:3, :3] @ cv2.Rodrigues(np.radians([0.0, 1.0, 0.0]))[0]
    np.savez(folder / f"{b}.npz", intrinsics=exported.truth[b]["intrinsics"], cam2world=wrong)
    write_pair_file(tmp_path / "pairs.npz", [exported.scene], [(exported.scene, a), (exported.scene, b)],
                    [(exported.scene, a, b, score)])
    for resolution in (None, (512, 288)):
        views = MegaDepthAerial(split=None, ROOT=tmp_path, split_file="pairs.npz", resolution=resolution, seed=0)[0]
        for i, j in ((0, 1), (1, 0)):
            median, count = pair_consistency(views[i], views[j])
            assert median > 2 * CONSISTENT, (resolution, median, count)


def test_same_seed_same_item_and_other_seeds_other_crops(exported):
    settings = dict(resolution=[(512, 384), (512, 288)], aug_crop=16)
    first, again = exported.dataset(seed=5, **settings), exported.dataset(seed=5, **settings)
    for idx in (0, len(first) - 1):
        for one, two in zip(first[idx, 1], again[idx, 1]):
            assert torch.equal(one["img"], two["img"]) and one["rng"] == two["rng"]
            assert np.array_equal(one["camera_intrinsics"], two["camera_intrinsics"])
            assert np.array_equal(one["depthmap"], two["depthmap"])

    def zoom(dataset: MegaDepthAerial, idx: int) -> float:
        return float(dataset[idx][0]["camera_intrinsics"][0, 0])

    assert len({zoom(exported.dataset(seed=seed, **settings), 0) for seed in range(4)}) > 1  # depends on the seed
    first.set_epoch(1)
    assert [zoom(first, idx) for idx in range(3)] != [zoom(again, idx) for idx in range(3)]  # and on the epoch


def test_sky_mask_comes_from_its_own_folder(exported, tmp_path):
    """Labelled sky (ADE20k 2) becomes invalid depth; nothing else changes; a missing mask is named."""
    masks = tmp_path / "segmentation"
    plain = exported.dataset(depth_percentile=None)
    pair = plain.pairs[0]
    (masks / exported.scene).mkdir(parents=True)
    for name in (pair.im1, pair.im2):
        labels = np.full((exported.truth[name]["height"], exported.truth[name]["width"]), 1, np.uint8)
        labels[: labels.shape[0] // 3] = 2
        rgb_labels = np.repeat(labels[..., None], 3, axis=2)  # the seed's masks: three equal channels
        PIL.Image.fromarray(rgb_labels if name == pair.im1 else labels).save(masks / exported.scene / f"{name}.png")
    masked = exported.dataset(depth_percentile=None, sky_mask_dir=masks)
    for with_mask, without in zip(masked[0], plain[0]):
        top = with_mask["depthmap"].shape[0] // 3
        assert not with_mask["valid_mask"][:top].any() and without["valid_mask"][:top].any()
        assert np.array_equal(with_mask["depthmap"][top:], without["depthmap"][top:])
    other = next(k for k, p in enumerate(masked.pairs) if {p.im1, p.im2} - {pair.im1, pair.im2})
    with pytest.raises(FileNotFoundError, match="sky mask not found"):
        masked[other]


def test_missing_files_are_named(exported, tmp_path):
    pair = exported.dataset().pairs[0]
    shutil.copytree(exported.root / exported.scene, tmp_path / exported.scene)
    shutil.copyfile(exported.root / exported.pair_file, tmp_path / exported.pair_file)
    (tmp_path / exported.scene / f"{pair.im2}.exr").unlink()
    dataset = MegaDepthAerial(split=None, ROOT=tmp_path, split_file=exported.pair_file, resolution=224, seed=0)
    with pytest.raises(FileNotFoundError) as error:
        dataset[0]
    assert f"{pair.im2}.exr" in str(error.value) and repr(pair.im2) in str(error.value)
    assert f"{pair.im2}.jpg" not in str(error.value)  # only what is missing
    with pytest.raises(FileNotFoundError, match="nowhere.npz: pair file not found"):
        MegaDepthAerial(split=None, ROOT=tmp_path, split_file="nowhere.npz", resolution=224)


def test_train_and_val_splits_by_scene(exported, tmp_path):
    """The seed's split: scenes 0015 and 0022 are validation, the others training; None keeps every pair."""
    a, b, score = exported.pairs["ground-ground"][0]
    shutil.copytree(exported.root / exported.scene, tmp_path / exported.scene)
    (tmp_path / "0015").mkdir()
    for name in (a, b):
        for suffix in (".jpg", ".exr", ".npz"):
            shutil.copyfile(exported.root / exported.scene / f"{name}{suffix}", tmp_path / "0015" / f"{name}{suffix}")
    rows = [(exported.scene, x, y, s) for kind in KINDS for x, y, s in exported.pairs[kind]] + [("0015", a, b, score)]
    images = [(exported.scene, name) for name in exported.truth] + [("0015", a), ("0015", b)]
    write_pair_file(tmp_path / "pairs.npz", [exported.scene, "0015"], images, rows)

    def dataset(split):
        return MegaDepthAerial(split=split, ROOT=tmp_path, split_file="pairs.npz", resolution=224, seed=0)

    assert {p.scene for p in dataset("train").pairs} == {exported.scene} and len(dataset("train")) == len(rows) - 1
    val = dataset("val")
    assert val.pairs == [Pair("0015", a, b, score)] and [v["label"] for v in val[0]] == ["0015", "0015"]
    assert len(dataset(None)) == len(rows)
    with pytest.raises(ValueError, match="bad split"):
        dataset("test")
    with pytest.raises(ValueError, match="no pairs in split 'val'"):
        MegaDepthAerial(split="val", ROOT=exported.root, split_file=exported.pair_file, resolution=224)


def test_pair_file_formats(tmp_path):
    """Published object-array rows and DUSt3R's structured array read the same; bad indices are refused."""
    scenes, images = np.array(["0001", "0002"]), np.array(["x.jpg", "y.jpg", None, "z.jpg"], dtype=object)
    owners = np.array(["0001", "0001", None, "0002"], dtype=object)  # no scene for the image without data
    rows = np.array([[0, 0, 1, 0.5], [1, 3, 3, 0.25]], dtype=object)
    np.savez(tmp_path / "object.npz", scenes=scenes, images=images, images_scene_name=owners, pairs=rows)
    structured = np.array([(0, 0, 1, 0.5), (1, 3, 3, 0.25)],
                          dtype=[("scene_id", "i4"), ("im1_id", "i4"), ("im2_id", "i4"), ("score", "f8")])
    np.savez(tmp_path / "structured.npz", scenes=scenes, images=images, pairs=structured)
    expected = [("0001", "x.jpg", "y.jpg", 0.5), ("0002", "z.jpg", "z.jpg", 0.25)]
    assert read_pair_file(tmp_path / "object.npz") == expected == read_pair_file(tmp_path / "structured.npz")
    for bad_row, message in (([0, 2, 1, 0.1], "None"), ([0, 0, 9, 0.1], "out of range"), ([2, 0, 1, 0.1], "scene index"),
                             ([1, 0, 3, 0.1], "in scene 0002 but image x.jpg in 0001")):
        np.savez(tmp_path / "bad.npz", scenes=scenes, images=images, images_scene_name=owners,
                 pairs=np.array([bad_row], dtype=object))
        with pytest.raises(ValueError, match=message):
            read_pair_file(tmp_path / "bad.npz")


def test_published_pair_file():
    """The published validation file: first column indexes `scenes`, the image columns index `images`."""
    pairs = read_pair_file(shared_file("real/aerial_megadepth_pairs/aerial_megadepth_val.npz"))
    assert len(pairs) == 39984 and {p.scene for p in pairs} == {"0015", "0022", "0147", "0148"}
    assert all(p.im1.startswith(p.scene + "_") or p.im1.endswith(".jpg") for p in pairs[:1000])
    assert {p.scene for p in select_split(pairs, "val")} == {"0015", "0022"}
    assert {p.scene for p in select_split(pairs, "train")} == {"0147", "0148"}


def test_crop_refuses_a_principal_point_far_off_centre():
    K = np.array([[300.0, 0, 40.0], [0, 300.0, 100.0], [0, 0, 1]])
    with pytest.raises(ValueError, match="too far from the centre"):
        crop_resize(np.zeros((200, 300, 3), np.uint8), np.ones((200, 300), np.float32), K, (224, 224),
                    np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- misc/ front
def load_front(name: str):
    """misc/megadepth_aerial.py imported afresh as module `name`."""
    return script_module("misc/megadepth_aerial.py", name)


def test_front_without_dust3r_is_the_standalone_dataset():
    if importlib.util.find_spec("dust3r") is not None:
        pytest.skip("dust3r is installed")
    assert load_front("megadepth_aerial_standalone").MegaDepthAerial is MegaDepthAerial


def test_front_with_dust3r_subclasses_its_base_class(exported, monkeypatch):
    """With a stand-in dust3r package whose BaseStereoViewDataset has DUSt3R's constructor and item protocol, the
    front subclasses it and the seed's constructor call yields consistent views."""
    base = type("BaseStereoViewDataset", (StereoViewDataset,), {})
    names = ["dust3r", "dust3r.datasets", "dust3r.datasets.base", "dust3r.datasets.base.base_stereo_view_dataset"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[names[-1]].BaseStereoViewDataset = base
    front = load_front("megadepth_aerial_dust3r")
    assert issubclass(front.MegaDepthAerial, base) and front.MegaDepthAerial is not MegaDepthAerial
    dataset = front.MegaDepthAerial(split="train", ROOT=str(exported.root), split_file=exported.pair_file,
                                    resolution=224, aug_crop=16, seed=0)
    assert len(dataset) == len(KINDS) * PAIRS_PER_KIND and dataset.split == "train"
    views = dataset[indices_of_kind(dataset, exported, "aerial-ground")[0]]
    assert pair_consistency(views[0], views[1])[0] < CONSISTENT
