"""Dense overlap scores of image pairs, and the balanced pair selection of make_pairs.

Score of a pair (A, B)
    directed(A -> B): the share of A's valid depth pixels that, lifted to 3D with A's depth, intrinsics and pose and
    projected into B, land inside B (OpenCV pixel convention: within half a pixel of a pixel centre), in front of it,
    and agree with B's depth there: |z_B(X) - depth_B| <= rel_tol * depth_B (default 2%). depth_B is interpolated
    bilinearly in inverse depth from the four surrounding pixels when all are valid (exact on a plane, so slanted and
    grazing surfaces are not lost to pixel discretisation), else it is the nearest pixel's depth (0 = invalid: no
    agreement). Occluded points disagree and do not count.
    score(A, B) = min(directed(A -> B), directed(B -> A)) by default (`combine="mean"` averages them instead): both
    images must see a part of each other, so a wide aerial view of a small ground photo's facade is not a 60% pair.

Resolution
    Scoring runs on depth maps subsampled by an integer stride s = ceil(long side / max_side) (default max_side 192):
    pixel (i, j) of the subsampled map is pixel (s*i, s*j) of the original, its exact depth (no blending across depth
    edges), and in OpenCV's convention the intrinsics become diag(1/s, 1/s, 1) K exactly. The score is a pixel share,
    so subsampling changes it by a sampling error only (about 0.01 on the sample scene against full resolution), and
    the cost drops by s^2.

Candidates and cost
    Only pairs of images that share at least `min_shared_points` points of the sparse model (co-visibility from the
    points3D tracks) are scored, so the cost follows the sparse model's graph rather than the square of the image
    count. Each source view is lifted to 3D once and projected into all its candidate targets by one matrix product
    (numpy, batched over targets; source views optionally spread over threads). The cost is proportional to
    (candidate pairs) x 2 x (valid pixels per subsampled map): about 80 ns per (source pixel, target) on the 2-core
    development machine, so 100,000 candidate pairs of 1920x1080 maps at max_side 192 (~20,000 pixels) take ~5 min.

Selection (make_pairs)
    Pairs with min_score <= score <= max_score are kept; per scene at most `pairs_per_scene`, shared as equally as the
    supply allows between aerial-aerial, aerial-ground and ground-ground pairs, and within each kind as equally as
    possible between equal-width score bins of the window (so low scores, which are most common, do not dominate),
    drawn at random with a seed. An image is aerial when its name is `<scene>_<digits>.jpeg` (or `.jpg`), the name GES
    frames get (`is_aerial`); every other image is a ground photo.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from scipy import sparse
from tqdm import tqdm

from aerialmd.formats.dense_model import DenseModel, DenseView, covisibility, find_dense_dir, read_dense_model
from aerialmd.formats.pair_file import PairFile, SceneBlock, load_pair_file, merge_pair_files, save_pair_file
from aerialmd.layout import LOCALIZATION_DIR, is_aerial
from aerialmd.run.scenes import Shard, run_per_scene, select_scenes

STAGE = "make_pairs"
DEFAULT_MAX_SIDE = 192
DEFAULT_REL_TOL = 0.02
DEFAULT_MIN_SCORE, DEFAULT_MAX_SCORE = 0.03, 0.6  # the published pair files' window
DEFAULT_PAIRS_PER_SCENE = 10000  # the published val file has 9996 pairs per scene
SCORE_BINS = 10
KINDS = ("aerial-aerial", "aerial-ground", "ground-ground")
TARGET_CHUNK_ELEMENTS = 1_000_000  # source pixels x targets per numpy batch (~100 bytes each: ~100 MB per thread)


# ----------------------------------------------------------------------------------------------------------------------
# Kinds


def pair_kind(name1: str, name2: str, scene: str) -> str:
    """'aerial-aerial', 'aerial-ground' or 'ground-ground' (order of the two images does not matter)."""
    aerial = is_aerial(name1, scene) + is_aerial(name2, scene)
    return KINDS[2 - aerial]


# ----------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclasses.dataclass(frozen=True)
class ScoringView:
    """A view at scoring resolution: depth (float32, metres, 0 = invalid), K (OpenCV convention), cam2world."""

    name: str
    depth: np.ndarray
    K: np.ndarray
    cam2world: np.ndarray

    @property
    def height(self) -> int:
        return self.depth.shape[0]

    @property
    def width(self) -> int:
        return self.depth.shape[1]


def scoring_stride(width: int, height: int, max_side: int) -> int:
    """Integer subsampling stride that brings the long side to at most `max_side` pixels."""
    return max(1, math.ceil(max(width, height) / max_side))


def subsample(depth: np.ndarray, K: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every `stride`-th pixel of a depth map and the matching OpenCV intrinsics (exact: u_new = u_old / stride)."""
    K_sub = np.array(K, dtype=np.float64)
    K_sub[:2] /= stride
    return np.ascontiguousarray(depth[::stride, ::stride], dtype=np.float32), K_sub


def scoring_view(view: DenseView, depth: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> ScoringView:
    """A dense view and its full-resolution depth at scoring resolution; invalid (non-finite, <= 0) depths are 0."""
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    sub, K = subsample(depth, view.K, scoring_stride(view.width, view.height, max_side))
    return ScoringView(view.name, sub, K, np.asarray(view.cam2world, np.float64))


def valid_world_points(view: ScoringView) -> np.ndarray:
    """World points (N, 3) of the view's valid depth pixels, lifted with the OpenCV intrinsics and cam2world."""
    vs, us = np.nonzero(view.depth > 0)
    z = view.depth[vs, us].astype(np.float64)
    rays = np.column_stack([us, vs, np.ones(len(us))]) @ np.linalg.inv(view.K).T
    return (rays * z[:, None]) @ view.cam2world[:3, :3].T + view.cam2world[:3, 3]


def stacked_depths(views: Sequence[ScoringView]) -> tuple[np.ndarray, int, int]:
    """The views' depth maps padded to (H_max, W_max) with zeros (invalid), flattened one after the other, plus one
    trailing 0 that out-of-image lookups point to; and (H_max, W_max)."""
    height, width = max(v.height for v in views), max(v.width for v in views)
    stack = np.zeros(len(views) * height * width + 1, np.float32)
    grid = stack[:-1].reshape(len(views), height, width)
    for k, view in enumerate(views):
        grid[k, : view.height, : view.width] = view.depth
    return stack, height, width


def projection_matrices(views: Sequence[ScoringView]) -> np.ndarray:
    """(M, 3, 4) matrices K [R | t] (world to OpenCV pixels, homogeneous); the third row gives the camera z."""
    world2cam = np.linalg.inv(np.stack([v.cam2world for v in views]))
    return np.stack([v.K for v in views]) @ world2cam[:, :3, :]


def sample_depth(stack: np.ndarray, width: int, offsets: np.ndarray, x: np.ndarray, y: np.ndarray,
                 sizes: np.ndarray) -> np.ndarray:
    """Target depth at OpenCV pixel positions (x, y) of shape (N, M) (column m in target m, known to be inside
    [-0.5, size - 0.5)): bilinear in inverse depth over the four surrounding pixels when all are valid (exact on a
    plane, whose inverse depth is affine in the pixel coordinates), else the nearest pixel's depth (0 if invalid)."""
    x0 = np.clip(np.floor(x), 0, sizes[:, 0] - 2)
    y0 = np.clip(np.floor(y), 0, sizes[:, 1] - 2)
    fx, fy = np.clip(x - x0, 0, 1), np.clip(y - y0, 0, 1)
    base = (offsets + y0 * width + x0).astype(np.intp)
    corners = [stack[base], stack[base + 1], stack[base + width], stack[base + width + 1]]
    all_valid = (corners[0] > 0) & (corners[1] > 0) & (corners[2] > 0) & (corners[3] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):  # invalid corners: used only where all are valid
        inverse = ((1 - fx) * (1 - fy) / corners[0] + fx * (1 - fy) / corners[1]
                   + (1 - fx) * fy / corners[2] + fx * fy / corners[3])
    right, down = fx >= 0.5, fy >= 0.5
    nearest = np.where(down, np.where(right, corners[3], corners[2]), np.where(right, corners[1], corners[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(all_valid, 1.0 / inverse, nearest).astype(np.float32)


def target_agreement(points: np.ndarray, targets: Sequence[ScoringView],
                     rel_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """For world points (N, 3) and each target: whether the target sees the point with an agreeing depth (see module
    doc), and the point's depth in the target's camera; both (N, M).

    One matrix product projects every point into every target (float64, then float32 pixel and depth arrays, plenty
    for maps of a few hundred pixels); depths come from the flattened stack of the targets' maps (sample_depth), read
    at a harmless position for the points outside a target and then ignored."""
    homogeneous = np.column_stack([points, np.ones(len(points))])
    projected = (homogeneous @ projection_matrices(targets).reshape(-1, 4).T).reshape(len(points), len(targets), 3)
    projected = projected.astype(np.float32)
    z = projected[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = projected[..., 0] / z, projected[..., 1] / z
        sizes = np.array([(t.width, t.height) for t in targets], np.float32)
        inside = (z > 0) & (x >= -0.5) & (x < sizes[:, 0] - 0.5) & (y >= -0.5) & (y < sizes[:, 1] - 0.5)
    x, y = np.where(inside, x, 0), np.where(inside, y, 0)
    stack, height, width = stacked_depths(targets)
    offsets = np.arange(len(targets)) * (height * width)
    d = sample_depth(stack, width, offsets, x, y, sizes)
    return inside & (d > 0) & (np.abs(z - d) <= rel_tol * d), z


def chunked_agreement(points: np.ndarray, targets: Sequence[ScoringView],
                      rel_tol: float) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """target_agreement over the targets in batches of about TARGET_CHUNK_ELEMENTS (points x targets): per batch its
    slice of the targets, the agreement and the depths in the targets."""
    chunk = max(1, TARGET_CHUNK_ELEMENTS // max(len(points), 1))
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        yield (part, *target_agreement(points, targets[part], rel_tol))


def directed_overlaps(source: ScoringView, targets: Sequence[ScoringView], rel_tol: float = DEFAULT_REL_TOL) -> np.ndarray:
    """directed(source -> target) for each target (M,), batched over targets; 0 when the source has no valid depth."""
    points = valid_world_points(source)
    out = np.zeros(len(targets))
    if not len(points):
        return out
    for part, agree, _ in chunked_agreement(points, targets, rel_tol):
        out[part] = np.count_nonzero(agree, axis=0) / len(points)
    return out


def directed_depth_ratios(source: ScoringView, targets: Sequence[ScoringView],
                          rel_tol: float = DEFAULT_REL_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Per target (M,): directed(source -> target), and the median over the agreeing points of their depth in the
    source over their depth in the target (NaN where none agree)."""
    points = valid_world_points(source)
    source_depth = source.depth[source.depth > 0]  # the order of valid_world_points
    shares, ratios = np.zeros(len(targets)), np.full(len(targets), np.nan)
    if not len(points):
        return shares, ratios
    for part, agree, z in chunked_agreement(points, targets, rel_tol):
        shares[part] = np.count_nonzero(agree, axis=0) / len(points)
        ratios[part] = [np.median(source_depth[seen] / z[seen, m]) if seen.any() else np.nan
                        for m, seen in enumerate(agree.T)]
    return shares, ratios


def combine_directions(forward: np.ndarray, backward: np.ndarray, combine: str) -> np.ndarray:
    """Symmetric score from both directed scores: 'min' (default) or 'mean'."""
    if combine == "min":
        return np.minimum(forward, backward)
    if combine == "mean":
        return (forward + backward) / 2
    raise ValueError(f"combine must be 'min' or 'mean', got {combine!r}")


def pair_scores(views: Sequence[ScoringView], pairs: np.ndarray, rel_tol: float = DEFAULT_REL_TOL,
                combine: str = "min", workers: int = 1, progress: bool = False) -> np.ndarray:
    """Symmetric scores (P,) of index pairs (P, 2) into `views`; each source view is lifted once for all its partners.

    Source views are spread over `workers` threads (numpy releases the GIL in the heavy array operations)."""
    pairs = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
    partners: dict[int, list[int]] = {}
    for i, j in sorted({(int(a), int(b)) for a, b in pairs} | {(int(b), int(a)) for a, b in pairs}):
        partners.setdefault(i, []).append(j)

    def score_source(i: int) -> dict[tuple[int, int], float]:
        shares = directed_overlaps(views[i], [views[j] for j in partners[i]], rel_tol)
        return {(i, j): float(share) for j, share in zip(partners[i], shares)}

    directed: dict[tuple[int, int], float] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for result in tqdm(pool.map(score_source, sorted(partners)), total=len(partners), desc="overlap",
                           disable=not progress, leave=False):
            directed.update(result)
    forward = np.array([directed[int(i), int(j)] for i, j in pairs])
    backward = np.array([directed[int(j), int(i)] for i, j in pairs])
    return combine_directions(forward, backward, combine)


def candidate_pairs(model: DenseModel, names: Sequence[str], min_shared_points: int = 1) -> np.ndarray:
    """Index pairs (i < j) into `names` of images sharing at least `min_shared_points` sparse points, (P, 2) sorted."""
    shared = sparse.triu(covisibility(model.sparse, names), k=1).tocoo()
    keep = shared.data >= min_shared_points
    pairs = np.column_stack([shared.row[keep], shared.col[keep]]).astype(np.intp)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))] if len(pairs) else pairs.reshape(0, 2)


# ----------------------------------------------------------------------------------------------------------------------
# Selection


def water_fill(sizes: Sequence[int], budget: int) -> list[int]:
    """How many to take from each group: as equal as possible, a group short of its share gives the rest to others.

    The total is min(budget, sum(sizes)); leftovers of an uneven split go to the first groups."""
    take = [0] * len(sizes)
    open_groups = [k for k, size in enumerate(sizes) if size > 0]
    left = min(budget, sum(sizes))
    while left > 0 and open_groups:
        share, extra = divmod(left, len(open_groups))
        for rank, k in enumerate(list(open_groups)):
            add = min(sizes[k] - take[k], share + (rank < extra))
            take[k] += add
            left -= add
        open_groups = [k for k in open_groups if take[k] < sizes[k]]
    return take


def score_bin(scores: np.ndarray, min_score: float, max_score: float, bins: int = SCORE_BINS) -> np.ndarray:
    """Index of the equal-width bin of [min_score, max_score] each score falls in (the top edge in the last bin)."""
    width = (max_score - min_score) / bins
    return np.clip(((scores - min_score) / width).astype(int), 0, bins - 1) if width > 0 else np.zeros(len(scores), int)


def take_balanced(groups: Sequence[np.ndarray], budget: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random subset of each group (arrays of indices), sizes by water_fill."""
    counts = water_fill([len(g) for g in groups], budget)
    return [np.sort(rng.choice(g, size=c, replace=False)) if c < len(g) else g for g, c in zip(groups, counts)]


def select_pairs(scores: np.ndarray, kinds: Sequence[str], min_score: float, max_score: float, budget: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Indices of the kept pairs (sorted): in the score window, then balanced over kinds and score bins (module doc);
    budget <= 0 keeps every pair in the window."""
    scores = np.asarray(scores, dtype=np.float64)
    kinds = np.asarray(kinds)
    in_window = (scores >= min_score) & (scores <= max_score)
    if budget <= 0:
        return np.flatnonzero(in_window)
    by_kind = [np.flatnonzero(in_window & (kinds == kind)) for kind in KINDS]
    kind_quota = water_fill([len(g) for g in by_kind], budget)
    chosen = []
    for members, quota in zip(by_kind, kind_quota):
        bins = score_bin(scores[members], min_score, max_score)
        chosen += take_balanced([members[bins == b] for b in range(SCORE_BINS)], quota, rng)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.intp)


def kind_counts(kinds: Iterable[str]) -> dict[str, int]:
    """Number of pairs of each kind, every kind listed."""
    kinds = list(kinds)
    return {kind: kinds.count(kind) for kind in KINDS}


# ----------------------------------------------------------------------------------------------------------------------
# Per scene and whole runs


@dataclasses.dataclass
class ScenePairs:
    """One scene's result: its image names, kept pairs (index pairs into names) and their scores, and statistics."""

    scene: str
    names: list[str]
    pairs: np.ndarray
    scores: np.ndarray
    candidates: int
    in_window: int
    dropped_views: list[str]

    @property
    def kinds(self) -> list[str]:
        return [pair_kind(self.names[i], self.names[j], self.scene) for i, j in self.pairs]

    def block(self) -> SceneBlock:
        return SceneBlock(self.scene, self.names, self.pairs, self.scores)

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {n}" for kind, n in kind_counts(self.kinds).items())
        dropped = f"; {len(self.dropped_views)} images without usable depth left out" if self.dropped_views else ""
        return (f"{len(self.names)} images, {self.candidates} co-visible candidates, {self.in_window} in the score "
                f"window, kept {len(self.pairs)} ({counts}){dropped}")


@dataclasses.dataclass(frozen=True)
class PairsConf:
    """make_pairs settings (module doc)."""

    min_score: float = DEFAULT_MIN_SCORE
    max_score: float = DEFAULT_MAX_SCORE
    pairs_per_scene: int = DEFAULT_PAIRS_PER_SCENE
    max_side: int = DEFAULT_MAX_SIDE
    rel_tol: float = DEFAULT_REL_TOL
    combine: str = "min"
    min_shared_points: int = 1
    seed: int = 0
    workers: int = 1


def scene_rng(seed: int, scene: str) -> np.random.Generator:
    """A generator for one scene that does not depend on which other scenes run (nor on Python's hash seed)."""
    return np.random.default_rng([seed, zlib.crc32(scene.encode())])


def load_scoring_views(model: DenseModel, max_side: int) -> tuple[list[ScoringView], list[str]]:
    """Scoring views of every image of a dense model, and the names left out (depth missing or unreadable)."""
    views, dropped = [], []
    for name, view in tqdm(model.views.items(), desc="depths", leave=False):
        try:
            views.append(scoring_view(view, model.read_depth(name), max_side))
        except (FileNotFoundError, ValueError) as exc:
            tqdm.write(f"[{STAGE}] {exc}")
            dropped.append(name)
    return views, dropped


def scene_pairs(scene: str, model: DenseModel, conf: PairsConf = PairsConf(), progress: bool = True) -> ScenePairs:
    """Score a scene's co-visible pairs and select the kept ones (module doc)."""
    views, dropped = load_scoring_views(model, conf.max_side)
    names = [v.name for v in views]
    candidates = candidate_pairs(model, names, conf.min_shared_points)
    scores = pair_scores(views, candidates, conf.rel_tol, conf.combine, conf.workers, progress)
    kinds = [pair_kind(names[i], names[j], scene) for i, j in candidates]
    keep = select_pairs(scores, kinds, conf.min_score, conf.max_score, conf.pairs_per_scene, scene_rng(conf.seed, scene))
    in_window = int(((scores >= conf.min_score) & (scores <= conf.max_score)).sum())
    return ScenePairs(scene, names, candidates[keep], scores[keep], len(candidates), in_window, dropped)


def available_scenes(megadepth_aerial_dir: Path) -> list[str]:
    """Scene folders that hold a localization output."""
    if not megadepth_aerial_dir.is_dir():
        raise FileNotFoundError(f"{megadepth_aerial_dir}: folder not found")
    return sorted(p.name for p in megadepth_aerial_dir.iterdir() if (p / LOCALIZATION_DIR).is_dir())


def split_output_paths(output_path: Path) -> tuple[Path, Path]:
    """`<stem>_train.npz` and `<stem>_val.npz` next to `output_path` (aerial_megadepth.npz -> the published names)."""
    stem = output_path.name[: -len(".npz")] if output_path.name.endswith(".npz") else output_path.name
    return output_path.with_name(f"{stem}_train.npz"), output_path.with_name(f"{stem}_val.npz")


def merge_pair_file_paths(inputs: Sequence[Path | str], output_path: Path | str) -> None:
    """Merge pair files (e.g. one per shard) into one and write it."""
    merged = merge_pair_files([load_pair_file(path) for path in inputs])
    save_pair_file(output_path, merged)
    print(f"[{STAGE}] merged {len(inputs)} files into {output_path}: {len(merged.scenes)} scenes, "
          f"{len(merged.images)} images, {len(merged.score)} pairs", flush=True)


def make_pairs(megadepth_aerial_dir: Path | str, output_path: Path | str, scenes: Sequence[str] | None = None,
               conf: PairsConf = PairsConf(), split_val: Sequence[str] | None = None, sfm_name: str | None = None,
               shard: Shard | None = None) -> int:
    """Score and select pairs of the selected scenes (this shard's part) and write the pair file(s); returns the
    process exit code.

    With split_val, scenes in it go to `<stem>_val.npz`, the others to `<stem>_train.npz`. Setup problems raise; a
    failed scene is reported (exit code 1) and the file(s) hold the scenes that succeeded. The files of the shards of
    a run merge (merge_pair_files) into the file of an unsharded run: each scene's selection is seeded by its id."""
    root = Path(megadepth_aerial_dir)
    output_path = Path(output_path)
    requested = select_scenes(available_scenes(root), scenes)
    selected = shard.take(requested) if shard else requested
    if split_val:
        unknown = sorted(set(split_val) - set(requested))
        if unknown:
            raise ValueError(f"--split_val scenes not among the selected scenes: {', '.join(unknown)}")
    results: list[ScenePairs] = []

    def process(scene: str) -> str:
        model = read_dense_model(find_dense_dir(root / scene, sfm_name))
        result = scene_pairs(scene, model, conf)
        results.append(result)
        return result.summary()

    report = run_per_scene(STAGE, selected, process)
    totals = kind_counts(kind for r in results for kind in r.kinds)
    print(f"[{STAGE}] total {sum(totals.values())} pairs: " + ", ".join(f"{k} {n}" for k, n in totals.items()))
    if results:
        if split_val:
            train_path, val_path = split_output_paths(output_path)
            outputs = {train_path: [r for r in results if r.scene not in split_val],
                       val_path: [r for r in results if r.scene in split_val]}
        else:
            outputs = {output_path: results}
        for path, part in outputs.items():
            pair_file = PairFile.from_scene_blocks([r.block() for r in part])
            save_pair_file(path, pair_file)
            print(f"[{STAGE}] wrote {path}: {len(pair_file.scenes)} scenes, {len(pair_file.images)} images, "
                  f"{len(pair_file.score)} pairs")
    print(report.summary(), flush=True)
    return report.exit_code()
