"""Settings markers: a finished output with other settings is refused (without --overwrite), never silently reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aerialmd.geometry.geodesy import SpherePoint
from aerialmd.layout import CAMERAS_FILE, SPARSE_GE_DIR
from aerialmd.run.markers import MADE_FROM_KEY, SETTINGS_KEY, input_fingerprints, is_finished
from aerialmd.stages.localization import LocalizationConf, localize
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import write_camera_npz
from tests.helpers import copy_localized, make_data_root


def test_is_finished(tmp_path):
    marker = tmp_path / "out" / "report.json"
    assert not is_finished(marker, {"size": (640, 480)})  # nothing there yet
    marker.parent.mkdir()
    marker.write_text(json.dumps({SETTINGS_KEY: {"size": [640, 480], "planes": 128}}))
    assert is_finished(marker, {"size": (640, 480), "planes": 128})  # a tuple reads back as a list
    with pytest.raises(ValueError, match=r"out was made with other settings \(planes: 128 -> 64\).*--overwrite"):
        is_finished(marker, {"size": (640, 480), "planes": 64})
    with pytest.raises(ValueError, match=r"seed: absent -> 1"):
        is_finished(marker, {"size": (640, 480), "planes": 128, "seed": 1})


def test_is_finished_refuses_an_output_of_a_redone_upstream_stage(tmp_path):
    upstream = tmp_path / "upstream.json"
    upstream.write_text('{"settings": {"origin": null}}')
    inputs = input_fingerprints(upstream, tmp_path / "absent.json")
    assert list(inputs) == ["upstream.json"]  # markers that do not exist are not fingerprinted
    marker = tmp_path / "out" / "report.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps({SETTINGS_KEY: {"planes": 128}, MADE_FROM_KEY: inputs}))
    assert is_finished(marker, {"planes": 128}, input_fingerprints(upstream))
    upstream.write_text('{"settings": {"origin": [1, 2, 3]}}')  # the upstream stage was redone
    with pytest.raises(ValueError, match=r"out was made from an earlier upstream.json .*--overwrite"):
        is_finished(marker, {"planes": 128}, input_fingerprints(upstream))
    assert is_finished(marker, {"planes": 128})  # an upstream marker that is gone now is not compared
    marker.write_text(json.dumps({SETTINGS_KEY: {"planes": 128}}))
    assert is_finished(marker, {"planes": 128}, input_fingerprints(upstream))  # made before fingerprints existed


def test_preprocess_ge_refuses_another_origin(tiny_sample, tmp_path, capsys):
    paths, _ = tiny_sample
    root, scene_list = make_data_root(tmp_path, paths, {"0007": ""})
    assert preprocess_ge(root, scene_list, workers=2) == 0
    cameras = root / "data" / "0007" / CAMERAS_FILE
    before = cameras.read_bytes()
    assert json.loads(before)[SETTINGS_KEY] == {"origin": None}
    assert preprocess_ge(root, scene_list, workers=2) == 0
    assert "already done" in capsys.readouterr().out
    assert preprocess_ge(root, scene_list, origin=SpherePoint(10.0, 20.0, 0.0), workers=2) == 1
    assert "other settings (origin: None -> {'latitude': 10.0" in capsys.readouterr().out
    assert cameras.read_bytes() == before


@pytest.mark.slow
def test_localization_refuses_other_settings(localized, tmp_path, capsys):
    sfm_dir, _, paths, processed = copy_localized(localized, tmp_path / "sample")
    registration = sfm_dir / "registration.json"
    before = registration.read_bytes()
    assert json.loads(before)[SETTINGS_KEY]["features"]["max_keypoints"] > 1000
    assert localize(paths.root / "data", processed, paths.scene_list) == 0
    assert "already done" in capsys.readouterr().out
    assert localize(paths.root / "data", processed, paths.scene_list,
                    conf=LocalizationConf(max_keypoints=1000)) == 1
    assert "other settings (features:" in capsys.readouterr().out
    assert registration.read_bytes() == before


@pytest.mark.slow
def test_redone_stage_2_keeps_stage_4_whose_refusal_depends_on_the_new_cameras(localized, tmp_path, capsys):
    sfm_dir, _, paths, processed = copy_localized(localized, tmp_path / "sample")
    cameras = paths.root / "data" / paths.scene_id / CAMERAS_FILE
    registration = sfm_dir / "registration.json"
    cameras_before, registration_before = cameras.read_bytes(), registration.read_bytes()
    origin = SpherePoint(48.8584, 2.2945, 40.0)
    assert preprocess_ge(paths.root, paths.scene_list, origin=origin, overwrite=True, workers=2) == 0
    assert cameras.read_bytes() != cameras_before and registration.read_bytes() == registration_before
    capsys.readouterr()
    assert localize(paths.root / "data", processed, paths.scene_list) == 1
    assert f"made from an earlier {CAMERAS_FILE}" in capsys.readouterr().out
    assert preprocess_ge(paths.root, paths.scene_list, overwrite=True, workers=2) == 0  # back to the original origin
    assert cameras.read_bytes() == cameras_before  # deterministic: the redone stage 2 is the same
    assert localize(paths.root / "data", processed, paths.scene_list) == 0
    assert "already done" in capsys.readouterr().out
    assert registration.read_bytes() == registration_before


@pytest.mark.slow
def test_localization_notices_megadepth_photos_changed_since(localized, tmp_path, capsys):
    """Stage 4a made from other stage-3 outputs than there are now (a photo preprocessed since, or redone with another
    pose) is refused, not reported as done."""
    sfm_dir, _, paths, processed = copy_localized(localized, tmp_path / "sample")
    camera_file = sorted((processed / paths.scene_id / "0").glob("*.npz"))[0]
    before = camera_file.read_bytes()
    aside = camera_file.with_name(camera_file.name + ".aside")
    changed = "made from an earlier preprocess_megadepth output of subscene 0"
    with np.load(camera_file) as data:
        intrinsics, cam2world = np.array(data["intrinsics"]), np.array(data["cam2world"])
    write_camera_npz(camera_file, intrinsics, cam2world)  # stage 3 redone as it was
    capsys.readouterr()
    assert localize(paths.root / "data", processed, paths.scene_list) == 0
    assert "already done" in capsys.readouterr().out
    cam2world[:3, 3] += 1.0  # stage 3 redone from another SfM model
    write_camera_npz(camera_file, intrinsics, cam2world)
    assert localize(paths.root / "data", processed, paths.scene_list) == 1
    assert changed in capsys.readouterr().out
    camera_file.rename(aside)  # the photo's outputs are not (or not yet) there
    assert localize(paths.root / "data", processed, paths.scene_list) == 1
    assert changed in capsys.readouterr().out
    aside.unlink()
    camera_file.write_bytes(before)  # the original output back
    assert localize(paths.root / "data", processed, paths.scene_list) == 0
    assert "already done" in capsys.readouterr().out


def test_localization_waits_for_a_finished_stage_2(tiny_sample, tmp_path, capsys):
    """A scene folder whose stage 2 was interrupted (entries moved in, ge_cameras.json not yet) is not stage-2 output."""
    paths, config = tiny_sample
    scene_dir = tmp_path / "data" / config.scene_id
    (scene_dir / SPARSE_GE_DIR).mkdir(parents=True)
    (scene_dir / "footage").mkdir()
    assert localize(tmp_path / "data", tmp_path / "processed", paths.scene_list, [config.scene_id]) == 1
    assert f"{CAMERAS_FILE}: no finished stage-2 output (run preprocess_ge)" in capsys.readouterr().out
    assert localize(tmp_path / "data", tmp_path / "processed", paths.scene_list) == 0  # not requested: passed over
