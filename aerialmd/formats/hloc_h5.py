"""hloc's on-disk formats for local features, matches and image pairs, so hloc outputs can be swapped in and ours
inspected with hloc's tools.

features.h5   one group per image name: `keypoints` (N, 2) float32, `descriptors` (D, N), `scores` (N,) float32,
              `image_size` (2,) = (width, height). Keypoints use OpenCV's pixel convention (centre of the first pixel
              at (0, 0)), as hloc does; COLMAP wants them shifted by +0.5 (keypoints_to_colmap).
matches.h5    one group per pair, named names_to_pair(name0, name1) = "<name0>/<name1>" with '/' in names replaced by
              '-': `matches0` (N0,) int32, index into image 1's keypoints or -1, and `matching_scores0` (N0,) float32.
pairs.txt     one "name0 name1" pair per line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np

COLMAP_KEYPOINT_SHIFT = 0.5


@dataclasses.dataclass
class Features:
    """Local features of one image (see the module docstring for conventions)."""

    keypoints: np.ndarray  # (N, 2) float32, OpenCV pixel convention
    descriptors: np.ndarray  # (D, N)
    scores: np.ndarray  # (N,) float32
    image_size: tuple[int, int]  # (width, height)


def keypoints_to_colmap(keypoints: np.ndarray) -> np.ndarray:
    """OpenCV-convention keypoints as COLMAP pixel coordinates."""
    return np.asarray(keypoints, dtype=np.float64) + COLMAP_KEYPOINT_SHIFT


def write_features(path: Path | str, name: str, features: Features) -> None:
    """Add (or replace) one image's features in a features.h5 file."""
    with h5py.File(path, "a") as f:
        if name in f:
            del f[name]
        group = f.create_group(name, track_order=True)
        group.create_dataset("keypoints", data=features.keypoints.astype(np.float32), track_times=False)
        group.create_dataset("descriptors", data=features.descriptors, track_times=False)
        group.create_dataset("scores", data=features.scores.astype(np.float32), track_times=False)
        group.create_dataset("image_size", data=np.asarray(features.image_size, dtype=np.int64), track_times=False)


def read_features(path: Path | str, name: str) -> Features:
    """One image's features from a features.h5 file."""
    with h5py.File(path, "r") as f:
        if name not in f:
            raise KeyError(f"{path}: no features for {name}")
        group = f[name]
        scores = group["scores"][()] if "scores" in group else np.ones(len(group["keypoints"]), np.float32)
        size = tuple(int(v) for v in group["image_size"][()]) if "image_size" in group else (0, 0)
        return Features(group["keypoints"][()], group["descriptors"][()], scores, size)


def feature_names(path: Path | str) -> list[str]:
    """Names of the images a features.h5 holds (group paths, so names may contain '/')."""
    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: names.append(key) if isinstance(item, h5py.Group) and "keypoints" in item else None)
    return sorted(names)


def names_to_pair(name0: str, name1: str) -> str:
    """hloc's key of a pair in matches.h5."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


def write_matches(path: Path | str, name0: str, name1: str, matches0: np.ndarray, scores0: np.ndarray) -> None:
    """Add (or replace) the matches of one pair in a matches.h5 file."""
    key = names_to_pair(name0, name1)
    with h5py.File(path, "a") as f:
        if key in f:
            del f[key]
        group = f.create_group(key)
        group.create_dataset("matches0", data=matches0.astype(np.int32), track_times=False)
        group.create_dataset("matching_scores0", data=scores0.astype(np.float32), track_times=False)


def read_matches(path: Path | str, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """Matches of a pair as (M, 2) index pairs into (image 0, image 1) keypoints and their (M,) scores.

    The pair may be stored in either order, as hloc allows."""
    with h5py.File(path, "r") as f:
        for key, reverse in ((names_to_pair(name0, name1), False), (names_to_pair(name1, name0), True)):
            if key in f:
                matches0 = f[key]["matches0"][()]
                scores0 = f[key]["matching_scores0"][()] if "matching_scores0" in f[key] else np.ones(len(matches0))
                valid = matches0 > -1
                pairs = np.stack([np.flatnonzero(valid), matches0[valid]], axis=1)
                return (pairs[:, ::-1] if reverse else pairs), scores0[valid]
    raise KeyError(f"{path}: no matches for {name0} {name1}")


def has_matches(path: Path | str, name0: str, name1: str) -> bool:
    """Whether a matches.h5 file holds the pair, in either order."""
    if not Path(path).exists():
        return False
    with h5py.File(path, "r") as f:
        return names_to_pair(name0, name1) in f or names_to_pair(name1, name0) in f


def write_pairs(path: Path | str, pairs: list[tuple[str, str]]) -> None:
    """Write pairs.txt."""
    Path(path).write_text("".join(f"{a} {b}\n" for a, b in pairs))


def read_pairs(path: Path | str) -> list[tuple[str, str]]:
    """Read pairs.txt (blank lines and # comments ignored)."""
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'name0 name1', got {line!r}")
        pairs.append((parts[0], parts[1]))
    return pairs
