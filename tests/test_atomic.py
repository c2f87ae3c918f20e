"""Atomic outputs: a killed writer's temporaries are cleaned up, a live writer's are left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aerialmd.atomic import atomic_dir, atomic_entries, temporary_sibling


def test_atomic_dir_removes_temporaries_of_dead_writers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "scene"
    live = temporary_sibling(target)  # this process's: a writer still at work
    live.mkdir()
    stale = tmp_path / live.name.replace(f"tmp-{live.name.split('-')[1]}-", f"tmp-{dead_pid}-")
    (stale / "features.h5").parent.mkdir()
    (stale / "features.h5").write_text("half written")
    unrelated = tmp_path / ".keep.tmp-notes"
    unrelated.write_text("not ours")
    other_scene = tmp_path / stale.name.replace(".scene.", ".other.")  # maybe another node's writer: pids are per host
    other_scene.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (target / "done.txt").read_text() == "ok"
    assert live.is_dir() and unrelated.is_file() and other_scene.is_dir() and not stale.exists()


def test_atomic_entries_replace_their_namesakes_only_and_put_the_marker_last(tmp_path):
    scene = tmp_path / "scene"
    (scene / "footage").mkdir(parents=True)
    (scene / "footage" / "old_000.jpeg").write_text("old frame")
    (scene / "cameras.json").write_text("old marker")
    (scene / "later_stage").mkdir()
    (scene / "later_stage" / "model.bin").write_text("hours of work")
    with pytest.raises(RuntimeError, match="decoding failed"):
        with atomic_entries(scene, "cameras.json") as tmp:
            (tmp / "footage").mkdir()
            raise RuntimeError("decoding failed")
    assert (scene / "cameras.json").read_text() == "old marker" and (scene / "footage" / "old_000.jpeg").is_file()
    with pytest.raises(FileNotFoundError, match="marker was not written"):
        with atomic_entries(scene, "cameras.json") as tmp:
            (tmp / "footage").mkdir()
    assert (scene / "footage" / "old_000.jpeg").is_file()
    with atomic_entries(scene, "cameras.json") as tmp:
        (tmp / "footage").mkdir()
        (tmp / "footage" / "new_000.jpeg").write_text("new frame")
        (tmp / "cameras.json").write_text("new marker")
    assert sorted(p.name for p in (scene / "footage").iterdir()) == ["new_000.jpeg"]
    assert (scene / "cameras.json").read_text() == "new marker"
    assert (scene / "later_stage" / "model.bin").read_text() == "hours of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # no temporaries left
    assert sorted(p.name for p in scene.iterdir()) == ["cameras.json", "footage", "later_stage"]
