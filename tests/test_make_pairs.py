"""make_pairs (aerialmd/overlap.py): dense overlap scores against a per-pixel brute force written here from the sample's
ground truth, co-visibility candidates, balanced selection, and the pair files it writes."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from aerialmd.formats.dense_model import read_dense_model
from aerialmd.formats.pair_file import load_pair_file
from aerialmd.layout import is_aerial
from aerialmd.stages.make_pairs import (
    KINDS,
    candidate_pairs,
    directed_overlaps,
    load_scoring_views,
    pair_kind,
    pair_scores,
    select_pairs,
    water_fill,
)
from tests.helpers import preprocess_script

MAX_SIDE = 120  # the sample's images have a long side of 480: stride 4
REL_TOL = 0.02


def make_pairs_main(argv: list[str]) -> int:
    """make_pairs.py's command line, run in this process."""
    return preprocess_script("make_pairs").main(argv)


@pytest.fixture(scope="module")
def dense_scene(sample_dense_model, sample_truth):
    """(data root, scene id, dense model, ground truth by dense-model name with its depth)."""
    root, scene, dense = sample_dense_model
    return root, scene, read_dense_model(dense), sample_truth


# ----------------------------------------------------------------------------------------------------------------------
# The brute force: one pixel at a time, plain Python, from the ground truth (not from the dense model files)


def depth_at(depth: np.ndarray, x: float, y: float) -> float:
    """Depth at OpenCV position (x, y), inside [-0.5, W - 0.5) x [-0.5, H - 0.5): positions are clamped onto the
    pixel-centre grid; bilinear in inverse depth over the 4 surrounding pixels if all are valid, else the nearest."""
    height, width = depth.shape
    x, y = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
    x0, y0 = min(int(math.floor(x)), width - 2), min(int(math.floor(y)), height - 2)
    fx, fy = x - x0, y - y0
    c00, c01 = float(depth[y0, x0]), float(depth[y0, x0 + 1])
    c10, c11 = float(depth[y0 + 1, x0]), float(depth[y0 + 1, x0 + 1])
    if min(c00, c01, c10, c11) > 0:
        inverse = (1 - fx) * (1 - fy) / c00 + fx * (1 - fy) / c01 + (1 - fx) * fy / c10 + fx * fy / c11
        return 1.0 / inverse
    return float(depth[y0 + (1 if fy >= 0.5 else 0), x0 + (1 if fx >= 0.5 else 0)])


def brute_force_directed(a: dict, b: dict, stride: int, rel_tol: float) -> tuple[float, int]:
    """Share of a's valid pixels (every stride-th pixel) whose 3D point lands inside b, in front, with an agreeing
    depth in b's map (subsampled alike); and the number of a's valid pixels."""
    depth_a, depth_b = a["depth"][::stride, ::stride], b["depth"][::stride, ::stride]
    Ka, Kb = a["intrinsics"] / [[stride], [stride], [1]], b["intrinsics"] / [[stride], [stride], [1]]
    fx_a, fy_a, cx_a, cy_a = Ka[0, 0], Ka[1, 1], Ka[0, 2], Ka[1, 2]
    fx_b, fy_b, cx_b, cy_b = Kb[0, 0], Kb[1, 1], Kb[0, 2], Kb[1, 2]
    Ra, ta = a["cam2world"][:3, :3].tolist(), a["cam2world"][:3, 3].tolist()
    world2cam_b = np.linalg.inv(b["cam2world"])
    Rb, tb = world2cam_b[:3, :3].tolist(), world2cam_b[:3, 3].tolist()
    height_b, width_b = depth_b.shape
    valid = agree = 0
    for v in range(depth_a.shape[0]):
        for u in range(depth_a.shape[1]):
            z = float(depth_a[v, u])
            if z <= 0:
                continue
            valid += 1
            cam = [(u - cx_a) / fx_a * z, (v - cy_a) / fy_a * z, z]
            world = [sum(Ra[r][c] * cam[c] for c in range(3)) + ta[r] for r in range(3)]
            cam_b = [sum(Rb[r][c] * world[c] for c in range(3)) + tb[r] for r in range(3)]
            if cam_b[2] <= 0:
                continue
            x, y = fx_b * cam_b[0] / cam_b[2] + cx_b, fy_b * cam_b[1] / cam_b[2] + cy_b
            if not (-0.5 <= x < width_b - 0.5 and -0.5 <= y < height_b - 0.5):
                continue
            d = depth_at(depth_b, x, y)
            if d > 0 and abs(cam_b[2] - d) <= rel_tol * d:
                agree += 1
    return (agree / valid if valid else 0.0), valid


def test_scores_agree_with_a_per_pixel_brute_force(dense_scene) -> None:
    """Vectorised scores (read from the dense model's h5/COLMAP files) against the brute force on the ground truth,
    two pairs of each kind, both directions and the symmetric min; within 3 pixels of the count."""
    _, scene, model, truth = dense_scene
    views, dropped = load_scoring_views(model, MAX_SIDE)
    assert not dropped
    names = [v.name for v in views]
    candidates = candidate_pairs(model, names)
    rng = np.random.default_rng(0)
    chosen = []
    for kind in KINDS:
        of_kind = [p for p in candidates if pair_kind(names[p[0]], names[p[1]], scene) == kind]
        chosen += [of_kind[k] for k in rng.choice(len(of_kind), 2, replace=False)]
    stride = 4
    assert all(v.depth.shape == truth[v.name]["depth"][::stride, ::stride].shape for v in views)
    scores = pair_scores(views, np.array(chosen), REL_TOL)
    for (i, j), score in zip(chosen, scores):
        forward, n_i = brute_force_directed(truth[names[i]], truth[names[j]], stride, REL_TOL)
        backward, n_j = brute_force_directed(truth[names[j]], truth[names[i]], stride, REL_TOL)
        fast_forward = directed_overlaps(views[i], [views[j]], REL_TOL)[0]
        fast_backward = directed_overlaps(views[j], [views[i]], REL_TOL)[0]
        assert abs(fast_forward - forward) <= 3 / n_i, (names[i], names[j], fast_forward, forward)
        assert abs(fast_backward - backward) <= 3 / n_j, (names[j], names[i], fast_backward, backward)
        assert abs(score - min(forward, backward)) <= 3 / min(n_i, n_j)
    assert max(scores) > 0.1  # the chosen pairs overlap: the comparison is not between zeros


def test_directed_overlap_of_a_view_with_itself_is_one(dense_scene) -> None:
    _, _, model, _ = dense_scene
    views, _ = load_scoring_views(model, MAX_SIDE)
    assert directed_overlaps(views[0], [views[0]], REL_TOL)[0] == pytest.approx(1.0)


def test_candidates_are_the_image_pairs_sharing_sparse_points(dense_scene) -> None:
    _, _, model, _ = dense_scene
    names = list(model.views)
    observed = {}
    for image in model.sparse.images.values():
        observed[image.name] = {p.point3D_id for p in image.points2D if p.has_point3D()}
    shared = {(i, j): len(observed[names[i]] & observed[names[j]])
              for i in range(len(names)) for j in range(i + 1, len(names))}
    threshold = int(np.median(list(shared.values())))
    expected = {pair for pair, count in shared.items() if count >= threshold}
    assert {tuple(p) for p in candidate_pairs(model, names, min_shared_points=threshold)} == expected
    assert 0 < len(expected) < len(names) * (len(names) - 1) // 2  # the threshold removes some pairs


# ----------------------------------------------------------------------------------------------------------------------
# Kinds and selection


def test_aerial_naming_rule() -> None:
    assert is_aerial("9000_000.jpeg", "9000") and is_aerial("9000_1234.jpg", "9000")
    assert not is_aerial("9000_000.jpeg.jpg", "9000")
    assert not is_aerial("9001_000.jpeg", "9000")
    assert not is_aerial("9000_000.png", "9000")
    assert not is_aerial("2184088002_84bd02907a_o.jpg.jpg", "9000")
    assert [pair_kind(a, b, "1") for a, b in [("1_0.jpeg", "1_1.jpeg"), ("x.jpg", "1_1.jpeg"), ("x.jpg", "y.jpg")]] \
        == list(KINDS)


@pytest.mark.parametrize("sizes,budget", [([100, 50, 5], 30), ([3, 3, 3], 100), ([0, 7, 40], 20), ([10, 10, 10], 7)])
def test_water_fill_shares_as_equally_as_supply_allows(sizes, budget) -> None:
    take = water_fill(sizes, budget)
    assert sum(take) == min(budget, sum(sizes))
    assert all(0 <= t <= s for t, s in zip(take, sizes))
    open_takes = [t for t, s in zip(take, sizes) if t < s]
    assert not open_takes or min(open_takes) >= max(take) - 1  # a group short of its share is exhausted


def test_select_pairs_window_budget_balance_and_seed() -> None:
    rng = np.random.default_rng(1)
    kinds = np.array(["aerial-aerial"] * 3000 + ["aerial-ground"] * 800 + ["ground-ground"] * 60)
    scores = rng.beta(1, 6, len(kinds))  # mostly low scores, as real overlap is
    keep = select_pairs(scores, kinds, 0.03, 0.6, 900, np.random.default_rng(5))
    assert len(keep) == 900 and len(set(keep)) == 900
    assert ((scores[keep] >= 0.03) & (scores[keep] <= 0.6)).all()
    in_window = (scores >= 0.03) & (scores <= 0.6)
    gg = int((in_window & (kinds == "ground-ground")).sum())
    counts = {k: int((kinds[keep] == k).sum()) for k in KINDS}
    assert counts["ground-ground"] == gg
    assert abs(counts["aerial-aerial"] - counts["aerial-ground"]) <= 1
    high = scores[keep][kinds[keep] == "aerial-aerial"] > 0.3  # score bins balanced: far more high scores than by chance
    assert high.mean() > 2 * ((scores > 0.3) & in_window & (kinds == "aerial-aerial")).sum() / (in_window & (kinds == "aerial-aerial")).sum()
    np.testing.assert_array_equal(keep, select_pairs(scores, kinds, 0.03, 0.6, 900, np.random.default_rng(5)))
    assert len(select_pairs(scores, kinds, 0.03, 0.6, 0, np.random.default_rng(5))) == in_window.sum()


# ----------------------------------------------------------------------------------------------------------------------
# The script and its files


def test_make_pairs_script_with_val_split(dense_scene, tmp_path, capsys) -> None:
    root, scene, _, truth = dense_scene
    data = tmp_path / "data"
    shutil.copytree(root / scene, data / scene)
    shutil.copytree(root / scene, data / "9001")  # a second scene (its frames count as ground photos there)
    out = tmp_path / "aerial_megadepth.npz"
    args = ["--megadepth_aerial_dir", str(data), "--output_path", str(out), "--workers", "2"]
    assert make_pairs_main([*args, "--split_val", "9001"]) == 0
    text = capsys.readouterr().out
    train, val = load_pair_file(tmp_path / "aerial_megadepth_train.npz"), load_pair_file(tmp_path / "aerial_megadepth_val.npz")
    assert not out.exists()
    assert train.scenes == [scene] and val.scenes == ["9001"]
    for pair_file in (train, val):
        assert sorted(pair_file.images) == sorted(truth)
        assert all(pair_file.images_scene_name[a] == pair_file.images_scene_name[b] == pair_file.scenes[s]
                   for s, a, b in zip(pair_file.scene_id, pair_file.im1_id, pair_file.im2_id))
        assert ((pair_file.score >= 0.03) & (pair_file.score <= 0.6)).all() and len(pair_file.score) > 50
        assert len({(a, b) for a, b in zip(pair_file.im1_id, pair_file.im2_id)}) == len(pair_file.score)
    train_kinds = [pair_kind(train.images[a], train.images[b], scene) for a, b in zip(train.im1_id, train.im2_id)]
    counts = {k: train_kinds.count(k) for k in KINDS}
    assert min(counts.values()) > 0
    assert f"scene {scene}: ok" in text and ", ".join(f"{k} {n}" for k, n in counts.items()) in text

    assert make_pairs_main([*args, "--scenes", scene, "--pairs_per_scene", "30"]) == 0
    small = load_pair_file(out)
    kinds = [pair_kind(small.images[a], small.images[b], scene) for a, b in zip(small.im1_id, small.im2_id)]
    assert [kinds.count(k) for k in KINDS] == water_fill([counts[k] for k in KINDS], 30)

    assert make_pairs_main([*args, "--split_val", "0015"]) == 2  # not a scene of the folder
    assert make_pairs_main([*args, "--scenes", "0015"]) == 2


def test_shards_merge_into_the_unsharded_files(dense_scene, tmp_path, capsys) -> None:
    """Two scenes scored in one run and in two shards (one has no val scene: its val file is empty); merging the
    shards' train and val files gives the unsharded run's files exactly."""
    root, scene, _, _ = dense_scene
    data = tmp_path / "data"
    shutil.copytree(root / scene, data / scene)
    shutil.copytree(root / scene, data / "9001")
    common = ["--megadepth_aerial_dir", str(data), "--split_val", "9001", "--workers", "2", "--pairs_per_scene", "40"]
    assert make_pairs_main([*common, "--output_path", str(tmp_path / "all.npz")]) == 0
    for k in range(2):
        assert make_pairs_main([*common, "--output_path", str(tmp_path / f"part{k}.npz"), "--shard", f"{k}/2"]) == 0
    assert load_pair_file(tmp_path / "part0_val.npz").scenes == []
    for split in ("train", "val"):
        parts = [str(tmp_path / f"part{k}_{split}.npz") for k in range(2)]
        assert make_pairs_main(["--merge", *parts, "--output_path", str(tmp_path / f"merged_{split}.npz")]) == 0
        merged, unsharded = (load_pair_file(tmp_path / f"{stem}_{split}.npz") for stem in ("merged", "all"))
        assert merged.scenes == unsharded.scenes and merged.images == unsharded.images
        assert merged.images_scene_name == unsharded.images_scene_name
        for column in ("scene_id", "im1_id", "im2_id", "score"):
            np.testing.assert_array_equal(getattr(merged, column), getattr(unsharded, column))
    capsys.readouterr()
    twice = [str(tmp_path / "part0_train.npz")] * 2
    assert make_pairs_main(["--merge", *twice, "--output_path", str(tmp_path / "bad.npz")]) == 2
    assert f"scenes in more than one pair file: {scene}" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()
