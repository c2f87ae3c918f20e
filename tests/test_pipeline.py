"""End to end on the tiny sample: run_pipeline.py, and MegaDepth preprocessing checked against the ground truth."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Callable

import cv2
import h5py
import numpy as np
import pytest

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.pair_file import load_pair_file
from aerialmd.geometry.camera import pose_errors
from aerialmd.layout import DENSE_DIR, DENSE_REPORT
from aerialmd.run.scenes import load_scene_list, save_scene_list
from aerialmd.stages.make_pairs import pair_kind
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth
from aerialmd.stages.report import write_index, write_reports
from tests.helpers import PIPELINE_DENSE, PIPELINE_ENV, REPO_ROOT, ground_truth, pipeline_command


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


# pipeline_run (conftest.py) is the uninterrupted run of run_pipeline.py on the tiny sample that these tests share.


def assert_training_data(root: Path, stdout: str) -> None:
    """The product of the main job: the pair file with pairs of every kind, the export of every image it names, the
    loader check passed, and the summary naming both."""
    pair_file = load_pair_file(root / "aerial_megadepth.npz")
    scene = pair_file.scenes[0]
    names = {pair_file.images[i] for i in (*pair_file.im1_id, *pair_file.im2_id)}
    kinds = {pair_kind(pair_file.images[i], pair_file.images[j], scene)
             for i, j in zip(pair_file.im1_id, pair_file.im2_id)}
    assert kinds == {"aerial-aerial", "aerial-ground", "ground-ground"}
    for name in names:
        assert all((root / "aerial_megadepth_processed" / scene / f"{name}{suffix}").is_file()
                   for suffix in (".jpg", ".exr", ".npz")), name
    assert "[training_data] loader check passed" in stdout
    assert f"training data: pair file {root / 'aerial_megadepth.npz'}" in stdout
    assert str(root / "aerial_megadepth_processed") in stdout.splitlines()[-1]


@pytest.mark.slow
def test_run_pipeline_on_tiny_sample(pipeline_run, tmp_path):
    """The main job: every stage run (the sample stage finds the session's tiny sample, copied there; the kill-and-resume
    test makes one), summary printed; a second run (on a copy) reuses everything."""
    root, first = pipeline_run
    summary = first.stdout.split("stage")[-1]
    assert all(name in summary for name in ("sample_scene", "preprocess_ge", "preprocess_megadepth", "localization",
                                            "dense", "make_pairs", "export", "report", "training_data"))
    assert "FAILED" not in summary
    assert_training_data(root, first.stdout)
    config = json.loads((root / "sample_scene.json").read_text())
    frames = sorted((root / "data" / config["scene_id"] / "footage").glob("*.jpeg"))
    assert len(frames) == sum(o["frames"] for o in config["orbits"])
    processed = sorted((root / "megadepth_processed" / config["scene_id"] / "0").glob("*.npz"))
    assert len(processed) == config["num_ground"]
    dense = root / "data" / config["scene_id"] / "sfm_output_localization" / "sfm_sift+nn-ratio" / "localized_dense_metric"
    assert len(list((dense / "depths").glob("*.h5"))) == len(list((dense / "images").iterdir())) >= len(frames)
    assert f"index of all scenes: {root / 'index.html'}" in first.stdout
    copy = tmp_path / "sample"
    shutil.copytree(root, copy)
    second = subprocess.run(pipeline_command(copy), capture_output=True, text=True, cwd=tmp_path, env=PIPELINE_ENV)
    assert second.returncode == 0 and "already done" in second.stdout


def output_files(root: Path) -> dict[str, Path]:
    """Every product of the stages by path relative to the root; timings and reports left out (they vary run to run),
    so are SQLite databases (their pages hold free-space garbage)."""
    skipped = {"timings.json", "peak_memory.json", "database.db", "dense.json"}
    files = {}
    for folder in ("data", "megadepth_processed"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.name not in skipped:
                files[str(path.relative_to(root))] = path
    return files


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def same_content(a: Path, b: Path) -> bool:
    """Identical bytes, or for HDF5 files (features, matches, depth maps) the same datasets with identical arrays
    (their metadata may differ)."""
    if a.suffix == ".h5":
        first, second = h5_arrays(a), h5_arrays(b)
        return first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    return a.read_bytes() == b.read_bytes()


def dense_json_without_timings(path: Path) -> dict:
    document = json.loads(path.read_text())
    document.pop("timings")
    document.pop("peak_rss_mb")
    return document


def run_until_killed(command: list[str], cwd: Path, condition: Callable[[], bool], what: str) -> None:
    """Start the pipeline and SIGKILL its whole process group as soon as `condition` holds; fails the test when the
    run ends first (the kill point was never reached)."""
    process = subprocess.Popen(command, cwd=cwd, env=PIPELINE_ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while process.poll() is None:
            if condition():
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
            time.sleep(0.02)
        pytest.fail(f"the pipeline ended (exit {process.returncode}) before {what}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_killed_pipeline_resumes_to_identical_outputs(pipeline_run, tmp_path):
    """SIGKILL during sample generation, during registration and twice during MVS; every rerun goes on from what was
    finished, and the end result equals the uninterrupted run's, file by file."""
    reference, _ = pipeline_run
    root = tmp_path / "sample"
    scene = json.loads((reference / "sample_scene.json").read_text())["scene_id"]
    sfm_root = root / "data" / scene / "sfm_output_localization"
    raw = sfm_root / "sfm_sift+nn-ratio" / "dense_work" / "undistorted" / "raw"
    kill_points = [
        ("sample generation is under way", lambda: any(tmp_path.glob(".sample.tmp-*/*"))),
        ("registration is under way", lambda: any(sfm_root.glob(".sfm_*.tmp-*/features.h5"))),
        ("MVS has written 2 depth maps", lambda: len(list(raw.glob("*.h5"))) >= 2),
        ("MVS has written 6 depth maps", lambda: len(list(raw.glob("*.h5"))) >= 6),
    ]
    for what, condition in kill_points:
        run_until_killed(pipeline_command(root), tmp_path, condition, what)
    final = subprocess.run(pipeline_command(root), capture_output=True, text=True, cwd=tmp_path, env=PIPELINE_ENV)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    expected, produced = output_files(reference), output_files(root)
    assert sorted(produced) == sorted(expected)
    different = [name for name in expected if not same_content(expected[name], produced[name])]
    assert not different, f"{len(different)} of {len(expected)} files differ, e.g. {different[:5]}"
    dense_json = f"data/{scene}/sfm_output_localization/sfm_sift+nn-ratio/localized_dense_metric/dense.json"
    assert dense_json_without_timings(reference / dense_json) == dense_json_without_timings(root / dense_json)
    assert not list(tmp_path.rglob(".*.tmp-*")), "temporaries of the killed runs left behind"


@pytest.mark.slow
def test_summary_names_the_failed_stage_not_an_earlier_pair_file(pipeline_run, tmp_path):
    """A rerun whose export fails (its depth input changed since it was made) must not end by pointing at the
    training data an earlier run left: the last line names the failed stage."""
    reference, _ = pipeline_run
    root = tmp_path / "sample"
    shutil.copytree(reference, root)
    dense_json = next(root.glob("data/*/sfm_output_localization/*/localized_dense_metric/dense.json"))
    report = json.loads(dense_json.read_text())
    report["timings"]["sweep"] += 1.0
    dense_json.write_text(json.dumps(report))
    run = subprocess.run(pipeline_command(root), capture_output=True, text=True, cwd=tmp_path, env=PIPELINE_ENV)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert (root / "aerial_megadepth.npz").is_file()
    assert run.stdout.strip().splitlines()[-1] == "training data: not made by this run (failed: export)"


def test_run_pipeline_rejects_a_foreign_folder(tmp_path):
    (tmp_path / "sample" / "something").mkdir(parents=True)
    run = subprocess.run([sys.executable, str(REPO_ROOT / "run_pipeline.py"), "--sample_root", str(tmp_path / "sample"),
                          "--sample_size", "tiny"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "not a sample scene" in run.stderr


def figure_is_drawn(path: Path) -> bool:
    """A PNG that decodes to a real picture: not tiny, and more than a blank page (some pixels far from white)."""
    image = cv2.imread(str(path))
    return image is not None and min(image.shape[:2]) >= 200 and (image.min(axis=2) < 200).mean() > 0.01


@pytest.mark.slow
def test_scene_report_and_figures(pipeline_run):
    """report.json tells the truth about the run (counts checked against the sample's ground truth and the outputs)
    and every figure is a drawn picture."""
    root, _ = pipeline_run
    config = json.loads((root / "sample_scene.json").read_text())
    report = json.loads((root / "reports" / config["scene_id"] / "report.json").read_text())
    assert report["status"] == "complete" and all(report["stages"].values())
    assert report["counts"] == {"aerial_frames": sum(o["frames"] for o in config["orbits"]),
                                "ground_photos_preprocessed": config["num_ground"]}
    model = report["models"]["sfm_sift+nn-ratio"]
    photos = model["registration"]["photos"]
    assert len(photos) == config["num_ground"] and all(p["num_inliers"] > 0 for p in photos.values())
    dense = root / "data" / config["scene_id"] / "sfm_output_localization" / "sfm_sift+nn-ratio" / "localized_dense_metric"
    assert model["dense"]["summary"]["images"] == len(list((dense / "depths").glob("*.h5")))
    assert model["settings"]["dense"] == PIPELINE_DENSE.settings()  # the MVS flags reached the dense stage
    assert model["settings"]["localization"]["features"]["name"] == "sift"
    assert {"extraction", "matching"} <= set(model["timings"]["localization"]) and "sweep" in model["timings"]["dense"]
    assert {"python", "torch", "pycolmap"} <= set(report["versions"])
    assert len(report["figures"]) == 3
    for name in report["figures"]:
        assert figure_is_drawn(root / "reports" / config["scene_id"] / name), name


def headless_chromium(width: int = 1400, height: int = 1000) -> list[str]:
    """The command of headless Chromium with a window of this size (the test is skipped without one)."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        pytest.skip("no Chromium (CI installs Debian's chromium)")
    return [found, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}"]


def index_statuses(root: Path) -> dict[str, str]:
    """Scene -> status of the rows of <root>/index.html."""
    page = (root / "index.html").read_text()
    return dict(re.findall(r'<tr id="scene-(\w+)"><td>.*?</td><td class="\w+">(.*?)</td>', page))


@pytest.mark.slow
def test_index_marks_stale_reports_and_outdated_outputs(pipeline_run, tmp_path):
    reference, _ = pipeline_run
    scene = json.loads((reference / "sample_scene.json").read_text())["scene_id"]
    root = tmp_path / "root"
    for folder in ("data", "megadepth_processed", "downloaded_data"):
        shutil.copytree(reference / folder, root / folder, symlinks=True)
    shutil.copyfile(reference / "megadepth_image_list.npz", root / "list.npz")
    assert write_reports(root, root / "megadepth_processed", root / "list.npz") == 0
    assert index_statuses(root) == {scene: "complete"}
    dense_report = next((root / "data" / scene).glob(f"sfm_output_localization/sfm_*/{DENSE_DIR}/{DENSE_REPORT}"))
    dense_report.write_text(dense_report.read_text().replace('"backend"', '"backend" ', 1))  # stage 4b redone
    write_index(root)
    assert index_statuses(root)[scene].startswith("stale: the outputs changed since this report")
    assert write_reports(root, root / "megadepth_processed", root / "list.npz") == 0
    assert index_statuses(root) == {scene: "complete"}
    cameras = root / "data" / scene / "ge_cameras.json"
    cameras.write_text(cameras.read_text().replace('"scene"', '"scene" ', 1))  # stage 2 redone, differently
    assert write_reports(root, root / "megadepth_processed", root / "list.npz") == 0
    assert index_statuses(root)[scene] == ("outdated: sfm_sift+nn-ratio made from an earlier ge_cameras.json (redo "
                                           "stage 4 with --overwrite)")
    shutil.rmtree(root / "data" / scene)  # a scene folder deleted after its report
    write_index(root)
    assert index_statuses(root)[scene].startswith("stale")


@pytest.mark.slow
def test_index_opens_in_chromium_and_shows_every_scene(pipeline_run, tmp_path):
    """A data root with the finished sample scene and a second scene whose download was never processed: the index,
    rendered by headless Chromium, lists both with their status, and its screenshot shows the figures."""
    reference, _ = pipeline_run
    scene = json.loads((reference / "sample_scene.json").read_text())["scene_id"]
    root = tmp_path / "root"
    for folder in ("data", "megadepth_processed", "downloaded_data"):
        shutil.copytree(reference / folder, root / folder, symlinks=True)
    for suffix in (".json", ".mp4"):
        shutil.copyfile(root / "downloaded_data" / f"{scene}{suffix}", root / "downloaded_data" / f"9001{suffix}")
    scenes = load_scene_list(reference / "megadepth_image_list.npz")
    save_scene_list(root / "list.npz", {**scenes, "9001": scenes[scene], "9002": scenes[scene]})  # 9002: no download
    assert write_reports(root, root / "megadepth_processed", root / "list.npz") == 0
    browser = headless_chromium()
    url = (root / "index.html").as_uri()
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    rows = re.findall(r'<tr id="scene-(\w+)"><td>.*?</td><td class="\w+">(.*?)</td>', dom)
    assert rows == [(scene, "complete"), ("9001", "incomplete: preprocess_ge not done")]
    for link in re.findall(r'<img src="([^"]+)"', dom):
        assert figure_is_drawn(root / urllib.parse.unquote(link)), link
    shot = tmp_path / "index.png"
    subprocess.run([*browser, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, 1400)
    colourful = np.abs(image.astype(int) - image.mean(axis=2, keepdims=True)).max(axis=2) > 40  # the figures' colours
    assert colourful.mean() > 0.005


@pytest.mark.slow
def test_scene_view_opens_from_the_index_and_draws_both_kinds_of_cameras(pipeline_run, tmp_path):
    """The 3D view that index.html links, rendered by headless Chromium: it holds a frustum per aerial frame and per
    registered photo (counted from the sample and registration.json), and its screenshot shows the aerial (orange)
    and ground (blue) cameras and depth clouds."""
    root, _ = pipeline_run
    config = json.loads((root / "sample_scene.json").read_text())
    browser = headless_chromium(1000, 800)
    dom = subprocess.run([*browser, "--dump-dom", (root / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    links = re.findall(r'<a class="view" href="([^"]+)">', dom)
    assert len(links) == 1, links
    page = root / urllib.parse.unquote(links[0])
    data = json.loads(re.search(r"const data = (\{.*?\});\n", page.read_text()).group(1))
    segments = {layer["name"].split(" (")[0]: len(layer["segments"]) // 6 for layer in data["layers"]
                if "segments" in layer}
    registration = json.loads(next(root.glob("data/*/sfm_output_localization/*/registration.json")).read_text())
    num_frames = sum(orbit["frames"] for orbit in config["orbits"])
    assert segments == {"aerial cameras": 8 * num_frames, "ground cameras": 8 * registration["counts"]["registered"]}
    shot = tmp_path / "view.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    image = cv2.imread(str(shot)).astype(int)  # BGR
    assert image.shape[:2] == (800, 1000)
    orange = (np.abs(image - [0, 140, 255]).max(axis=2) < 40).mean()
    blue = (np.abs(image - [255, 120, 30]).max(axis=2) < 40).mean()
    assert orange > 0.002 and blue > 0.0005, (orange, blue)
