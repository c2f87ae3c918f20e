"""Test and benchmark fixtures made from the sample's ground truth: its exact dense model (for the pair and export
stages, whose inputs are then exact, unlike an MVS result)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from aerialmd.formats.dense_model import DenseView, build_sparse_model, points_from_depths, write_dense_model
from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.video import extract_frames
from aerialmd.layout import DENSE_DIR, LOCALIZATION_DIR, MEGADEPTH_IMAGES_DIR, PROCESSED_SUFFIX
from aerialmd.sample_scene.evaluation import load_ground_truth
from aerialmd.sample_scene.generate import SamplePaths

SAMPLE_SFM_NAME = "sfm_sift+nn-ratio"  # localization's default output name


def write_sample_dense_model(sample: SamplePaths, scene_dir: Path | str, sfm_name: str = SAMPLE_SFM_NAME, seed: int = 0,
                             points_per_image: int = 300) -> Path:
    """The sample scene (aerialmd.sample_scene.SamplePaths) as an exact dense model under `scene_dir`: aerial frames
    extracted from its video, ground photos from its MegaDepth dense folder (named `<name>.jpg` as processed photos
    are), ground-truth metric depths, cameras and poses, and sparse points from those depths (points_from_depths).

    Test data for the export and pair stages (exact, unlike an MVS result). An existing dense model there is reused
    (it is written atomically, so it is complete)."""
    dense_dir = Path(scene_dir) / LOCALIZATION_DIR / sfm_name / DENSE_DIR
    if dense_dir.is_dir():
        return dense_dir
    truth = load_ground_truth(sample.ground_truth_dir)
    with tempfile.TemporaryDirectory() as frames_dir:
        frames = {p.name: p for p in extract_frames(sample.video, frames_dir, sample.scene_id, progress=False)}
        views, images, depths = [], {}, {}
        for entry in truth["images"]:
            aerial = entry["kind"] == "aerial"
            name = entry["name"] if aerial else entry["name"] + PROCESSED_SUFFIX
            views.append(DenseView(name, entry["width"], entry["height"], entry["intrinsics"], entry["cam2world"]))
            images[name] = frames[entry["name"]] if aerial else sample.dense_dir / MEGADEPTH_IMAGES_DIR / entry["name"]
            depths[name] = read_depth_exr(sample.ground_truth_dir / "depth" / f"{entry['name']}.exr")
        points = points_from_depths(views, depths, np.random.default_rng(seed), points_per_image)
        return write_dense_model(dense_dir, build_sparse_model(views, points), images, depths)
