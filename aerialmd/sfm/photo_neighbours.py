"""Photos confirmed through registered neighbours: a photo with too few matches to the aerial points across the
appearance gap is registered when the photos already registered confirm its MegaDepth pose.

Photo-to-photo matching has no appearance gap to cross (tourist photos against tourist photos). The check is the
predicted-pose support test of the aerial step (registration.place_registered_photos), with a registered neighbour's
keypoints in the place of the aerial points, all in the MegaDepth SfM frame (no Sim(3) involved): each neighbour
keypoint with MegaDepth depth is lifted to 3D and projected into the photo through the photo's MegaDepth pose, and
matched to the photo's keypoints within guided_radius_fraction of the image diagonal around that projection. Through
the right pose the matches reproject within support_radius_px; through a wrong one they land anywhere in the search
disc, and only (support_radius_px / radius)^2 of them (about 1 %) that close by chance. A pose 1 deg off already moves
the projections by 1.7 % of the focal length (7 px at 480 px wide), beyond the support radius. Neighbours are photos
whose own pose is confirmed (by the aerial matches first, then by neighbours, round after round), so the evidence
chains back to the aerial frames.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.hloc_h5 import read_features
from aerialmd.geometry.camera import cam_from_world_from_cam2world
from aerialmd.sfm.registration import (
    CONFIRMED_BY_NEIGHBOURS,
    STATUS_REGISTERED,
    GroundPhoto,
    PhotoResult,
    PointDescriptors,
    PoseSupport,
    RegistrationConf,
    pooled_support,
    seen_at_depth,
    sfm_points_of_keypoints,
    unit_rows,
)

OVERLAP_GRID_STEP_PX = 16  # pixel step of the depth samples that measure how much of a photo another one sees
OVERLAP_DEPTH_TOLERANCE = 0.05  # relative depth difference within which a sample is seen, not hidden (photo_overlaps)
OVERLAP_MAX_FOOTPRINT_RATIO = 3.0  # coarsest pixel footprint, relative to the photo's own, at which a sample is seen
MAX_FORESHORTENING = 10.0  # a surface seen edge-on counts as seen at 10x its pixel footprint


@dataclasses.dataclass(frozen=True)
class SurfaceSamples:
    """A photo's depth samples in the SfM frame with the surface normal there (zero where unknown)."""

    points: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3) unit vectors or zeros


def surface_samples(photo: GroundPhoto, step: int, offset: int = 2) -> SurfaceSamples:
    """The photo's depth on a grid of `step` pixels, lifted to the SfM frame, with normals from the points `offset`
    pixels to the right and below (zero where those have no depth)."""
    depth = read_depth_exr(photo.depth_path)
    v, u = np.mgrid[0:depth.shape[0]:step, 0:depth.shape[1]:step]
    keep = depth[v, u] > 0
    xy = np.column_stack([u[keep], v[keep]]).astype(np.float64)
    around = np.clip(np.concatenate([xy, xy + [offset, 0], xy + [0, offset]]), 0,
                     [photo.camera.width - 1, photo.camera.height - 1])
    lifted, valid = sfm_points_of_keypoints(photo, around, depth)
    everywhere = np.full((len(around), 3), np.nan)
    everywhere[valid] = lifted
    (points, right, below), (_, right_ok, below_ok) = np.split(everywhere, 3), np.split(valid, 3)
    normals = np.cross(right - points, below - points)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    known = right_ok & below_ok & (length[:, 0] > 0)
    normals = np.where(known[:, None], normals / np.maximum(length, 1e-12), 0.0)
    return SurfaceSamples(points, normals)


def photo_overlaps(photos: list[GroundPhoto], rows: list[int]) -> np.ndarray:
    """(N, N) matrix, filled in the given rows: [i, j] is the share of photo i's depth samples (SfM frame) that photo
    j sees well enough to match (matchable_samples); 0 on the diagonal. Only the photos to test need a row, so the
    cost grows with the number of photos times the number rejected by the aerial step."""
    samples = {i: surface_samples(photos[i], OVERLAP_GRID_STEP_PX) for i in rows}
    overlaps = np.zeros((len(photos), len(photos)))
    for j, photo in enumerate(photos):
        depth = read_depth_exr(photo.depth_path)
        for i, surface in samples.items():
            if i != j and len(surface.points):
                overlaps[i, j] = float(matchable_samples(photos[i], photo, depth, surface).mean())
    return overlaps


def matchable_samples(photo: GroundPhoto, other: GroundPhoto, other_depth: np.ndarray,
                      surface: SurfaceSamples) -> np.ndarray:
    """Which of the photo's surface samples `other` sees well enough to match: in front of it, inside its image, not
    hidden (its own depth there agrees within OVERLAP_DEPTH_TOLERANCE) and at a pixel footprint on the surface
    (foreshortened by the viewing angle) at most OVERLAP_MAX_FOOTPRINT_RATIO times the photo's. Each test removed
    false neighbours on sweep scenes: photos facing the same street from behind different buildings; a wall a few
    metres from the photo that is a strip of 16 x 1 pixels in the other; a facade seen square on by the photo and at
    a grazing angle by the other. (A limit on the angle between the two views' rays did not: one photo was confirmed
    by a neighbour 60-80 deg away, 79 of 167 matched keypoints.)"""
    coarser = surface_footprints(other, surface) / surface_footprints(photo, surface)
    return seen_unhidden(other, other_depth, surface.points) & (coarser <= OVERLAP_MAX_FOOTPRINT_RATIO)


def surface_footprints(photo: GroundPhoto, surface: SurfaceSamples) -> np.ndarray:
    """Size on the surface of one pixel of the photo at each sample: depth over focal length, divided by the cosine
    of the angle between the viewing ray and the normal (at most MAX_FORESHORTENING; 1 where the normal is unknown)."""
    cam_from_world = cam_from_world_from_cam2world(photo.cam2world_sfm)
    depth = np.abs((cam_from_world * surface.points)[:, 2])
    rays = surface.points - photo.cam2world_sfm[:3, 3]
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    cosine = np.abs(np.einsum("ij,ij->i", rays, surface.normals))
    cosine = np.where(np.any(surface.normals != 0, axis=1), np.maximum(cosine, 1.0 / MAX_FORESHORTENING), 1.0)
    return depth / float(np.mean(photo.camera.params[:2])) / cosine


def seen_unhidden(photo: GroundPhoto, depth: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mask of the SfM points (N, 3) a photo sees: in front, inside the image, and at the depth its depth map has
    there."""
    return seen_at_depth(photo.camera, cam_from_world_from_cam2world(photo.cam2world_sfm), depth, points,
                         OVERLAP_DEPTH_TOLERANCE)


def closest_registered(index: int, registered: list[int], overlaps: np.ndarray, count: int,
                       min_overlap: float) -> list[int]:
    """Up to `count` registered photos that see most of photo `index` (`overlaps[index, j]`), at least `min_overlap`
    of it; best first, ties by index. One direction only: a photo taken close to a facade is a small part of a wide
    view from farther away (on a sweep scene, every photo of a popular spot was within a fifth to a half of such
    views, and they saw under 1 % of them)."""
    seen = overlaps[index, registered]
    order = sorted(range(len(registered)), key=lambda k: (-seen[k], registered[k]))
    return [registered[k] for k in order[:count] if seen[k] >= min_overlap]


def lifted_keypoints(photo: GroundPhoto, features_path: Path) -> PointDescriptors:
    """A photo's keypoints that have MegaDepth depth, as SfM-frame points with their descriptors (id: keypoint)."""
    features = read_features(features_path, photo.name)
    xyz, valid = sfm_points_of_keypoints(photo, features.keypoints.astype(np.float64))
    return PointDescriptors(np.flatnonzero(valid), xyz, unit_rows(features.descriptors)[valid])


def neighbour_shortfall(support: PoseSupport, conf: RegistrationConf) -> str:
    """Why a photo's registered neighbours did not confirm its pose, for registration.json."""
    if not support.sources:
        return f"no registered photo overlaps it by {conf.min_neighbour_overlap:.0%}"
    return support.shortfall("registered photos", conf)


def confirm_through_neighbours(photos: list[GroundPhoto], results: list[PhotoResult], features_path: Path,
                               keep: Callable[[int], None], conf: RegistrationConf) -> None:
    """Round after round, test every rejected photo's MegaDepth pose against the conf.neighbour_pairs registered
    photos it overlaps most, and register (`keep(index)`, which gives it its predicted pose) those it confirms; until
    a round registers none. A photo still rejected gets the reason; every tested photo's support is recorded."""
    overlaps = photo_overlaps(photos, [i for i, r in enumerate(results) if r.status != STATUS_REGISTERED])
    lifted: dict[int, PointDescriptors] = {}
    last: dict[int, PoseSupport] = {}
    while True:
        registered = [i for i, r in enumerate(results) if r.status == STATUS_REGISTERED]
        confirmed = []
        for i in [i for i, r in enumerate(results) if r.status != STATUS_REGISTERED]:
            chosen = closest_registered(i, registered, overlaps, conf.neighbour_pairs, conf.min_neighbour_overlap)
            names = [photos[j].name for j in chosen]
            if i in last and last[i].sources == names:
                continue  # the same neighbours as in the last round: the same verdict
            for j in chosen:
                if j not in lifted:
                    lifted[j] = lifted_keypoints(photos[j], features_path)
            last[i] = pooled_support(photos[i], photos[i].cam2world_sfm, [lifted[j] for j in chosen], names,
                                     features_path, conf)
            if last[i].confirms(conf):
                confirmed.append(i)
        for i in confirmed:
            keep(i)
            results[i].confirmed_by = CONFIRMED_BY_NEIGHBOURS
        if not confirmed:
            break
    for i, support in last.items():
        results[i].neighbour_support, results[i].neighbour_matches = support.support, support.matched
        if results[i].status != STATUS_REGISTERED:
            results[i].reason = f"{results[i].reason}; {neighbour_shortfall(support, conf)}"
