"""bench/bench_scale.py: its scenes grow the image count of one town and nothing else, and its verdict applies the
issue's 1.5x rule per step (a full run takes about a quarter of an hour: docs/performance.md)."""

from __future__ import annotations

import dataclasses

from aerialmd.sample_scene.family import family_config
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
             "depth_maps": 64 * f, "peak_rss_mb": {},
             "seconds_per_image": {"flat": 1.0, "n log n": 1.0 * (1 + 0.3 * (f - 1) / 3), "quadratic": 0.01 * f}}
            for f in (1, 2, 4)]
    assert bench.print_table(rows) == ["quadratic"]
    assert "quadratic" in capsys.readouterr().out
