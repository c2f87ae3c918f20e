"""Which views an image is matched against, and the depth and height ranges its sweep covers, from the registered
sparse model: partners ranked by the pixels they add a well-angled, comparably resolved partner to (the street in front
of a ground photo included; a ground photo's pixels sampled from its MegaDepth depth where given), and the sweep's
bounds from the sparse points the image observes.

Measured by bench/bench_dense.py (coverage and accuracy against the sample's truth) and bench/bench_mvs.py --sources.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pycolmap

from aerialmd.formats.dense_model import covisibility
from aerialmd.geometry.camera import COLMAP_TO_OPENCV_PIXEL_SHIFT, values_at_pixels
from aerialmd.geometry.geodesy import WORLD_UP
from aerialmd.sfm.pairs_from_poses import in_image

# Triangulation angles (degrees) of a shared point as stereo evidence: full weight from FULL_WEIGHT_FROM_DEG to
# FULL_WEIGHT_UP_TO_DEG, none from MAX_STEREO_ANGLE_DEG on.
FULL_WEIGHT_FROM_DEG, FULL_WEIGHT_UP_TO_DEG, MAX_STEREO_ANGLE_DEG = 5.0, 30.0, 60.0


def point_ids(image: pycolmap.Image) -> set[int]:
    return {p.point3D_id for p in image.points2D if p.has_point3D()}


def observed_points(model: pycolmap.Reconstruction, image_id: int) -> tuple[list[int], np.ndarray]:
    """The ids (ascending) and world positions (N x 3) of the sparse points an image observes."""
    ids = sorted(point_ids(model.images[image_id]))
    return ids, np.array([model.points3D[p].xyz for p in ids]).reshape(-1, 3)


def resolution_weight(footprint_ratio: np.ndarray) -> np.ndarray:
    """Weight of a stereo partner whose pixels cover `footprint_ratio` times the reference's on the shared surface
    (a scale term like Goesele et al.'s 2007 view selection for community photos): 1 for partners up to 2x coarser,
    falling off as 2 / ratio beyond, and linearly for finer partners. NCC windows cannot match across a large
    resolution gap; on the default sample at 640 px it lifted aerial coverage from 0.702 to 0.744 at equal accuracy."""
    return np.where(footprint_ratio >= 2.0, 2.0 / np.maximum(footprint_ratio, 2.0), np.minimum(footprint_ratio, 1.0))


def triangulation_angle_weight(angles_deg: np.ndarray) -> np.ndarray:
    """Weight of shared points as stereo evidence by their triangulation angle: rising to 1 at 5 degrees (small angles
    give imprecise depth), 1 up to 30 degrees, falling to 0 at 60 degrees. Beyond that the two views see the surface
    from directions too different for window matching: on the default sample, ranking by the shared points alone put
    partners at 135-160 degrees that see none of a ground photo's pixels among its five sources."""
    rising = np.minimum(angles_deg / FULL_WEIGHT_FROM_DEG, 1.0)
    falling = (MAX_STEREO_ANGLE_DEG - angles_deg) / (MAX_STEREO_ANGLE_DEG - FULL_WEIGHT_UP_TO_DEG)
    return rising * np.clip(falling, 0.0, 1.0)


def triangulation_angles_deg(model: pycolmap.Reconstruction, image_id: int, other_id: int,
                             xyz: np.ndarray) -> np.ndarray:
    """Angle (degrees) at each world point between the rays from the two images' centres."""
    a = xyz - model.images[image_id].projection_center()
    b = xyz - model.images[other_id].projection_center()
    cosines = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cosines, -1, 1)))

PROXY_GRID_PX = 16  # spacing of the foreground-street proxy points on the image

STREET_PERCENTILE = 5  # of the heights of an image's sparse points: its lowest surface (the 1st is triangulation noise)


def foreground_street(model: pycolmap.Reconstruction, image_id: int, grid_px: int = PROXY_GRID_PX) -> np.ndarray:
    """Stand-ins for the surface that an image's sparse points miss: where pixels on a grid look down onto the lowest
    surface its points lie on (a horizontal plane at the STREET_PERCENTILE of their heights) nearer than any of them
    (their 1st-percentile depth), the points there (N x 3). A street photo's sparse points are on the facades it looks
    at; the street in front of it, often a third of its pixels, has none, so ranking partners by the sparse points
    alone never asks who else sees it."""
    image = model.images[image_id]
    camera = model.cameras[image.camera_id]
    _, xyz = observed_points(model, image_id)
    if len(xyz) < 5:
        return np.zeros((0, 3))
    cam_from_world = image.cam_from_world()
    nearest = np.percentile((cam_from_world * xyz)[:, 2], 1)
    street_height = np.percentile(xyz @ WORLD_UP, STREET_PERCENTILE)
    u, v = np.meshgrid(np.arange(grid_px / 2, camera.width, grid_px), np.arange(grid_px / 2, camera.height, grid_px))
    rays_cam = camera.cam_from_img(np.stack([u.ravel(), v.ravel()], axis=1))
    rays_cam = np.concatenate([rays_cam, np.ones((len(rays_cam), 1))], axis=1)  # z = 1: ray parameter is the depth
    rotation = cam_from_world.rotation.matrix().T
    center = image.projection_center()
    down = (rays_cam @ rotation.T) @ WORLD_UP
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = (street_height - center @ WORLD_UP) / down
    keep = (down < 0) & (depth > 0) & (depth < nearest)
    return center + depth[keep, None] * (rays_cam[keep] @ rotation.T)


def footprint_ratios(model: pycolmap.Reconstruction, image_id: int, other_id: int, xyz: np.ndarray,
                     normal: np.ndarray | None = None) -> np.ndarray:
    """Per world point: the other image's pixel footprint there over the image's (distance / focal length). With the
    surface's `normal` known (the foreground street: up), the footprint along the surface's steepest direction, where
    a view at a grazing angle stretches its pixels by 1 / cos(angle between its ray and the normal): a photo 20 m away
    sees the street 6 m in front of another photo 3.3x coarser by distance, 11x along the street."""
    ratio = np.ones(len(xyz))
    for image, power in ((model.images[image_id], -1.0), (model.images[other_id], 1.0)):
        rays = xyz - image.projection_center()
        distance = np.linalg.norm(rays, axis=1)
        footprint = distance / model.cameras[image.camera_id].mean_focal_length()
        if normal is not None:
            footprint = footprint * distance / np.maximum(np.abs(rays @ normal), 1e-6 * distance)
        ratio *= footprint**power
    return ratio

NEEDED_PARTNERS = 2.0  # the cost takes the best two sources, and the consistency filter wants two confirmations
MAX_CANDIDATES = 64  # partners weighed per image in a larger scene (partner_candidates); the full sample has 64 images
PREFILTER_POINTS = 64  # sparse points that estimate which views see an image's points


def coverage_order(matchable: dict[int, np.ndarray], pixels: np.ndarray, picks: int) -> list[int]:
    """Candidates ordered greedily by the reference pixels they add a partner to: `matchable` holds, per candidate,
    a weight in [0, 1] per sample of the reference (each standing for `pixels` pixels); a pick counts where samples
    have fewer than NEEDED_PARTNERS (summed weights) so far. The first `picks` are chosen so (the ranking's prefixes
    are what is used), the rest follow by their whole weight; ties go to the lower id."""
    candidates = sorted(matchable)
    if not candidates:
        return []
    weights = np.stack([matchable[c] for c in candidates])
    total = weights @ pixels
    covered = np.zeros(len(pixels))
    chosen: list[int] = []
    for _ in range(min(picks, len(candidates))):
        gain = np.minimum(weights, np.clip(NEEDED_PARTNERS - covered, 0.0, 1.0)) @ pixels
        gain[chosen] = -1.0
        best = int(np.lexsort((np.arange(len(candidates)), -total, -gain))[0])
        chosen.append(best)
        covered += weights[best]
    rest = [i for i in np.lexsort((np.arange(len(candidates)), -total)) if i not in chosen]
    return [candidates[i] for i in chosen + rest]


@dataclasses.dataclass(frozen=True)
class PinholeCameras:
    """Every image's pose and pinhole projection (distortion left out) as arrays, to test many views at once."""

    ids: np.ndarray  # (N,) image ids
    rotations: np.ndarray  # (N, 3, 3) world to camera
    translations: np.ndarray  # (N, 3)
    K: np.ndarray  # (N, 3, 3), COLMAP pixel convention
    sizes: np.ndarray  # (N, 2) width, height

    @classmethod
    def of(cls, model: pycolmap.Reconstruction) -> "PinholeCameras":
        ids = np.array(sorted(model.images), dtype=np.int64)
        poses = [model.images[int(i)].cam_from_world() for i in ids]
        cameras = [model.cameras[model.images[int(i)].camera_id] for i in ids]
        return cls(ids, np.array([p.rotation.matrix() for p in poses]).reshape(-1, 3, 3),
                   np.array([p.translation for p in poses]).reshape(-1, 3),
                   np.array([c.calibration_matrix() for c in cameras]).reshape(-1, 3, 3),
                   np.array([(c.width, c.height) for c in cameras]).reshape(-1, 2))

    def in_view_shares(self, rows: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """Per camera of `rows`, the share of the world points (M, 3) in front of it that project inside its image."""
        cam = np.einsum("nij,mj->nmi", self.rotations[rows], xyz) + self.translations[rows][:, None]
        z = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.einsum("nij,nmj->nmi", self.K[rows][:, :2], cam) / z[..., None]
        sizes = self.sizes[rows][:, None]
        inside = (z > 0) & (uv >= 0).all(axis=-1) & (uv < sizes).all(axis=-1)
        return inside.mean(axis=1) if xyz.size else np.zeros(len(rows))


def shared_point_counts(model: pycolmap.Reconstruction) -> dict[int, dict[int, int]]:
    """Per image id, the other images sharing sparse points with it and how many (from the tracks: the cost follows
    the observations, not the square of the image count)."""
    ids = sorted(model.images)
    counts = covisibility(model, [model.images[i].name for i in ids]).tocoo()
    out: dict[int, dict[int, int]] = {i: {} for i in ids}
    for row, col, count in zip(counts.row, counts.col, counts.data):
        out[ids[row]][ids[col]] = int(count)
    return out


def seeing_most(cameras: PinholeCameras, others: list[int], xyz: np.ndarray, limit: int) -> list[int]:
    """Of the `others`, the (up to `limit`) views into which most of the world points (PREFILTER_POINTS of them,
    spread, projected without distortion) fall, each with at least one; ties go to the lower id."""
    rest = np.array(others, dtype=np.int64)
    if len(rest) <= limit:
        return [int(i) for i in rest]
    sample = xyz[np.linspace(0, len(xyz) - 1, min(len(xyz), PREFILTER_POINTS)).astype(int)]
    share = cameras.in_view_shares(np.searchsorted(cameras.ids, rest), sample)
    order = np.lexsort((rest, -share))[:limit]
    return [int(i) for i in rest[order][share[order] > 0]]


def partner_candidates(image_id: int, shared_counts: dict[int, dict[int, int]], cameras: PinholeCameras,
                       own_xyz: np.ndarray, min_shared: int, limit: int = MAX_CANDIDATES) -> list[int]:
    """The other images `ranked_sources` weighs for `image_id`: all of them in a scene of at most `limit` + 1 images;
    else the (up to `limit`) sharing the most sparse points with it (at least min_shared), then, to `limit` in all, the
    others that see most of its points (`seeing_most`), so that the cost per image stays bounded as scenes grow
    (bench/bench_scale.py). Only a prefix of the ranking is used (sources and filter neighbours), and the
    best-sharing views are the ones it is made of."""
    others = [int(i) for i in cameras.ids if i != image_id]
    if len(others) <= limit:
        return others
    shared = shared_counts[image_id]
    sharing = sorted((i for i in others if shared.get(i, 0) >= min_shared), key=lambda i: (-shared[i], i))[:limit]
    rest = [i for i in others if shared.get(i, 0) < min_shared]
    return sharing + seeing_most(cameras, rest, own_xyz, limit - len(sharing))


# A prior depth map of an image (a ground photo's MegaDepth depth, scaled to metres) is sampled every
# PRIOR_SAMPLE_PX pixels; another view with a prior depth hides a sample where its depth there is nearer by more than
# PRIOR_OCCLUSION_TOL (relative: MegaDepth depth is smooth but not exact).
PRIOR_SAMPLE_PX = 8
PRIOR_OCCLUSION_TOL = 0.1


def prior_depth_samples(model: pycolmap.Reconstruction, image_id: int, depth: np.ndarray,
                        step: int = PRIOR_SAMPLE_PX) -> np.ndarray:
    """World points (N x 3) of the pixels of every step-th row and column of the image's prior depth map (at its
    camera's size, 0 = no depth)."""
    image = model.images[image_id]
    rows, cols = np.nonzero(depth[step // 2::step, step // 2::step] > 0)
    rows, cols = rows * step + step // 2, cols * step + step // 2
    xy_colmap = np.stack([cols, rows], axis=1) - COLMAP_TO_OPENCV_PIXEL_SHIFT
    rays = model.cameras[image.camera_id].cam_from_img(xy_colmap.astype(np.float64))
    x_cam = np.concatenate([rays, np.ones((len(rays), 1))], axis=1) * depth[rows, cols, None]
    return image.cam_from_world().inverse() * x_cam


def seen_in(model: pycolmap.Reconstruction, other_id: int, xyz: np.ndarray,
            prior_depth: np.ndarray | None) -> np.ndarray:
    """Mask of the world points that project inside the other view; with its prior depth map, also those not hidden
    behind its depth there (where it has none, the point counts as seen)."""
    seen = in_image(model.cameras[model.images[other_id].camera_id], model.images[other_id].cam_from_world(), xyz)
    if prior_depth is None or not seen.any():
        return seen
    other = model.images[other_id]
    x_cam = other.cam_from_world() * xyz[seen]
    xy = model.cameras[other.camera_id].img_from_cam(x_cam) + COLMAP_TO_OPENCV_PIXEL_SHIFT
    there = values_at_pixels(prior_depth, xy)
    seen[seen] = (there <= 0) | (x_cam[:, 2] <= (1 + PRIOR_OCCLUSION_TOL) * there)
    return seen


def prior_sample_weights(model: pycolmap.Reconstruction, image_id: int, other_id: int, samples: np.ndarray,
                         other_prior: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of the image's prior depth (`prior_depth_samples`): whether the other view sees it (`seen_in`) and
    how well it can match it there (`triangulation_angle_weight` times `resolution_weight`; 0 where unseen)."""
    seen = seen_in(model, other_id, samples, other_prior)
    weights = np.zeros(len(samples))
    if seen.any():
        weights[seen] = (triangulation_angle_weight(triangulation_angles_deg(model, image_id, other_id, samples[seen]))
                         * resolution_weight(footprint_ratios(model, image_id, other_id, samples[seen])))
    return seen, weights


def prior_candidates(model: pycolmap.Reconstruction, image_id: int, samples: np.ndarray,
                     prior_depths: dict[int, np.ndarray], limit: int = MAX_CANDIDATES) -> list[int]:
    """The other images `ranked_by_prior_depth` weighs: all in a scene of at most `limit` + 1 images, else the
    `limit` with the largest summed `prior_sample_weights` over PREFILTER_POINTS of the samples (spread), each with
    some; ties go to the lower id. Weighed, not merely in view: in a larger scene the aerial frames have every sample
    in view, and a view-only cut kept 64 of them before the photos that see the pixels (bench/bench_sweep.py --dense,
    large0011; docs/mvs.md)."""
    others = [int(i) for i in sorted(model.images) if i != image_id]
    if len(others) <= limit:
        return others
    sample = samples[np.linspace(0, len(samples) - 1, min(len(samples), PREFILTER_POINTS)).astype(int)]
    score = np.array([prior_sample_weights(model, image_id, other_id, sample, prior_depths.get(other_id))[1].sum()
                      for other_id in others])
    order = np.lexsort((others, -score))[:limit]
    return [others[i] for i in order if score[i] > 0]


def ranked_by_prior_depth(model: pycolmap.Reconstruction, image_id: int, samples: np.ndarray,
                          candidates: list[int], prior_depths: dict[int, np.ndarray], min_seen: int,
                          greedy_picks: int) -> list[int]:
    """The candidates in `coverage_order` over samples of the image's prior depth (`prior_depth_samples`), each
    weighted by `prior_sample_weights`; candidates seeing fewer than `min_seen` samples are left out."""
    matchable = {}
    for other_id in candidates:
        seen, weights = prior_sample_weights(model, image_id, other_id, samples, prior_depths.get(other_id))
        if seen.sum() >= min_seen and weights.any():
            matchable[other_id] = weights
    return coverage_order(matchable, np.full(len(samples), float(PRIOR_SAMPLE_PX**2)), greedy_picks)


def ranked_by_sparse_points(model: pycolmap.Reconstruction, image_id: int, points: dict[int, set[int]],
                            shared_counts: dict[int, dict[int, int]], cameras: PinholeCameras, min_shared: int,
                            greedy_picks: int) -> list[int]:
    """The other images in `coverage_order` over the image's sparse points and its foreground street
    (`foreground_street`): a view sharing at least min_shared of the points counts on those it shares, any other on
    those inside it if at least min_shared are (a photo matched to few aerial points shares them with few others: on
    the default sample one ground photo had a single partner by shared points), the street where inside it; each
    weighted by how well the pair can match it: `triangulation_angle_weight` times `resolution_weight` of the
    `footprint_ratios` there. A partner a step beside the reference has tiny angles on the far points (weights near
    0 there) and good ones on the street in front; it is not left out for its median angle. On the street the
    footprint is the one along its steepest direction (its normal is known): a photo down the street sees the street
    in front of the reference far coarser than its distance says.

    Covering the pixels rather than summing the shared points' weights: a street photo's points are on the facades it
    looks at, and the views sharing most of them (aerial frames, photos from across the square) see the street in
    front of it much coarser or not at all. The views sharing points no longer all rank before the others: at the
    orbits' 26-45 degree baselines, frames of the other orbits share fewer points yet see the same pixels
    (docs/mvs.md, "Aerial frames: one ranking for sharing and seeing views")."""
    image = model.images[image_id]
    own_ids, own = observed_points(model, image_id)
    street = foreground_street(model, image_id)
    camera = model.cameras[image.camera_id]
    rest = max(camera.width * camera.height - len(street) * PROXY_GRID_PX**2, 0)
    pixels = np.concatenate([np.full(len(own), rest / max(len(own), 1)), np.full(len(street), PROXY_GRID_PX**2)])
    samples = np.concatenate([own, street])
    matchable = {}
    for other_id in partner_candidates(image_id, shared_counts, cameras, own, min_shared):
        other = model.images[other_id]
        in_view = in_image(model.cameras[other.camera_id], other.cam_from_world(), samples)
        shared = np.isin(own_ids, list(points[other_id]))
        if shared.sum() >= min_shared:
            in_view[:len(own)] = shared
        elif in_view[:len(own)].sum() < min_shared:
            continue
        angles = triangulation_angles_deg(model, image_id, other_id, samples[in_view])
        ratios = np.concatenate([footprint_ratios(model, image_id, other_id, own),
                                 footprint_ratios(model, image_id, other_id, street, WORLD_UP)])
        weights = np.zeros(len(samples))
        weights[in_view] = triangulation_angle_weight(angles) * resolution_weight(ratios[in_view])
        if weights.any():
            matchable[other_id] = weights
    return coverage_order(matchable, pixels, greedy_picks)


def ranked_sources(model: pycolmap.Reconstruction, min_shared: int = 8, greedy_picks: int = 16,
                   prior_depths: dict[int, np.ndarray] | None = None) -> dict[int, list[int]]:
    """Per image, the other images ranked as stereo partners, computed once per scene; the MVS sources and the
    consistency-filter neighbours are prefixes of it. An image with a prior depth map in `prior_depths` (a ground
    photo's MegaDepth depth, metric, at its camera's size) is ranked over samples of that depth
    (`ranked_by_prior_depth`, all views on an equal footing), the others by their sparse points
    (`ranked_by_sparse_points`). A photo's sparse points are the aerial points it was registered with, many of them
    hidden behind what it sees (matched through occluders), and the aerial frames sharing them crowded out the photos
    that see the same pixels. Measured by bench/bench_dense.py and bench/bench_sweep.py --dense (figures and history:
    docs/mvs.md)."""
    prior_depths = prior_depths or {}
    points = {image_id: point_ids(image) for image_id, image in model.images.items()}
    shared_counts = shared_point_counts(model)
    cameras = PinholeCameras.of(model)
    ranking = {}
    for image_id in model.images:
        prior = prior_depth_samples(model, image_id, prior_depths[image_id]) if image_id in prior_depths else ()
        if len(prior) >= min_shared:
            ranking[image_id] = ranked_by_prior_depth(model, image_id, prior,
                                                      prior_candidates(model, image_id, prior, prior_depths),
                                                      prior_depths, min_shared, greedy_picks)
        else:
            ranking[image_id] = ranked_by_sparse_points(model, image_id, points, shared_counts, cameras, min_shared,
                                                        greedy_picks)
    return ranking


def depth_range(model: pycolmap.Reconstruction, image_id: int) -> tuple[float, float] | None:
    """Depth bounds from the sparse points the image observes (1st-99th percentile, widened), or None without points."""
    image = model.images[image_id]
    _, xyz = observed_points(model, image_id)
    if len(xyz) < 5:
        return None
    depths = (xyz @ image.cam_from_world().rotation.matrix().T + image.cam_from_world().translation)[:, 2]
    depths = depths[depths > 0]
    if len(depths) < 5:
        return None
    low, high = np.percentile(depths, [1, 99])
    return 0.75 * low, 1.5 * high

# The fronto-parallel sweep reaches this much nearer than the sparse points an image observes: the sparse model is
# triangulated from the aerial views, which do not see the lower facades beside a street photo (a sample with photos
# a few metres from buildings had a third of its ground photos' facade pixels nearer than the old bound).
NEAR_EXTENSION = 3.0


def fronto_sweep(bounds: tuple[float, float], num_depths: int) -> tuple[float, float, int]:
    """(depth_min, depth_max, planes) of the fronto-parallel sweep of an image whose sparse points lie within `bounds`
    (depth_range): NEAR_EXTENSION times nearer, at the spacing num_depths planes have over the bounds themselves."""
    near, far = bounds
    log_step = float(np.log(far / near)) / max(num_depths - 1, 1)
    extra = int(np.ceil(np.log(NEAR_EXTENSION) / log_step))  # depth_range's far is at least twice its near
    return near * float(np.exp(-extra * log_step)), far, num_depths + extra


def height_range(model: pycolmap.Reconstruction, image_id: int) -> tuple[float, float]:
    """World heights spanned by the points the image observes (1st-90th percentile)."""
    _, xyz = observed_points(model, image_id)
    low, high = np.percentile(xyz @ WORLD_UP, [1, 90])
    return float(low) - 2.0, float(high) + 2.0
