"""End to end on the tiny sample: run_pipeline.py, and MegaDepth preprocessing checked against the ground truth."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from aerialmd.depth_io import read_depth_exr
from aerialmd.megadepth import preprocess_megadepth
from tests.conftest import REPO_ROOT
from tests.test_sample_scene import ground_truth, pose_errors


def test_preprocessed_megadepth_matches_ground_truth(tiny_sample, tmp_path):
    """Exported intrinsics, poses and depths are the ground truth's, up to the scene's SfM similarity."""
    paths, config = tiny_sample
    out = tmp_path / "processed"
    assert preprocess_megadepth(paths.megadepth_root, paths.scene_list, out, workers=2) == 0
    truth = ground_truth(paths)
    sim = truth["sfm_from_world"]
    scale, R, t = sim["scale"], np.array(sim["rotation_matrix"]), np.array(sim["translation"])
    ground = [im for im in truth["images"] if im["kind"] == "ground"]
    assert len(ground) == config.num_ground
    for image in ground:
        stem = out / config.scene_id / "0" / image["name"]
        camera = np.load(f"{stem}.npz")
        depth = read_depth_exr(f"{stem}.exr")
        height, width = depth.shape
        sx, sy = width / image["width"], height / image["height"]
        # intrinsics of the resized image: scale in COLMAP's pixel convention (corners), OpenCV's is 0.5 px off
        K = image["intrinsics"].copy()
        K[0, :] *= sx
        K[1, :] *= sy
        K[0, 2] = (image["intrinsics"][0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (image["intrinsics"][1, 2] + 0.5) * sy - 0.5
        assert np.allclose(camera["intrinsics"], K, atol=1e-6)
        expected = np.eye(4)
        expected[:3, :3] = R @ image["cam2world"][:3, :3]
        expected[:3, 3] = scale * R @ image["cam2world"][:3, 3] + t
        distance, angle = pose_errors(camera["cam2world"], expected)
        assert distance < 1e-6 * max(scale, 1.0) * 1000 and angle < 1e-6
        true_depth = read_depth_exr(paths.ground_truth_dir / "depth" / f"{image['name']}.exr")
        if (width, height) == (image["width"], image["height"]):
            assert np.allclose(depth, true_depth * scale, rtol=1e-5)
        else:  # nearest-neighbour resize: every output depth is one of the true depths at a nearby pixel
            v, u = np.nonzero(depth > 0)
            src = true_depth[np.minimum((v / sy).astype(int), image["height"] - 1),
                             np.minimum((u / sx).astype(int), image["width"] - 1)] * scale
            assert np.median(np.abs(depth[v, u] - src) / src) < 1e-3


def test_run_pipeline_on_tiny_sample(tmp_path):
    """The main job: sample made, every stage run, summary printed; a second run reuses everything."""
    root = tmp_path / "sample"
    cmd = [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "--sample_root", str(root), "--sample_size", "tiny",
           "--mvs_max_image_size", "160"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = first.stdout.split("stage")[-1]
    assert all(name in summary for name in ("sample_scene", "preprocess_ge", "preprocess_megadepth", "localization",
                                            "dense"))
    assert "FAILED" not in summary
    config = json.loads((root / "sample_scene.json").read_text())
    frames = sorted((root / "data" / config["scene_id"] / "footage").glob("*.jpeg"))
    assert len(frames) == sum(o["frames"] for o in config["orbits"])
    processed = sorted((root / "megadepth_processed" / config["scene_id"] / "0").glob("*.npz"))
    assert len(processed) == config["num_ground"]
    dense = root / "data" / config["scene_id"] / "sfm_output_localization" / "sfm_sift+nn-ratio" / "localized_dense_metric"
    assert len(list((dense / "depths").glob("*.h5"))) == len(list((dense / "images").iterdir())) >= len(frames)
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0 and "already done" in second.stdout


def test_run_pipeline_rejects_a_foreign_folder(tmp_path):
    (tmp_path / "sample" / "something").mkdir(parents=True)
    run = subprocess.run([sys.executable, str(REPO_ROOT / "run_pipeline.py"), "--sample_root", str(tmp_path / "sample"),
                          "--sample_size", "tiny"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "not a sample scene" in run.stderr
