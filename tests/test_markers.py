"""Settings markers: a finished output with other settings is refused (without --overwrite), never silently reused."""

from __future__ import annotations

import json

import pytest

from aerialmd.ge_preprocess import CAMERAS_FILE, preprocess_ge
from aerialmd.geodesy import SpherePoint
from aerialmd.localization import localize
from aerialmd.markers import SETTINGS_KEY, is_finished
from tests.test_preprocess_ge import make_data_root


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


def test_localization_refuses_other_settings(localized, capsys):
    sfm_dir, _, paths, processed = localized
    registration = sfm_dir / "registration.json"
    before = registration.read_bytes()
    assert json.loads(before)[SETTINGS_KEY]["features"]["max_keypoints"] > 1000
    assert localize(paths.root / "data", processed, paths.scene_list, features="sift") == 0
    assert "already done" in capsys.readouterr().out
    assert localize(paths.root / "data", processed, paths.scene_list, features="sift", max_keypoints=1000) == 1
    assert "other settings (features:" in capsys.readouterr().out
    assert registration.read_bytes() == before
