"""The whole pipeline on the tiny sample: registration, MVS (torch backend), make_pairs, the exporter and the dataloader,
checked for geometric consistency of the exported training data (not ground truth: the MVS depth is an estimate; its
accuracy against the truth is tested in tests/test_dense.py)."""

from __future__ import annotations

import numpy as np
import pytest

from aerialmd.formats.pair_file import load_pair_file
from aerialmd.stages.export import export_aerialmegadepth
from aerialmd.stages.make_pairs import PairsConf, make_pairs, pair_kind
from aerialmd.training.dataset import MegaDepthAerial
from tests.helpers import depth_errors, load_view, reprojection_errors

KINDS = ("aerial-aerial", "aerial-ground", "ground-ground")
PER_KIND = 3


pytestmark = pytest.mark.slow  # every test here reads the dense stage's output on the pipeline run's registration


@pytest.fixture(scope="module")
def exported(dense_output, localized, tmp_path_factory):
    """make_pairs and the exporter run on the dense output's data root; (export folder, pair file, scene id)."""
    paths = localized[2]
    work = tmp_path_factory.mktemp("end_to_end")
    pairs = work / "pairs.npz"
    data_root = dense_output.data_root
    assert make_pairs(data_root, pairs, [paths.scene_id], PairsConf(workers=1)) == 0
    assert export_aerialmegadepth(data_root, pairs, work / "export", [paths.scene_id], workers=2) == 0
    return work / "export", pairs, paths.scene_id


def chosen_pairs(pairs_path, scene: str) -> dict[str, list[tuple[str, str, float]]]:
    """Up to PER_KIND pairs of each kind, the highest scores first."""
    pairs = load_pair_file(pairs_path)
    out: dict[str, list] = {kind: [] for kind in KINDS}
    for k in np.argsort(-pairs.score):
        name1, name2 = pairs.images[pairs.im1_id[k]], pairs.images[pairs.im2_id[k]]
        kind = pair_kind(name1, name2, scene)
        if len(out[kind]) < PER_KIND:
            out[kind].append((name1, name2, float(pairs.score[k])))
    return out


def test_every_pair_kind_is_made_from_mvs_depth(exported):
    _, pairs_path, scene = exported
    chosen = chosen_pairs(pairs_path, scene)
    print(f"\npairs per kind (best scores): { {k: [round(s, 3) for _, _, s in v] for k, v in chosen.items()} }")
    assert all(chosen[kind] for kind in KINDS), {k: len(v) for k, v in chosen.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_exported_pairs_round_trip(exported, kind):
    """View 1's points (EXR + npz) projected into view 2 agree with view 2's depth: median relative error < 1% on the
    overlapping pixels (those within make_pairs' 2 % agreement; the rest is occluded or unmatched)."""
    out, pairs_path, scene = exported
    for name1, name2, _ in chosen_pairs(pairs_path, scene)[kind]:
        view1, view2 = load_view(out / scene, name1), load_view(out / scene, name2)
        for source, target in ((view1, view2), (view2, view1)):
            errors = reprojection_errors(source, target)
            overlapping = errors[errors <= 0.02]
            assert len(overlapping) > 100 and np.median(overlapping) < 0.01, (kind, name1, name2)


@pytest.mark.parametrize("resolution", [None, (512, 288), (224, 224)])
def test_dataloader_views_agree(exported, resolution):
    """The loader's pts3d of one view, seen from the other view of the pair, match that view's depth: median < 1 % on
    the overlapping pixels (within 2 %, as in the export round trip), at the stored size and cropped/resized."""
    out, pairs_path, scene = exported
    dataset = MegaDepthAerial(split=None, ROOT=out, split_file=pairs_path, resolution=resolution, seed=0)
    wanted = {(a, b) for pairs in chosen_pairs(pairs_path, scene).values() for a, b, _ in pairs}
    indices = [k for k, p in enumerate(dataset.pairs) if (p.im1, p.im2) in wanted]
    assert len(indices) == len(wanted)
    for index in indices:
        views = dataset[index]
        for a, b in ((0, 1), (1, 0)):
            errors = depth_errors(views[a]["pts3d"][views[a]["valid_mask"]], views[b]["camera_intrinsics"],
                                  views[b]["camera_pose"], views[b]["depthmap"])
            overlapping = errors[errors <= 0.02]
            assert len(overlapping) > 50 and np.median(overlapping) < 0.01, (views[a]["instance"], views[b]["instance"])
