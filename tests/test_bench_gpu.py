"""bench/bench_gpu.py as a smoke test on the CPU (--device cpu, the tiny sample, small settings): every step runs and
its accuracy figures come from the ground truth. On a GPU machine the same script is run with its defaults."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pycolmap
import pytest

from tests.helpers import PIPELINE_ENV, REPO_ROOT


@pytest.mark.slow
def test_bench_gpu_runs_every_step_on_the_cpu(tiny_sample, tmp_path):
    paths, _ = tiny_sample
    root = tmp_path / "sample"
    shutil.copytree(paths.root, root)
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_gpu.py"), "--device", "cpu",
                          "--sample_size", "tiny", "--root", str(root), "--max_image_size", "128",
                          "--max_keypoints", "512", "--resize_max", "320", "--json", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, env=PIPELINE_ENV)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {row["step"]: row for row in result["rows"]}
    assert result["device"] == "cpu"
    for name in ("sfm_sift+nn-ratio", "sfm_aliked+lightglue"):
        assert rows[f"registration {name}"]["accuracy"].startswith("registered 5/5"), rows
    dense = rows["dense torch"]
    assert dense["images"] == 23 and "aerial coverage" in dense["accuracy"] and "ground coverage" in dense["accuracy"]
    aerial_coverage = float(dense["accuracy"].split("aerial coverage ")[1].split()[0])
    assert aerial_coverage > 0.5, dense
    if not pycolmap.has_cuda:
        assert rows["dense colmap"]["accuracy"] == "skipped: pycolmap without CUDA"
    assert "whole script" in run.stdout
