"""The export's formats beyond DUSt3R's: per scene, the files that matcher trainers and 3D-model trainers read.

    dust3r                 per image <scene>/<name>.{jpg,exr,npz} (aerialmd.stages.export); always written
    megadepth_scene_info   per image also <scene>/<name>.h5 (MegaDepth's depth HDF5), and scene_info/<scene>.npz
                           (aerialmd.formats.megadepth_scene_info: LoFTR's index and D2-Net's matrices; the readers of
                           LoFTR, glue-factory's LightGlue, RoMa, DKM)
    covisibility           covisibility/<scene>.npz (aerialmd.formats.covisibility: MapAnything, VGGT, MASt3R-SfM)

Every matrix comes from the exported depths (after the max_depth cut) by make_pairs' reprojection (its tolerance and
scoring resolution, aerialmd/stages/make_pairs.py), over the pairs of images that share a sparse point; other pairs
have overlap 0. The images of a scene are those of the pair file that were exported, in the pair file's order; its
pairs between them become LoFTR's pair_infos.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from aerialmd.formats.covisibility import write_covisibility
from aerialmd.formats.dense_model import DenseModel
from aerialmd.formats.megadepth_scene_info import write_scene_info
from aerialmd.geometry.camera import opencv_to_colmap_intrinsics
from aerialmd.layout import ExportRoot, is_aerial
from aerialmd.sfm.pairs_from_poses import axis_angles_deg
from aerialmd.stages.make_pairs import (
    PairsConf,
    candidate_pairs,
    combine_directions,
    directed_depth_ratios,
    scoring_view,
)
from aerialmd.stages.preprocess_megadepth import output_paths

DUST3R, SCENE_INFO, COVISIBILITY = FORMATS = ("dust3r", "megadepth_scene_info", "covisibility")
DEPTH_H5_SUFFIX = ".h5"  # megadepth_scene_info's per-image depth, next to the dust3r files


@dataclasses.dataclass(frozen=True)
class SceneMatrices:
    """Directed overlaps (N, N): row i, column j the share of i's depth pixels that j sees with an agreeing depth
    (diagonal 0); and the median depth in i over the depth in j of those pixels (NaN where none agree)."""

    overlap: np.ndarray
    depth_ratio: np.ndarray

    def covisibility(self) -> np.ndarray:
        """make_pairs' symmetric pair score, 1 on the diagonal."""
        score = combine_directions(self.overlap, self.overlap.T, PairsConf().combine)
        np.fill_diagonal(score, 1.0)
        return score

    def d2net_overlap(self) -> np.ndarray:
        """D2-Net's overlap matrix: the directed overlaps, -1 on the diagonal."""
        overlap = self.overlap.copy()
        np.fill_diagonal(overlap, -1.0)
        return overlap

    def scale_ratio(self, focal_lengths: np.ndarray) -> np.ndarray:
        """D2-Net's scale ratio: max(r, 1/r) of r the ratio of the pixel footprints (depth / focal length) in i and j;
        -1 where no pixel agrees and on the diagonal."""
        footprint_ratio = self.depth_ratio * focal_lengths[None, :] / focal_lengths[:, None]
        ratio = np.where(np.isfinite(footprint_ratio), np.maximum(footprint_ratio, 1.0 / footprint_ratio), -1.0)
        np.fill_diagonal(ratio, -1.0)
        return ratio


def scene_files(export: ExportRoot, scene: str, formats: Sequence[str]) -> list[Path]:
    """The scene-level files `formats` ask for."""
    return [path for path, name in ((export.scene_info(scene), SCENE_INFO), (export.covisibility(scene), COVISIBILITY))
            if name in formats]


def depth_path(out_dir: Path, name: str) -> Path:
    """The megadepth_scene_info format's depth file of an image in its scene folder."""
    return out_dir / f"{name}{DEPTH_H5_SUFFIX}"


def scene_matrices(model: DenseModel, names: Sequence[str], depths: Sequence[np.ndarray],
                   conf: PairsConf = PairsConf()) -> SceneMatrices:
    """The matrices of images `names` of a dense model with their (exported) depth maps."""
    views = [scoring_view(model.views[name], depth, conf.max_side) for name, depth in zip(names, depths)]
    partners: dict[int, list[int]] = {}
    for i, j in candidate_pairs(model, names, conf.min_shared_points):
        partners.setdefault(int(i), []).append(int(j))
        partners.setdefault(int(j), []).append(int(i))
    overlap = np.zeros((len(names), len(names)))
    depth_ratio = np.full((len(names), len(names)), np.nan)
    for i, others in partners.items():
        overlap[i, others], depth_ratio[i, others] = directed_depth_ratios(views[i], [views[j] for j in others],
                                                                           conf.rel_tol)
    return SceneMatrices(overlap, depth_ratio)


def write_scene_formats(export: ExportRoot, scene: str, model: DenseModel, names: Sequence[str],
                        depths: Sequence[np.ndarray], pairs: np.ndarray, scores: np.ndarray,
                        formats: Sequence[str]) -> None:
    """The scene-level files of `formats` for the exported images `names` (their depths as exported) and the pair
    file's pairs between them (index pairs into names, and scores)."""
    out_dir = export.scene(scene)
    views = [model.views[name] for name in names]
    cam2world = np.stack([view.cam2world for view in views]).astype(np.float64)
    matrices = scene_matrices(model, names, depths)
    photos, dust3r_depths = zip(*[[str(p.relative_to(export.path)) for p in output_paths(out_dir, name)[:2]]
                                  for name in names])
    if SCENE_INFO in formats:
        focal_lengths = np.array([(view.K[0, 0] + view.K[1, 1]) / 2 for view in views])
        write_scene_info(export.scene_info(scene), photos,
                         [str(depth_path(out_dir, name).relative_to(export.path)) for name in names],
                         np.stack([opencv_to_colmap_intrinsics(view.K) for view in views]), np.linalg.inv(cam2world),
                         pairs, scores, matrices.d2net_overlap(), matrices.scale_ratio(focal_lengths),
                         axis_angles_deg(cam2world[:, :3, 2]))  # the optical axes
    if COVISIBILITY in formats:
        write_covisibility(export.covisibility(scene), names, photos, dust3r_depths,
                           np.stack([view.K for view in views]), cam2world, [is_aerial(n, scene) for n in names],
                           matrices.covisibility())
