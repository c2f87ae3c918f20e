"""Covisibility: per scene its images, their cameras and a dense N x N covisibility score matrix, the per-scene
collection that 3D foundation models (MapAnything, VGGT, MASt3R-SfM) sample their multi-view training sets from;
written by the export's `covisibility` format (aerialmd.stages.export_formats).

Keys (N images of the scene; np.load(path), no pickles):
    images        (N,) str          image names (those of the pair file)
    image_paths   (N,) str          photos (JPEG) relative to the export folder: the `dust3r` format's files
    depth_paths   (N,) str          depths relative to the export folder: the `dust3r` format's single-channel float32
                                    EXR, metres, 0 = invalid
    intrinsics    (N, 3, 3)         float64 pinhole K in OpenCV's pixel convention (the centre of the top-left pixel
                                    is (0, 0)), as in the `dust3r` format's npz
    cam2world     (N, 4, 4)         float64 camera-to-world (OpenCV camera axes), metres, ENU frame
    is_aerial     (N,) bool         Google Earth frame (True) or ground photo
    covisibility  (N, N) float32    make_pairs' pair score (aerialmd/stages/make_pairs.py): the smaller of the shares
                                    of each image's depth pixels the other sees with an agreeing depth; symmetric, 1 on
                                    the diagonal, 0 for images sharing no sparse point
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aerialmd.atomic import atomic_file

KEYS = ("images", "image_paths", "depth_paths", "intrinsics", "cam2world", "is_aerial", "covisibility")


def write_covisibility(path: Path, names: Sequence[str], image_paths: Sequence[str], depth_paths: Sequence[str],
                       intrinsics: np.ndarray, cam2world: np.ndarray, is_aerial: Sequence[bool],
                       covisibility: np.ndarray) -> None:
    """Write one scene's file atomically (keys in the module doc)."""
    arrays = {"images": np.array(list(names), dtype=str), "image_paths": np.array(list(image_paths), dtype=str),
              "depth_paths": np.array(list(depth_paths), dtype=str),
              "intrinsics": np.asarray(intrinsics, np.float64), "cam2world": np.asarray(cam2world, np.float64),
              "is_aerial": np.asarray(is_aerial, bool), "covisibility": np.asarray(covisibility, np.float32)}
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
