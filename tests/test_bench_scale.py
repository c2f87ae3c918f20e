"""bench/bench_scale.py: its scenes grow the image count of one town and nothing else (each smaller one a subset of
the largest), and its verdict applies the issue's 1.5x rule per step (a full run takes about half an hour:
docs/performance.md)."""

from __future__ import annotations

import dataclasses
import shutil

import pycolmap
import pytest

from aerialmd.layout import DataRoot
from aerialmd.run.markers import cameras_fingerprint
from aerialmd.run.scenes import load_scene_list
from aerialmd.sample_scene.family import family_config
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth
from tests.helpers import script_module


def test_scaled_scenes_multiply_photos_and_frames_of_one_town():
    bench = script_module("bench/bench_scale.py")
    base = family_config(bench.SEED, "small", "spots", gap=True)
    configs = [bench.scaled_config(base, factor, 30, 25) for factor in (1, 2, 4)]
    for factor, config in zip((1, 2, 4), configs):
        assert config.num_ground == 30 * factor and config.num_frames == 25 * factor
        assert [o.altitude_m for o in config.orbits] == [o.altitude_m for o in base.orbits]
        same = {f.name for f in dataclasses.fields(config)} - {"scene_id", "orbits", "num_ground"}
        assert all(getattr(config, name) == getattr(base, name) for name in same)
    assert len({c.scene_id for c in configs}) == 3


def test_verdict_fails_exactly_the_steps_that_grow_over_the_limit(capsys):
    bench = script_module("bench/bench_scale.py")
    rows = [{"scene": f"scale{f}x", "images": 64 * f, "frames": 32 * f, "photos": 32 * f, "registered": 32 * f,
             "depth_maps": 64 * f, "peak_rss_mb": {}, "observations_per_frame": 300.0,
             "seconds_per_image": {"flat": 1.0, "n log n": 1.0 * (1 + 0.3 * (f - 1) / 3), "quadratic": 0.01 * f}}
            for f in (1, 2, 4)]
    assert bench.print_table(rows) == ["quadratic"]
    assert "quadratic" in capsys.readouterr().out


def test_a_smaller_scene_is_every_kth_frame_and_photo_of_the_town(tiny_sample, tmp_path):
    bench = script_module("bench/bench_scale.py")
    paths, config = tiny_sample
    town = DataRoot(tmp_path / "town")
    shutil.copytree(paths.root, town.path)
    preprocess_ge(town.path, town.scene_list)
    preprocess_megadepth(paths.megadepth_root, town.scene_list, town.megadepth_processed)
    scene = config.scene_id
    subset = bench.subset_root(town, scene, 2, tmp_path / "half")
    town_model = pycolmap.Reconstruction(str(town.scene(scene).sparse_ge))
    all_frames = sorted(image.name for image in town_model.images.values())
    model = pycolmap.Reconstruction(str(subset.scene(scene).sparse_ge))
    frames = sorted(image.name for image in model.images.values())
    assert frames == all_frames[::2] and len(frames) < len(all_frames)
    assert sorted(p.name for p in subset.scene(scene).footage.iterdir()) == frames
    assert all((subset.scene(scene).footage / name).read_bytes() == (town.scene(scene).footage / name).read_bytes()
               for name in frames)
    town_poses = {image.name: image.cam_from_world() for image in town_model.images.values()}
    for image in model.images.values():  # the town's poses, unchanged
        assert image.cam_from_world().translation.tolist() == pytest.approx(
            town_poses[image.name].translation.tolist())
    assert load_scene_list(subset.scene_list)[scene] == {
        sub: sorted(names)[::2] for sub, names in load_scene_list(town.scene_list)[scene].items()}
    assert subset.megadepth_processed.resolve() == town.megadepth_processed.resolve()
    assert cameras_fingerprint(subset.scene(scene).path) == cameras_fingerprint(town.scene(scene).path)
