"""Shared fixtures: the real reference files in ../shared (skipped where absent) and a tiny sample scene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
from aerialmd.stages.dense import DenseConf

# The dense stage as the tests run it: 320 px and 5 sources keep the test run short (8, the default, adds about
# 2.5 minutes to it); bench/bench_dense.py measures the defaults.
DENSE_CONF = DenseConf(backend="torch", max_image_size=320, num_sources=5, device="cpu")

SHARED_DATA = Path(os.environ.get("AERIALMD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or a skip (with the reason) where the shared folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared reference data not found: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """A tiny sample scene (generated once per test session), with its paths."""
    from aerialmd.sample_scene import SampleConfig, generate_sample

    config = SampleConfig.tiny()
    return generate_sample(tmp_path_factory.mktemp("sample") / "root", config), config


@pytest.fixture(scope="session")
def localized(tiny_sample, tmp_path_factory):
    """Stages 2, 3 and 4a run on the tiny sample with SIFT; returns (output folder, ground truth, sample paths,
    preprocessed MegaDepth folder)."""
    from aerialmd.stages.preprocess_ge import preprocess_ge
    from aerialmd.layout import LOCALIZATION_DIR
    from aerialmd.stages.localization import localize
    from aerialmd.stages.preprocess_megadepth import preprocess_megadepth
    from tests.test_sample_scene import ground_truth

    paths, config = tiny_sample
    work = tmp_path_factory.mktemp("localization")
    assert preprocess_ge(paths.root, paths.scene_list, workers=2) == 0
    processed = work / "processed"
    assert preprocess_megadepth(paths.megadepth_root, paths.scene_list, processed, workers=2) == 0
    assert localize(paths.root / "data", processed, paths.scene_list) == 0
    out = paths.root / "data" / config.scene_id / LOCALIZATION_DIR / "sfm_sift+nn-ratio"
    return out, ground_truth(paths), paths, processed


@pytest.fixture(scope="session")
def dense_output(localized):
    """The dense stage (DENSE_CONF) run once on the registered tiny sample: (localized_dense_metric folder, accuracy
    per image kind against the ground truth, dense.json)."""
    import json

    from aerialmd.layout import DENSE_DIR
    from aerialmd.stages.dense import dense_scene
    from aerialmd.sample_scene.evaluation import dense_accuracy

    sfm_dir, _, paths, processed = localized
    message = dense_scene(sfm_dir, paths.root / "data" / paths.scene_id, [processed / paths.scene_id / "0"], DENSE_CONF)
    assert message is not None and "failed images" in message
    out = sfm_dir / DENSE_DIR
    figures = dense_accuracy(out, paths.ground_truth_dir)
    print(f"\ndense accuracy vs ground truth: {figures}")
    return out, figures, json.loads((out / "dense.json").read_text())
