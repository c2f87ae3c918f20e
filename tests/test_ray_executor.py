"""run_pipeline.py --executor ray: a real local Ray instance runs the tiny sample's stages, one task per scene."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aerialmd.run.executors import compact_log, scenes_with_input, task_dense_conf
from aerialmd.run.pipeline import PipelinePaths
from aerialmd.run.scenes import Shard, load_scene_list, save_scene_list
from aerialmd.stages.dense import DenseConf
from tests.helpers import MVS_WORK_FLAGS, REPO_ROOT

# One CPU per scene (Ray then sets OMP_NUM_THREADS=1): on a loaded 2-core machine two spinning OpenMP threads per task
# made the dense stage ~15x slower. The dense stage as in the other pipeline tests (tiny depth maps: about 15 s on one
# CPU).
RAY_OPTIONS = ["--executor", "ray", "--ray_cpus_per_scene", "1", *MVS_WORK_FLAGS]


def run_pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, str(REPO_ROOT / "run_pipeline.py"), *args], capture_output=True, text=True,
                         cwd=cwd, timeout=1800)
    print(run.stdout[-3000:])
    return run


@pytest.mark.slow
def test_ray_executor_on_tiny_sample(tiny_sample, tmp_path):
    """Sample stage in the driver (on a copy of the session's tiny sample: reused, not rendered again), then one Ray
    task runs every other stage of its scene; a rerun finds everything done and a scene with a broken download fails
    alone, with a non-zero exit status."""
    root = tmp_path / "sample"
    shutil.copytree(tiny_sample[0].root, root)
    first = run_pipeline("--sample_root", str(root), "--sample_size", "tiny", *RAY_OPTIONS, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    config = json.loads((root / "sample_scene.json").read_text())
    scene = config["scene_id"]
    assert f"scene {scene}: ok" in first.stdout and "1/1 scenes ok" in first.stdout
    assert len(list((root / "data" / scene / "footage").glob("*.jpeg"))) == sum(o["frames"] for o in config["orbits"])
    assert len(list((root / "megadepth_processed" / scene / "0").glob("*.npz"))) == config["num_ground"]
    sfm = root / "data" / scene / "sfm_output_localization" / "sfm_sift+nn-ratio"
    assert (sfm / "registration.json").is_file()
    dense = sfm / "localized_dense_metric"
    assert len(list((dense / "depths").glob("*.h5"))) == len(list((dense / "images").iterdir())) > 0

    # the same data as a user's data root, with a second scene whose download lacks its video
    (root / "downloaded_data" / "9999.json").write_text((root / "downloaded_data" / f"{scene}.json").read_text())
    scenes = load_scene_list(root / "megadepth_image_list.npz")
    save_scene_list(tmp_path / "list.npz", {**scenes, "9999": scenes[scene]})
    second = run_pipeline("--data_root", str(root), "--megadepth_dir", str(root / "megadepth"), "--scene_list",
                          str(tmp_path / "list.npz"), *RAY_OPTIONS, cwd=tmp_path)
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"scene {scene}: ok" in second.stdout and "already done" in second.stdout
    assert "scene 9999: FAILED at preprocess_ge" in second.stdout and "no video" in second.stdout
    assert "1/2 scenes ok" in second.stdout
    statuses = {json.loads(p.read_text())["scene"]: json.loads(p.read_text())["status"]
                for p in (root / "reports").glob("*/report.json")}
    assert statuses == {scene: "complete", "9999": "incomplete: preprocess_ge not done"}
    index = (root / "index.html").read_text()
    assert f'id="scene-{scene}"' in index and 'id="scene-9999"' in index


def make_data_root(root: Path) -> PipelinePaths:
    """Scenes 0001 (downloaded), 0002 (json only: incomplete), 0003 (nothing downloaded), 0004 (image sequence)."""
    downloaded = root / "downloaded_data"
    (downloaded / "0004" / "footage").mkdir(parents=True)
    for name in ("0001.json", "0001.mp4", "0002.json", "0004/0004.json"):
        (downloaded / name).write_text("{}")
    save_scene_list(root / "list.npz", {s: {"0": ["a.jpg"]} for s in ("0001", "0002", "0003", "0004")})
    return PipelinePaths(root, root / "megadepth", root / "list.npz", root / "processed")


def test_scenes_with_input(tmp_path):
    paths = make_data_root(tmp_path)
    assert scenes_with_input(paths, None) == ["0001", "0002", "0004"]  # incomplete downloads fail in their task
    assert scenes_with_input(paths, None, Shard(0, 2)) == ["0001"]  # shard of the list (0001, 0003), then inputs
    assert scenes_with_input(paths, ["0003", "0001"]) == ["0001", "0003"]  # requested: the stages report what's missing
    with pytest.raises(ValueError, match="0005"):
        scenes_with_input(paths, ["0005"])


def test_compact_log_keeps_final_progress():
    text = "=== stage ===\nbar:  0%\rbar: 50%\rbar: 100%\n\n[stage] scene 1: ok\n"
    assert compact_log(text) == "=== stage ===\nbar: 100%\n[stage] scene 1: ok"
    assert compact_log("a\nb\nc\n", max_lines=2) == "b\nc"


def test_task_dense_conf():
    assert task_dense_conf(DenseConf(), 0).device == "cpu"  # Ray leaves GPUs visible to tasks without one
    assert task_dense_conf(DenseConf(), 1).device == "auto"
    assert task_dense_conf(DenseConf(device="cuda"), 0).device == "cuda"
    with pytest.raises(ValueError, match="ray_gpus_per_scene"):
        task_dense_conf(DenseConf(backend="colmap"), 0)


def test_workers_get_the_whole_package():
    """connect() ships PACKAGE_DIR to the Ray workers (runtime_env py_modules): it must be the aerialmd package itself,
    not the folder of the executors module, or nodes without the code cannot import the stages."""
    from aerialmd.run import executors

    assert (executors.PACKAGE_DIR / "__init__.py").is_file() and executors.PACKAGE_DIR.name == "aerialmd"
    assert (executors.PACKAGE_DIR / "stages" / "dense.py").is_file()
