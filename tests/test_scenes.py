"""Scene selection and sharding for shell loops and SLURM arrays."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from aerialmd.run.scenes import (
    Shard,
    Timer,
    parse_shard,
    peak_rss_mb_since_reset,
    select_scenes,
    shard_from_environment,
)
from tests.helpers import REPO_ROOT, make_data_root

SCENES = [f"{i:04d}" for i in (5, 1, 22, 15, 3, 8, 13)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_shards_cover_every_scene_exactly_once(count):
    parts = [select_scenes(SCENES, None, Shard(k, count)) for k in range(count)]
    flat = [scene for part in parts for scene in part]
    assert sorted(flat) == sorted(SCENES) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_of_requested_scenes_and_errors():
    assert select_scenes(SCENES, ["0022", "0001", "0015"], Shard(1, 2)) == ["0015"]
    with pytest.raises(ValueError, match="0099"):
        select_scenes(SCENES, ["0099"])
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_slurm_array_environment():
    assert shard_from_environment({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_environment(env) == Shard(2, 4)
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}) == Shard(0, 2)


def test_stage_script_processes_only_its_shard(tiny_sample, tmp_path):
    paths, _ = tiny_sample
    root, scene_list = make_data_root(tmp_path, paths, {"0001": "", "0002": "", "0003": ""})
    script = str(REPO_ROOT / "datasets_preprocess" / "preprocess_ge.py")
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, script, "--data_root", str(root), "--scene_list", str(scene_list)],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (root / "data").iterdir()) == ["0002"]
    run = subprocess.run([sys.executable, script, "--data_root", str(root), "--scene_list", str(scene_list),
                          "--shard", "0/2"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (root / "data").iterdir()) == ["0001", "0002", "0003"]


@pytest.mark.skipif(peak_rss_mb_since_reset() is None, reason="no /proc/self/status (not Linux)")
def test_timer_records_each_steps_own_peak_memory():
    """A step that holds 200 MB peaks 200 MB above one that holds nothing, also when it ran first (the mark is reset
    at each step) and when a quiet step is nested in it."""
    timer = Timer()
    with timer.step("big"):
        block = np.ones(25_000_000)  # 200 MB, touched
        with timer.step("quiet"):
            pass
        del block
    with timer.step("small"):
        np.ones(10)
    assert timer.peak_rss_mb["big"] - timer.peak_rss_mb["small"] > 150
    assert timer.peak_rss_mb["big"] - timer.peak_rss_mb["quiet"] < 20  # the block is resident during the nested step
    assert timer.peak_rss_mb["quiet"] - timer.peak_rss_mb["small"] > 150
    assert set(timer.seconds) == {"big", "quiet", "small"}
