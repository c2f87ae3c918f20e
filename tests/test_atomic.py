"""Atomic outputs: a killed writer's temporaries are cleaned up, a live writer's are left alone."""

from __future__ import annotations

import subprocess
import sys

from aerialmd.atomic import atomic_dir, temporary_sibling


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
