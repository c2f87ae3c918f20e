"""Figures computed from the sample's ground truth alone, on hand-built scenes with answers known by construction."""

import json

import numpy as np
import pytest

from aerialmd.formats.depth import write_depth_exr
from aerialmd.sample_scene import SampleConfig
from aerialmd.sample_scene.evaluation import (
    common_look_at_point,
    cross_view_visibility,
    neighbour_distance_ratios,
    wrong_depth_classes,
)
from aerialmd.sample_scene.viewpoints import look_at
from aerialmd.stages.preprocess_megadepth import scene_info_cam2world
from tests.helpers import shared_file

SIZE, FOCAL, WALL = 101, 100.0, 10.0  # 101 x 101 pixels, centre 50: column u looks at x = (u - 50) / 10 on the wall


def camera_at(x: float) -> list[list[float]]:
    cam2world = np.eye(4)
    cam2world[0, 3] = x
    return cam2world.tolist()


def write_truth(folder, images: list[tuple]) -> None:
    """Cameras looking down +z at a wall z = 10 m: (name, kind, x of the camera, the depth its photo records[, focal
    length, FOCAL when absent])."""
    (folder / "depth").mkdir(parents=True)
    entries = []
    for name, kind, x, depth, *focal in images:
        f = focal[0] if focal else FOCAL
        entries.append({"name": name, "kind": kind, "width": SIZE, "height": SIZE,
                        "intrinsics": [[f, 0, 50.0], [0, f, 50.0], [0, 0, 1]], "cam2world": camera_at(x)})
        write_depth_exr(folder / "depth" / f"{name}.exr", np.full((SIZE, SIZE), depth, np.float32))
    (folder / "cameras.json").write_text(json.dumps({"images": entries}))


def test_cross_view_visibility_counts_the_other_photos_that_see_each_pixel(tmp_path):
    # left/right photos 5 m to either side each see one half of the centre photo's wall; 'blocked' has a near object
    # over its whole view, and the aerial frame sees all of it but is of the other kind.
    write_truth(tmp_path, [("centre", "ground", 0.0, WALL), ("right", "ground", 5.0, WALL),
                           ("left", "ground", -5.0, WALL), ("blocked", "ground", 0.0, 5.0),
                           ("aerial", "aerial", 0.0, WALL)])
    figures = cross_view_visibility(tmp_path, "ground", step=1)
    per_image = figures["images"]
    assert per_image["centre"]["seen_by_1"] == pytest.approx(1.0)
    assert per_image["centre"]["seen_by_2"] == pytest.approx(1 / SIZE)  # only the column straight ahead
    assert per_image["right"]["seen_by_1"] == pytest.approx(51 / SIZE)
    assert per_image["right"]["seen_by_2"] == pytest.approx(1 / SIZE)
    assert per_image["blocked"]["seen_by_1"] == 0.0
    assert figures["pixels"] == 4 * SIZE * SIZE
    assert figures["seen_by_1"] == pytest.approx((SIZE + 51 + 51) / (4 * SIZE))
    assert figures["seen_by_2"] == pytest.approx(3 / (4 * SIZE))


def test_cross_view_visibility_splits_street_from_above(tmp_path):
    # as above; with the street below 7.5 m of world height, the blocked photo's near object (at z = 5) is the street
    write_truth(tmp_path, [("centre", "ground", 0.0, WALL), ("right", "ground", 5.0, WALL),
                           ("left", "ground", -5.0, WALL), ("blocked", "ground", 0.0, 5.0)])
    figures = cross_view_visibility(tmp_path, "ground", step=1, street_height_m=7.5)
    assert figures["street"] == {"pixels": SIZE * SIZE, "seen_by_1": 0.0, "seen_by_2": 0.0}
    assert figures["above_street"]["pixels"] == 3 * SIZE * SIZE
    assert figures["above_street"]["seen_by_1"] == pytest.approx((SIZE + 51 + 51) / (3 * SIZE))
    assert figures["above_street"]["seen_by_2"] == pytest.approx(3 / (3 * SIZE))
    assert "street" not in cross_view_visibility(tmp_path, "ground", step=1)


def test_cross_view_visibility_of_other_kinds_at_comparable_resolution(tmp_path):
    # two aerial frames at the photo's place see all of its wall: one at its resolution, one 4x coarser
    write_truth(tmp_path, [("photo", "ground", 0.0, WALL), ("sharp", "aerial", 0.0, WALL),
                           ("coarse", "aerial", 0.0, WALL, FOCAL / 4)])
    assert cross_view_visibility(tmp_path, "ground", step=1)["seen_by_1"] == 0.0  # no other ground photo
    assert cross_view_visibility(tmp_path, "ground", step=1, other_kinds=("aerial",))["seen_by_2"] == 1.0
    within_3x = cross_view_visibility(tmp_path, "ground", step=1, other_kinds=("aerial",), max_footprint_ratio=3.0)
    assert (within_3x["seen_by_1"], within_3x["seen_by_2"]) == (1.0, 0.0)
    within_5x = cross_view_visibility(tmp_path, "ground", step=1, other_kinds=("ground", "aerial"),
                                      max_footprint_ratio=5.0)
    assert within_5x["seen_by_2"] == 1.0


def test_neighbour_distance_ratios_of_cameras_on_a_circle_around_a_point():
    """N cameras evenly on a circle of radius R around a point, at its height, all looking at it: the nearest other
    camera is 2 R sin(pi / N) away and each is R from the point, so every ratio is 2 sin(pi / N)."""
    point, radius, count = np.array([5.0, -3.0, 10.0]), 40.0, 12
    angles = 2 * np.pi * np.arange(count) / count + 0.3
    poses = np.stack([look_at(point + radius * np.array([np.cos(a), np.sin(a), 0.0]), point) for a in angles])
    np.testing.assert_allclose(common_look_at_point(poses), point, atol=1e-9)
    np.testing.assert_allclose(neighbour_distance_ratios(poses), 2 * np.sin(np.pi / count), rtol=1e-9)
    moved = poses.copy()
    moved[0, :3, 3] = poses[1, :3, 3] + 0.5 * (poses[0, :3, 3] - poses[1, :3, 3])  # halfway to its neighbour
    assert neighbour_distance_ratios(moved)[1] < 0.6 * 2 * np.sin(np.pi / count)


@pytest.mark.slow
def test_default_sample_photos_as_densely_as_real_megadepth_scenes():
    """The default sample's popular-spots layout puts each photo's nearest neighbour at about the share of its
    distance to the landmark that real MegaDepth scenes do with all their photos (../shared: 0015, 0022, median
    0.02-0.03); photos each at a place of their own are an order of magnitude sparser."""
    from aerialmd.sample_scene.generate import ground_cameras
    from aerialmd.sample_scene.world import random_town

    real = [np.median(neighbour_distance_ratios(scene_info_cam2world(shared_file(
        f"real/megadepth_test1500_scene_info/{name}_0.1_0.3.npz")))) for name in ("0015", "0022")]

    def median_ratio(config: SampleConfig) -> float:
        ratios = []
        for seed in range(3):
            rng = np.random.default_rng(seed)
            world = random_town(rng, config.num_buildings)
            poses = np.stack([view.cam2world for view, _ in ground_cameras(rng, config, world)])
            ratios.append(neighbour_distance_ratios(poses))
        return float(np.median(np.concatenate(ratios)))

    default = median_ratio(SampleConfig())  # photos from four popular spots
    assert min(real) / 2 < default < max(real) * 2
    assert median_ratio(SampleConfig(ground_spots=0)) > 5 * max(real)


def test_scene_info_reader_names_a_file_that_is_not_one(tmp_path):
    bad = tmp_path / "scene_info.npz"
    bad.write_text("not a pickle")
    with pytest.raises(ValueError, match="scene_info.npz: not a MegaDepth scene-info file"):
        scene_info_cam2world(bad)


def pixel_rays() -> np.ndarray:
    """Rays (x, y, 1) of the SIZE x SIZE test camera (focal FOCAL, centre 50), H x W x 3."""
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    return np.stack([(u - 50) / FOCAL, (v - 50) / FOCAL, np.ones_like(u)], axis=-1)


K_TEST = np.array([[FOCAL, 0, 50.0], [0, FOCAL, 50.0], [0, 0, 1]])


def test_wrong_depths_beside_a_depth_jump_count_as_silhouette():
    """A wall at 10 m with a full-height box face at 5 m (columns 40-59): the jump's pixels are columns 39/40 and
    59/60, so columns 36-43 and 56-63 lie within 3 px of it. Every depth 20 % too far, columns 0-9 20 % too near."""
    truth = np.full((SIZE, SIZE), WALL, np.float32)
    truth[:, 40:60] = 5.0
    depth = 1.2 * truth
    depth[:, :10] = 0.8 * truth[:, :10]
    classes = wrong_depth_classes(depth, truth, K_TEST)
    assert classes == {"silhouette": 16 * SIZE, "grazing": 0, "other": (SIZE - 16) * SIZE, "too_near": 10 * SIZE}


def test_wrong_depths_on_a_floor_seen_at_a_grazing_angle():
    """A floor 0.5 m below the camera (below the horizon, row 50; sky above it): its pixels more than 75 degrees
    from the floor's normal (analytic: the ray's angle to the vertical) count as grazing, except those within 3 px of
    the sky or of a depth step of more than 10 % between rows (rows up to 59: the floor's depth falls fast there)."""
    rays = pixel_rays()
    truth = np.where(rays[..., 1] > 0, 0.5 / np.maximum(rays[..., 1], 1e-9), 0.0).astype(np.float32)
    classes = wrong_depth_classes(1.2 * truth, truth, K_TEST)
    angle = np.degrees(np.arccos(rays[..., 1] / np.linalg.norm(rays, axis=-1)))
    rows = np.arange(SIZE)[:, None]
    expected = (angle > 75.0) & (rows > 63) & (rows < SIZE - 1)
    expected[:, [0, SIZE - 1]] = False  # no neighbour on one side: no normal
    assert abs(classes["grazing"] - expected.sum()) <= 2
    assert classes["silhouette"] == 13 * SIZE  # rows 51-63
    assert classes["too_near"] == 0 and sum(classes[k] for k in ("silhouette", "grazing", "other")) == (truth > 0).sum()
