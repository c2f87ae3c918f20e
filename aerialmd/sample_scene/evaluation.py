"""Accuracy against the sample scene's ground truth (aerialmd/sample_scene): poses of registered photos, scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pycolmap

from aerialmd.formats.dense_model import DenseView, depth_file_name, unproject, visible_in
from aerialmd.formats.depth import read_depth_exr, read_depth_h5
from aerialmd.geometry.camera import cam2world_from_cam_from_world, pose_errors, rescale_intrinsics
from aerialmd.layout import DEPTHS_DIR, PROCESSED_SUFFIX

MATCHABLE_FOOTPRINT_RATIO = 3.0  # views at most this much finer or coarser count (matching needs similar resolution)
# Classes of wrong depths (off by more than 10 %): on a silhouette (within SILHOUETTE_PX of a true depth jump of more
# than DEPTH_JUMP in log depth between neighbouring pixels, or of the sky), on a surface seen at a grazing angle (its
# normal more than GRAZING_DEG from the line of sight), or elsewhere
SILHOUETTE_PX = 3
DEPTH_JUMP = 0.1
GRAZING_DEG = 75.0
WRONG_DEPTH_CLASSES = ("silhouette", "grazing", "other")

# MegaDepth photos are named '<name>' in the ground truth and '<name>.jpg' once preprocessed (the published layout).


def load_ground_truth(ground_truth_dir: Path) -> dict:
    """The sample's cameras.json, with cam2world and intrinsics as arrays."""
    truth = json.loads((Path(ground_truth_dir) / "cameras.json").read_text())
    for image in truth["images"]:
        image["cam2world"] = np.array(image["cam2world"])
        image["intrinsics"] = np.array(image["intrinsics"])
    return truth


def registration_accuracy(model: pycolmap.Reconstruction, truth: dict) -> dict:
    """Per ground photo in the model: rotation and position errors; summary figures as the registration issue states
    them (fraction registered, medians and maxima, position as a fraction of the scene extent, scale of the Sim(3)
    fitted from the registered cameras to their true positions)."""
    extent = truth["scene_extent_m"]
    ground = {im["name"] + PROCESSED_SUFFIX: im for im in truth["images"] if im["kind"] == "ground"}
    per_image, estimated, true = {}, [], []
    for name, image_truth in ground.items():
        image = model.find_image_with_name(name)
        if image is None:
            continue
        pose = cam2world_from_cam_from_world(image.cam_from_world())
        distance, angle = pose_errors(pose, image_truth["cam2world"])
        per_image[name] = {"rotation_deg": angle, "position_m": distance, "position_fraction": distance / extent}
        estimated.append(pose[:3, 3])
        true.append(image_truth["cam2world"][:3, 3])
    summary = {"registered": len(per_image), "total": len(ground), "scene_extent_m": extent, "images": per_image}
    if per_image:
        angles = np.array([e["rotation_deg"] for e in per_image.values()])
        fractions = np.array([e["position_fraction"] for e in per_image.values()])
        summary.update(median_rotation_deg=float(np.median(angles)), max_rotation_deg=float(angles.max()),
                       median_position_fraction=float(np.median(fractions)), max_position_fraction=float(fractions.max()))
    if len(per_image) >= 3:
        summary["scale"] = float(np.squeeze(pycolmap.estimate_sim3d(np.array(estimated), np.array(true)).scale))
    return summary


def truth_view(image: dict) -> DenseView:
    """An image of the truth (a cameras.json entry from load_ground_truth) as a DenseView."""
    return DenseView(image["name"], image["width"], image["height"], image["intrinsics"], image["cam2world"])


def truth_points(image: dict, depth: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every step-th row and column's pixels of a truth image with a depth (OpenCV pixels, N x 2) and their world
    points (N x 3)."""
    v, u = np.nonzero(depth[::step, ::step] > 0)
    uv = np.stack([u * step, v * step], 1).astype(np.float64)
    return uv, unproject(truth_view(image), uv, depth[v * step, u * step].astype(np.float64))


def cross_view_visibility(ground_truth_dir: Path, kind: str = "ground", step: int = 2, tolerance: float = 0.01,
                          street_height_m: float | None = None, other_kinds: tuple[str, ...] | None = None,
                          max_footprint_ratio: float | None = None) -> dict:
    """How many other images (of `other_kinds`, by default of the same kind) see each true-valid pixel of the images
    of `kind`, from the truth alone: the share of pixels seen by at least one and by at least two others, pooled and
    per image. A property of the scene's camera layout, not of the MVS: confirmation by two views cannot cover more
    than `seen_by_2` (for ground photos the other confirmations must come from aerial frames, which see them 10-20x
    coarser and on the default sample rarely agree to 1 %). With `max_footprint_ratio`, an image counts only where
    its pixel footprint on the surface (distance / focal length) is within that factor of the reference's, finer or
    coarser: window matching needs comparable resolution, so this bounds what stereo can confirm. With
    `street_height_m`, the pooled figures also for the pixels whose surface lies below that world height ('street':
    the sample's ground is at height 0) and above it ('above_street')."""
    truth = load_ground_truth(ground_truth_dir)
    other_kinds = other_kinds or (kind,)
    sources = [image for image in truth["images"] if image["kind"] == kind]
    others = [image for image in truth["images"] if image["kind"] in other_kinds]
    depths = {image["name"]: read_depth_exr(Path(ground_truth_dir) / "depth" / f"{image['name']}.exr")
              for image in sources + others}
    per_image, totals = {}, {"all": np.zeros(3), "street": np.zeros(3), "above_street": np.zeros(3)}
    for src in sources:
        _, points = truth_points(src, depths[src["name"]], step)
        if not len(points):
            continue
        count = np.zeros(len(points), np.int64)
        for dst in others:
            if dst is not src:
                seen = visible_in(truth_view(dst), depths[dst["name"]], points, tolerance)[0]
                if max_footprint_ratio is not None:
                    ratio = footprints(dst, points) / footprints(src, points)
                    seen &= (ratio <= max_footprint_ratio) & (ratio >= 1.0 / max_footprint_ratio)
                count += seen
        figures = seen_counts(count)
        per_image[src["name"]] = seen_shares(figures)
        totals["all"] += figures
        if street_height_m is not None:
            street = points[:, 2] < street_height_m
            totals["street"] += seen_counts(count[street])
            totals["above_street"] += seen_counts(count[~street])
    out = {"pixels": int(totals["all"][0]), **seen_shares(totals["all"]), "images": per_image}
    if street_height_m is not None:
        for part in ("street", "above_street"):
            out[part] = {"pixels": int(totals[part][0]), **seen_shares(totals[part])}
    return out


def coverage_ceiling(ground_truth_dir: Path, kind: str) -> float:
    """The dense issue's ceiling of an image kind's coverage: the share of its true-valid pixels that at least two
    other views of any kind see at a pixel footprint within MATCHABLE_FOOTPRINT_RATIO (cross_view_visibility)."""
    return cross_view_visibility(ground_truth_dir, kind, other_kinds=("ground", "aerial"),
                                 max_footprint_ratio=MATCHABLE_FOOTPRINT_RATIO)["seen_by_2"]


def footprints(image: dict, points: np.ndarray) -> np.ndarray:
    """Size of the image's pixel at each world point (metres per pixel across the ray: distance / focal length)."""
    return np.linalg.norm(points - image["cam2world"][:3, 3], axis=1) / image["intrinsics"][0, 0]


def common_look_at_point(cam2world: np.ndarray) -> np.ndarray:
    """The world point nearest (least squares) to the optical axes of N cameras (N x 4 x 4 cam2world, OpenCV axes):
    what a photo collection of a landmark is aimed at."""
    centres, axes = cam2world[:, :3, 3], cam2world[:, :3, 2] / np.linalg.norm(cam2world[:, :3, 2], axis=1)[:, None]
    off_axis = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    return np.linalg.solve(off_axis.sum(axis=0), np.einsum("nij,nj->i", off_axis, centres))


def neighbour_distance_ratios(cam2world: np.ndarray) -> np.ndarray:
    """Per camera (N x 4 x 4 cam2world, N >= 2), the distance to the nearest other camera over its distance to the
    collection's common look-at point: how densely the viewpoints are sampled, free of the scene's scale (MegaDepth
    models have arbitrary units). Stereo between ground photos needs neighbours at a few percent of that distance."""
    centres = cam2world[:, :3, 3]
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    return gaps.min(axis=1) / np.linalg.norm(centres - common_look_at_point(cam2world), axis=1)


def seen_counts(count: np.ndarray) -> np.ndarray:
    """(pixels, seen by >= 1, seen by >= 2) from per-pixel counts of the other images that see them."""
    return np.array([len(count), (count >= 1).sum(), (count >= 2).sum()], np.float64)


def seen_shares(figures: np.ndarray) -> dict[str, float]:
    """seen_by_1 / seen_by_2 shares from seen_counts (0 without pixels)."""
    return {"seen_by_1": float(figures[1] / max(figures[0], 1)), "seen_by_2": float(figures[2] / max(figures[0], 1))}


def depth_accuracy(depth: np.ndarray, truth: np.ndarray) -> dict:
    """The MVS issue's figures: coverage of the ground-truth-valid pixels, and among the depths produced there the
    fractions within 2 % relative error and off by more than 10 %; plus depths produced where the truth is sky, and
    the counts behind the fractions (to pool them over scenes)."""
    both = (depth > 0) & (truth > 0)
    error = np.abs(depth[both] - truth[both]) / truth[both]
    return {"coverage": float(both.sum() / max((truth > 0).sum(), 1)),
            "within_2pct": float(np.mean(error < 0.02)) if error.size else 0.0,
            "off_10pct": float(np.mean(error > 0.10)) if error.size else 1.0,
            "on_sky": int(((depth > 0) & (truth == 0)).sum()), "produced": int((depth > 0).sum()),
            "true_valid": int((truth > 0).sum()), "covered": int(both.sum())}


def silhouette_pixels(truth: np.ndarray) -> np.ndarray:
    """H x W mask of the pixels within SILHOUETTE_PX of a true depth jump (DEPTH_JUMP in log depth between
    4-neighbours, both sides) or of the sky (truth 0)."""
    log_depth = np.log(np.where(truth > 0, truth, 1.0))
    edge = truth <= 0
    across_rows = np.abs(np.diff(log_depth, axis=0)) > DEPTH_JUMP
    across_columns = np.abs(np.diff(log_depth, axis=1)) > DEPTH_JUMP
    edge[:-1] |= across_rows
    edge[1:] |= across_rows
    edge[:, :-1] |= across_columns
    edge[:, 1:] |= across_columns
    distance = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= SILHOUETTE_PX


def grazing_pixels(truth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """H x W mask of the pixels whose true surface (normal from the cross product of the back-projected neighbours'
    differences) is seen more than GRAZING_DEG from its normal; False where a neighbour has no depth."""
    height, width = truth.shape
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    points = rays * truth[..., None]
    along_x = np.zeros_like(points)
    along_y = np.zeros_like(points)
    along_x[:, 1:-1] = points[:, 2:] - points[:, :-2]
    along_y[1:-1] = points[2:] - points[:-2]
    normal = np.cross(along_x, along_y)
    cosine = np.abs((normal * rays).sum(-1)) / np.maximum(np.linalg.norm(normal, axis=-1) * np.linalg.norm(rays, axis=-1),
                                                          1e-12)
    valid = truth > 0
    neighbours_valid = np.zeros_like(valid)
    neighbours_valid[1:-1, 1:-1] = valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    return neighbours_valid & (cosine < np.cos(np.radians(GRAZING_DEG)))


def wrong_depth_classes(depth: np.ndarray, truth: np.ndarray, K: np.ndarray) -> dict[str, int]:
    """The depths off by more than 10 % counted by WRONG_DEPTH_CLASSES (a silhouette before a grazing surface), and
    how many of them are too near (a foreground spread over the background, or a depth in front of the surface)."""
    off = (depth > 0) & (truth > 0) & (np.abs(depth - truth) > 0.10 * truth)
    silhouette = off & silhouette_pixels(truth)
    grazing = off & ~silhouette & grazing_pixels(truth, K)
    return {"silhouette": int(silhouette.sum()), "grazing": int(grazing.sum()),
            "other": int((off & ~silhouette & ~grazing).sum()), "too_near": int((off & (depth < truth)).sum())}


def sky_share(figures: dict) -> float:
    """Share of the produced depths that lie on the sky (depth_accuracy's figures)."""
    return figures["on_sky"] / max(figures["produced"], 1)


def dense_accuracy(dense_dir: Path, ground_truth_dir: Path,
                   transform: Callable[[str, np.ndarray], np.ndarray] | None = None) -> dict[str, dict]:
    """depth_accuracy of a `localized_dense_metric` folder against the sample's true depth, pooled per image kind
    ('aerial', 'ground'); the truth is resampled (nearest) to the depth maps' size. `transform(name, depth)`, when
    given, is applied to each depth map first (e.g. a cleaning step under study). Per kind also `wrong_by_class`:
    the depths off by more than 10 % counted by class (wrong_depth_classes)."""
    pooled: dict[str, tuple[list, list]] = {}
    classes: dict[str, dict[str, int]] = {}
    for image in load_ground_truth(ground_truth_dir)["images"]:
        name = image["name"] + (PROCESSED_SUFFIX if image["kind"] == "ground" else "")
        path = Path(dense_dir) / DEPTHS_DIR / depth_file_name(name)
        if not path.is_file():
            continue
        depth = read_depth_h5(path) if transform is None else transform(name, read_depth_h5(path))
        truth = read_depth_exr(Path(ground_truth_dir) / "depth" / f"{image['name']}.exr")
        truth = cv2.resize(truth, depth.shape[::-1], interpolation=cv2.INTER_NEAREST)
        K = rescale_intrinsics(np.asarray(image["intrinsics"]), depth.shape[1] / image["width"],
                               depth.shape[0] / image["height"])
        counts = classes.setdefault(image["kind"], {})
        for name, count in wrong_depth_classes(depth, truth, K).items():
            counts[name] = counts.get(name, 0) + count
        produced, true = pooled.setdefault(image["kind"], ([], []))
        produced.append(depth.ravel())
        true.append(truth.ravel())
    return {kind: {**depth_accuracy(np.concatenate(p), np.concatenate(t)), "images": len(p),
                   "wrong_by_class": classes[kind]} for kind, (p, t) in pooled.items()}
