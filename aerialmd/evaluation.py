"""Accuracy against the sample scene's ground truth (aerialmd/sample_scene): poses of registered photos, scale."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pycolmap

from .camera import cam2world_from_cam_from_world, pose_errors
from .depth_io import read_depth_exr, read_depth_h5

# MegaDepth photos are named '<name>' in the ground truth and '<name>.jpg' once preprocessed (the published layout).
PROCESSED_SUFFIX = ".jpg"


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


def depth_accuracy(depth: np.ndarray, truth: np.ndarray) -> dict:
    """The MVS issue's figures: coverage of the ground-truth-valid pixels, and among the depths produced there the
    fractions within 2 % relative error and off by more than 10 %; plus depths produced where the truth is sky."""
    both = (depth > 0) & (truth > 0)
    error = np.abs(depth[both] - truth[both]) / truth[both]
    return {"coverage": float(both.sum() / max((truth > 0).sum(), 1)),
            "within_2pct": float(np.mean(error < 0.02)) if error.size else 0.0,
            "off_10pct": float(np.mean(error > 0.10)) if error.size else 1.0,
            "on_sky": int(((depth > 0) & (truth == 0)).sum())}


def dense_accuracy(dense_dir: Path, ground_truth_dir: Path) -> dict[str, dict]:
    """depth_accuracy of a `localized_dense_metric` folder against the sample's true depth, pooled per image kind
    ('aerial', 'ground'); the truth is resampled (nearest) to the depth maps' size."""
    pooled: dict[str, tuple[list, list]] = {}
    for image in load_ground_truth(ground_truth_dir)["images"]:
        name = image["name"] + (PROCESSED_SUFFIX if image["kind"] == "ground" else "")
        path = Path(dense_dir) / "depths" / f"{Path(name).stem}.h5"
        if not path.is_file():
            continue
        depth = read_depth_h5(path)
        truth = read_depth_exr(Path(ground_truth_dir) / "depth" / f"{image['name']}.exr")
        truth = cv2.resize(truth, depth.shape[::-1], interpolation=cv2.INTER_NEAREST)
        produced, true = pooled.setdefault(image["kind"], ([], []))
        produced.append(depth.ravel())
        true.append(truth.ravel())
    return {kind: {**depth_accuracy(np.concatenate(p), np.concatenate(t)), "images": len(p)}
            for kind, (p, t) in pooled.items()}
