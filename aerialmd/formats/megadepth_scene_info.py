"""MegaDepth scene info: the per-scene npz that matcher trainers read, LoFTR's index and D2-Net's (glue-factory's)
scene info in one file, written by the export's `megadepth_scene_info` format (aerialmd.stages.export_formats).

Keys (N images of the scene, P pairs; read with np.load(path, allow_pickle=True)):
    image_paths         (N,) object   str paths of the photos (JPEG), relative to the export folder
    depth_paths         (N,) object   str paths of the depth maps, relative to the export folder: HDF5 with dataset
                                      'depth', float32 metres, 0 = invalid, the photo's size (MegaDepth's depth files)
    intrinsics          (N, 3, 3)     float64 pinhole K in COLMAP's pixel convention (the centre of the top-left pixel
                                      is (0.5, 0.5)), as MegaDepth's scene info carries its COLMAP cameras
    poses               (N, 4, 4)     float64 world-to-camera [R | t] (x_cam = R x_world + t), metres, ENU frame
    pair_infos          (P,) object   ((i, j), overlap score, central_matches) as in LoFTR's index: the pair file's pairs
                                      and scores; central_matches is an empty (0, 2) array (no sparse matches kept)
    overlap_matrix      (N, N)        float64, D2-Net's meaning: the share of image i's depth pixels that image j sees
                                      with an agreeing depth; 0 for images sharing no sparse point, -1 on the diagonal
    scale_ratio_matrix  (N, N)        float64 max(r, 1/r), r the median ratio of the pixel footprints (depth / focal
                                      length) of those pixels in i and j (D2-Net takes the minimum over its sparse
                                      points); -1 where no pixel agrees and on the diagonal
    angles              (N, N)        float64 angle between the two optical axes, degrees
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aerialmd.atomic import atomic_file

KEYS = ("image_paths", "depth_paths", "intrinsics", "poses", "pair_infos", "overlap_matrix", "scale_ratio_matrix",
        "angles")


def object_array(items: Sequence) -> np.ndarray:
    """A 1-D object array holding `items` as they are (tuples stay tuples)."""
    out = np.empty(len(items), dtype=object)
    for k, item in enumerate(items):
        out[k] = item
    return out


def pair_infos(pairs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """LoFTR's pair_infos of index pairs (P, 2) and their scores (P,)."""
    return object_array([((int(i), int(j)), float(score), np.zeros((0, 2), np.int64))
                         for (i, j), score in zip(np.reshape(pairs, (-1, 2)), scores)])


def write_scene_info(path: Path, image_paths: Sequence[str], depth_paths: Sequence[str], intrinsics_colmap: np.ndarray,
                     world2cam: np.ndarray, pairs: np.ndarray, scores: np.ndarray, overlap_matrix: np.ndarray,
                     scale_ratio_matrix: np.ndarray, angles: np.ndarray) -> None:
    """Write one scene's file atomically (keys in the module doc)."""
    arrays = {"image_paths": object_array(list(image_paths)), "depth_paths": object_array(list(depth_paths)),
              "intrinsics": np.asarray(intrinsics_colmap, np.float64), "poses": np.asarray(world2cam, np.float64),
              "pair_infos": pair_infos(pairs, scores), "overlap_matrix": np.asarray(overlap_matrix, np.float64),
              "scale_ratio_matrix": np.asarray(scale_ratio_matrix, np.float64), "angles": np.asarray(angles, np.float64)}
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
