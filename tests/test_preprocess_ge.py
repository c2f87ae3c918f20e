"""Stage 2 on the sample scene and on real GES files: frames, aligned cameras, failures that leave nothing behind."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pycolmap
import pytest

from aerialmd.formats.ges_json import decode_cameras, default_world_frame, read_ges_json
from aerialmd.formats.video import list_image_sequence
from aerialmd.geometry.camera import cam2world_from_cam_from_world, pose_errors
from aerialmd.layout import CAMERAS_FILE, SPARSE_GE_DIR
from aerialmd.run.scenes import save_scene_list
from aerialmd.stages.preprocess_ge import preprocess_ge, read_ge_cameras
from tests.helpers import GESBLENDER_ORIGIN, REPO_ROOT, ground_truth, make_data_root, shared_file


def test_sample_scene_frames_and_cameras_match_ground_truth(tiny_sample, tmp_path):
    paths, config = tiny_sample
    root, scene_list = make_data_root(tmp_path, paths, {"0001": ""})
    assert preprocess_ge(root, scene_list, workers=2) == 0
    scene_dir = root / "data" / "0001"
    frames = list_image_sequence(scene_dir / "footage")
    assert [f.name for f in frames] == [f"0001_{i:03d}.jpeg" for i in range(config.num_frames)]
    cameras = read_ge_cameras(scene_dir)
    assert cameras["frame"]["kind"] == "enu"
    assert cameras["frame"]["origin"]["latitude"] == pytest.approx(config.origin.latitude, abs=1e-9)
    truth = [im for im in ground_truth(paths)["images"] if im["kind"] == "aerial"]
    for image, true in zip(cameras["images"], truth):
        distance, angle = pose_errors(image["cam2world"], true["cam2world"])
        assert distance < 1e-6 and angle < 1e-6
        assert np.allclose(image["intrinsics"], true["intrinsics"], atol=1e-9)
    model = pycolmap.Reconstruction(str(scene_dir / SPARSE_GE_DIR))
    assert model.num_images() == config.num_frames
    for image in model.images.values():
        index = int(image.name.split("_")[1].split(".")[0])
        distance, angle = pose_errors(cam2world_from_cam_from_world(image.cam_from_world()), truth[index]["cam2world"])
        assert distance < 1e-6 and angle < 1e-6
    aligned = json.loads((scene_dir / "0001.json").read_text())
    assert len(aligned["cameraFrames"]) == aligned["numFrames"] + 1 == config.num_frames
    # resumable: a second run leaves the scene alone
    stamp = (scene_dir / CAMERAS_FILE).stat().st_mtime_ns
    assert preprocess_ge(root, scene_list) == 0
    assert (scene_dir / CAMERAS_FILE).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("edit, expected", [
    (lambda frames: frames[:-1], "dropped the last frame"),
    (lambda frames: frames + frames[-1:], "dropped the last camera"),
])
def test_off_by_one_is_handled_and_reported(tiny_sample, tmp_path, capsys, edit, expected):
    paths, config = tiny_sample
    root, scene_list = make_data_root(tmp_path, paths, {"0002": ""})
    json_path = root / "downloaded_data" / "0002.json"
    data = json.loads(json_path.read_text())
    data["cameraFrames"] = edit(data["cameraFrames"])
    json_path.write_text(json.dumps(data))
    assert preprocess_ge(root, scene_list) == 0
    assert expected in capsys.readouterr().out
    n = len(list_image_sequence(root / "data" / "0002" / "footage"))
    assert n == len(read_ge_cameras(root / "data" / "0002")["images"]) == min(config.num_frames, len(data["cameraFrames"]))


def _truncate_video(root, scene):
    path = root / "downloaded_data" / f"{scene}.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _json_edit(change):
    def apply(root, scene):
        path = root / "downloaded_data" / f"{scene}.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return apply


def _malformed_json(root, scene):
    (root / "downloaded_data" / f"{scene}.json").write_text('{"width": 1920, "cameraFrames": [')


def _frame_count_mismatch(data):
    data["cameraFrames"] = data["cameraFrames"][:2]


BREAKAGES = {
    "truncated mp4": (_truncate_video, "0003.mp4"),
    "malformed json": (_malformed_json, "malformed JSON"),
    "missing key": (_json_edit(lambda d: d.pop("cameraFrames")), "missing key 'cameraFrames'"),
    "nan": (_json_edit(lambda d: d["cameraFrames"][1]["rotation"].update(x=float("nan"))), "non-finite 'rotation'"),
    "count mismatch": (_json_edit(_frame_count_mismatch), "2 cameraFrames but"),
    "missing video": (lambda root, scene: (root / "downloaded_data" / f"{scene}.mp4").unlink(), "no video"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_failed_scene_is_skipped_with_reason_and_leaves_nothing(tiny_sample, tmp_path, capsys, breakage):
    paths, _ = tiny_sample
    root, scene_list = make_data_root(tmp_path, paths, {"0003": "", "0004": ""})
    damage, reason = BREAKAGES[breakage]
    damage(root, "0003")
    assert preprocess_ge(root, scene_list, workers=1) == 1
    out = capsys.readouterr().out
    failure_lines = [line for line in out.splitlines() if "0003: FAILED" in line]
    assert len(failure_lines) == 1 and reason in failure_lines[0]
    assert "1/2 scenes succeeded" in out
    assert not (root / "data" / "0003").exists()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["0004"]  # no temporary leftovers


def test_local_export_image_sequence_with_origin(tmp_path):
    """The real GESblender render as an image-sequence download, decoded in ENU at its known origin."""
    source = shared_file("real/ges_gesblender_local")
    downloaded = tmp_path / "downloaded_data" / "GESblender"
    shutil.copytree(source / "footage", downloaded / "footage")
    shutil.copyfile(source / "GESblender.json", downloaded / "GESblender.json")
    scene_list = tmp_path / "scenes.npz"
    save_scene_list(scene_list, {"GESblender": {"0": []}})
    code = preprocess_ge(tmp_path, scene_list, ["GESblender"], origin=GESBLENDER_ORIGIN)
    assert code == 0
    cameras = read_ge_cameras(tmp_path / "data" / "GESblender")
    export = read_ges_json(source / "GESblender.json")
    expected = decode_cameras(export, default_world_frame(export, GESBLENDER_ORIGIN))
    assert len(cameras["images"]) == len(expected) == 61
    for image, camera in zip(cameras["images"], expected):
        assert np.allclose(image["cam2world"], cam2world_from_cam_from_world(camera.cam_from_world), atol=1e-6)
    # the manual track of the GES UI agrees with the decoded positions (metres, read off by hand)
    altitudes = [np.linalg.norm(default_world_frame(export, GESBLENDER_ORIGIN).ecef_from_world(im["cam2world"][:3, 3]))
                 for im in cameras["images"]]
    track = np.loadtxt(source / "manual_tracking.csv", delimiter=",", skiprows=1, encoding="utf-8-sig")
    from aerialmd.geometry.geodesy import GES_SPHERE_RADIUS_M
    assert np.median(np.abs(np.array(altitudes) - GES_SPHERE_RADIUS_M - track[:, 3])) < 2.0


def test_script_runs_from_anywhere(tiny_sample, tmp_path):
    import subprocess
    paths, _ = tiny_sample
    root, scene_list = make_data_root(tmp_path, paths, {"0005": ""})
    run = subprocess.run([sys.executable, str(REPO_ROOT / "datasets_preprocess" / "preprocess_ge.py"), "--data_root",
                          str(root), "--scene_list", str(scene_list), "--scenes", "0005", "9999"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "9999" in run.stderr
    run = subprocess.run([sys.executable, str(REPO_ROOT / "datasets_preprocess" / "preprocess_ge.py"), "--data_root",
                          str(root), "--scene_list", str(scene_list)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (root / "data" / "0005" / CAMERAS_FILE).is_file()
