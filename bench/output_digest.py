#!/usr/bin/env python3
"""Digests of every product under a data root, to show that a change of the code leaves a run's outputs as they were.

    python bench/output_digest.py <root> > digests.txt          # one line per file: path, digest
    python bench/output_digest.py <root> --compare digests.txt  # exit 1 and list the files that differ

Content digests, not byte digests, where a file holds more than its data: arrays of npz/h5/EXR files (not their
containers), JSON with timings and wall-clock figures removed (keys named in VOLATILE_KEYS), COLMAP binary models
through pycolmap. Files that hold only timings, and PNG figures (their bytes carry the plotting library's metadata),
are listed with a digest of their name only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from aerialmd.formats.depth import read_depth_exr

VOLATILE_KEYS = {"seconds", "timings", "peak_rss_mb", "peak_memory_mb", "time", "timing", "seconds_per_image",
                 "created", "packages", "platform", "python", "generated", "stages_seconds", "wall_seconds",
                 "fingerprints", "made_from", "root", "path"}
NAME_ONLY_SUFFIXES = {".png", ".html", ".db"}
NAME_ONLY_FILES = {"timings.json", "peak_memory.json"}


def without_volatile(value):
    """A JSON value with every volatile key removed, recursively."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes() if array.dtype != object else repr(array.tolist()).encode())
    return digest.hexdigest()[:16]


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def file_digest(path: Path) -> str:
    """The content digest of one file (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix in NAME_ONLY_SUFFIXES or path.name in NAME_ONLY_FILES:
        return "present"
    if suffix == ".json":
        text = json.dumps(without_volatile(json.loads(path.read_text())), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    if suffix == ".npz":
        with np.load(path, allow_pickle=True) as data:
            return array_digest({k: data[k] for k in data.files})
    if suffix == ".h5":
        return array_digest(h5_arrays(path))
    if suffix == ".exr":
        return array_digest({"depth": read_depth_exr(path)})
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a data root after a run (e.g. the sample root of run_pipeline.py)")
    parser.add_argument("--compare", type=Path, help="a digest list written before: report the differences")
    args = parser.parse_args(argv)
    now = digests(args.root)
    if args.compare is None:
        print("\n".join(f"{path}\t{digest}" for path, digest in now.items()))
        return 0
    before = dict(line.split("\t") for line in args.compare.read_text().splitlines() if line)
    differ = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
    for path in differ:
        print(f"{path}: {before.get(path, 'absent')} -> {now.get(path, 'absent')}")
    print(f"{len(now)} files, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
