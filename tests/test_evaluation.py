"""Figures computed from the sample's ground truth alone, on hand-built scenes with answers known by construction."""

import json

import numpy as np
import pytest

from aerialmd.depth_io import write_depth_exr
from aerialmd.evaluation import cross_view_visibility

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
