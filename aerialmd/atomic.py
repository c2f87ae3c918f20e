"""Atomic outputs: everything is written under a temporary name and renamed into place only when complete.

A crash or a failed scene therefore never leaves a partial file or folder that looks finished. Temporaries left by a
process that was killed are removed the next time the same folder is written (their names hold the writer's process
id, so a temporary of a live writer is never touched).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

TEMPORARY_NAME = re.compile(r"\.(.+)\.tmp-(\d+)-[0-9a-f]{8}")  # .<target name>.tmp-<writer pid>-<hex>


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name next to `path`, on the same file system so the final rename is atomic."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: Path, target: str | None = None) -> None:
    """Delete the temporaries in `folder` (only those of `target` when given) whose writing process no longer runs
    (it was killed mid-write). Process ids are per machine: on storage shared by a cluster, give the target, so that
    a scene's writer only ever removes temporaries of its own scene, never those of a scene another node is writing."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = TEMPORARY_NAME.fullmatch(entry.name)
        if match and (target is None or match.group(1) == target) and not process_alive(int(match.group(2))):
            remove_path(entry)


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_path(source: Path, target: Path) -> None:
    """Put `source` at `target` by renames, replacing a file or folder already there (deleted afterwards)."""
    if target.exists() or target.is_symlink():
        old = temporary_sibling(target)
        os.replace(target, old)
        os.replace(source, target)
        remove_path(old)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def staging_folder(path: Path) -> Iterator[Path]:
    """A fresh temporary folder next to `path` (temporaries of `path` left by dead writers removed first); deleted on
    exit unless its content was moved away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.exists():
            remove_path(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path | str, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder to fill; on success it replaces the folder `path`, on error it is deleted.

    With overwrite=False an existing `path` is an error (raised before anything is written).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists")
    with staging_folder(path) as tmp:
        yield tmp
        replace_path(tmp, path)


def move_entries(source: Path, folder: Path, marker: str) -> None:
    """Move every entry of `source` into `folder`, replacing namesakes: the old `marker` removed first, the new one
    put last."""
    if not (source / marker).is_file():
        raise FileNotFoundError(f"{source / marker}: the output's marker was not written")
    folder.mkdir(exist_ok=True)
    remove_path(folder / marker)
    for entry in sorted(source.iterdir()):
        remove_stale_temporaries(folder, entry.name)
        if entry.name != marker:
            replace_path(entry, folder / entry.name)
    os.replace(source / marker, folder / marker)


@contextlib.contextmanager
def atomic_entries(folder: Path | str, marker: str) -> Iterator[Path]:
    """Yield a fresh temporary folder to fill with some entries of `folder`, the file `marker` among them; on success
    each replaces its namesake in `folder`, whose other entries are kept (a scene folder also holds later stages'
    outputs). The old `marker` is removed first and the new one put last, so the entries are complete exactly when it
    is there; on error the temporary folder is deleted and `folder` is untouched."""
    folder = Path(folder)
    with staging_folder(folder) as tmp:
        yield tmp
        move_entries(tmp, folder, marker)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
