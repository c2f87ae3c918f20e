"""The last step of run_pipeline.py: exported training data loads through the dataloader, a few pairs of each kind.

A pair passes when both views come out of MegaDepthAerial at the training resolution with an image, a camera pose and
intrinsics that are finite, some valid depth, and finite 3D points wherever the depth is valid. It checks that the
product is readable as a trainer reads it; the geometry of the data is tested against ground truth in the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aerialmd.stages.make_pairs import KINDS, pair_kind
from aerialmd.training.dataset import MegaDepthAerial

CHECK_RESOLUTION = (512, 384)  # DUSt3R's usual landscape training size


def chosen_pairs(dataset: MegaDepthAerial, per_kind: int) -> list[int]:
    """Up to `per_kind` pairs of each kind, the first of each in the pair file's order."""
    taken: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for index, pair in enumerate(dataset.pairs):
        picks = taken[pair_kind(pair.im1, pair.im2, pair.scene)]
        if len(picks) < per_kind:
            picks.append(index)
    return sorted(i for picks in taken.values() for i in picks)


def view_problem(view: dict) -> str | None:
    """What is wrong with one loaded view, or None."""
    valid = np.asarray(view["valid_mask"])
    if not valid.any():
        return "no valid depth"
    for key in ("camera_pose", "camera_intrinsics"):
        if not np.isfinite(np.asarray(view[key])).all():
            return f"{key} not finite"
    if not np.isfinite(np.asarray(view["pts3d"])[valid]).all():
        return "3D points not finite where the depth is valid"
    return None


def check_training_data(export_dir: Path, pair_file: Path, per_kind: int = 2) -> dict[str, int]:
    """Load a few pairs of each kind of `pair_file` from `export_dir`; the pairs loaded per kind. A ValueError names
    the pair and view that fail."""
    dataset = MegaDepthAerial(split=None, ROOT=export_dir, split_file=Path(pair_file).resolve(),
                              resolution=CHECK_RESOLUTION, seed=0)
    loaded = {kind: 0 for kind in KINDS}
    for index in chosen_pairs(dataset, per_kind):
        pair = dataset.pairs[index]
        for view in dataset[index]:
            problem = view_problem(view)
            if problem is not None:
                raise ValueError(f"{pair_file}: pair {pair.scene} {pair.im1} {pair.im2}: view {view['instance']}: "
                                 f"{problem}")
        loaded[pair_kind(pair.im1, pair.im2, pair.scene)] += 1
    return loaded
