"""Stage 4b: dense metric depth for every image of the localized model (multi-view stereo), in the seed's layout.

Per scene, into `<root_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/` (next to stage 4a's output):
    localized_dense_metric/images/<name>              undistorted images (PINHOLE cameras)
    localized_dense_metric/depths/<name stem>.h5      dataset 'depth', float32, metres, same size as the image, 0 = invalid
    localized_dense_metric/sparse-txt/                the undistorted model (cameras, images, points3D) as COLMAP text
    localized_dense_metric/dense.json                 settings, per-image coverage / agreement / failures, timings
    dense_work/                                       resumable intermediate state (removed when the scene finishes)

`localized_dense_metric/` is written under a temporary name and renamed when complete; its `dense.json` records the
settings, and re-running with other settings is refused unless `--overwrite`. Raw per-image depth maps are cached in
`dense_work/raw/`, so a killed run resumes at the first image it had not finished.

Backends: `colmap` (pycolmap's CUDA PatchMatch stereo, geometric depth maps) and `torch` (aerialmd.mvs.plane_sweep plane sweep plus
a multi-view geometric consistency filter; CPU or CUDA). `auto` picks colmap when pycolmap has CUDA, torch otherwise.
Either backend's depth maps then get their enclosed planar holes closed (aerialmd.mvs.depth_fill, `fill_*` settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pycolmap
import torch
from tqdm import tqdm

from aerialmd.atomic import atomic_file, remove_path
from aerialmd.geometry.camera import cam2world_from_cam_from_world, opencv_intrinsics
from aerialmd.formats.dense_model import (
    DENSE_DIR,
    DENSE_REPORT,
    LOCALIZED_MODEL,
    REGISTRATION_FILE,
    depth_file_name,
    find_sfm_dirs,
    write_dense_model,
)
from aerialmd.mvs.depth_fill import fill_enclosed_holes, window_pixels
from aerialmd.formats.depth import read_depth_exr, read_depth_h5, write_depth_h5
from aerialmd.stages.localization import OUTPUT_ROOT
from aerialmd.run.markers import SETTINGS_KEY, is_finished
from aerialmd.mvs.plane_sweep import (
    MVSView,
    coarse_to_fine_depth,
    geometric_consistency_filter,
    horizontal_planes,
    plane_sweep_depth,
    resolve_device,
)
from aerialmd.sfm.pairs_from_poses import in_image
from aerialmd.run.scenes import Shard, Timer, load_scene_list, run_per_scene, select_scenes

STAGE = "dense"
WORK_DIR = "dense_work"
BACKENDS = ("auto", "colmap", "torch")
WORLD_UP = np.array([0.0, 0.0, 1.0])  # the ENU frame of stage 2 (aerialmd.stages.preprocess_ge)


@dataclasses.dataclass(frozen=True)
class DenseConf:
    """Settings of the dense stage (recorded in dense.json; changing them needs --overwrite)."""

    backend: str = "auto"  # auto | colmap | torch
    max_image_size: int = 640  # long side of the undistorted images and depth maps
    num_sources: int = 8  # 5 left parts of photos without two partners (ground without wall grain: 0.674 -> 0.702)
    num_depths: int = 128
    window: int = 7
    max_cost: float = 0.8  # 1 - NCC (after smoothing) above which a pixel gets no depth; ~1 = no photometric evidence
    horizontal_planes: bool = True  # also sweep planes of constant height (ground, roofs); doubles the cost
    coarse_to_fine_above: int = 400  # long side above which the sweep runs at half resolution, refined at full (4x less)
    filter_neighbours: int = 12  # views checked by the consistency filter (torch backend)
    min_agree: int = 2  # of those, views whose depth must confirm a depth
    consistency_tol: float = 0.01  # relative depth tolerance of the consistency check
    consistency_reproj: float = 1.0 / 320.0  # its reprojection tolerance, fraction of the long side (2 px at 640 px)
    fill_rounds: int = 10  # rounds closing enclosed holes with local planes (aerialmd.mvs.depth_fill), both backends; 0 = off
    fill_window: float = 31.0 / 640.0  # their window side, fraction of the long side (31 px at 640 px)
    fill_max_residual: float = 0.02  # RMS of the window's plane fit in inverse depth, relative to the pixel's
    fill_quadrant_support: float = 0.05  # share of each quadrant of the window that must hold depths
    device: str = "auto"

    def depth_sweep(self, long_side: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """The plane sweep for an image of this long side: coarse-to-fine above coarse_to_fine_above, else full."""
        return coarse_to_fine_depth if long_side > self.coarse_to_fine_above else plane_sweep_depth

    def settings(self) -> dict:
        """What determines the outputs (the device does not)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "device"}


def add_mvs_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      default_size_note: str = "") -> None:
    """The MVS stage's options (--mvs_*) of do_colmap_localization.py and run_pipeline.py; read by dense_conf_from."""
    defaults = DenseConf()
    parser.add_argument("--mvs_backend", default=defaults.backend, choices=BACKENDS,
                        help="colmap: pycolmap PatchMatch (needs CUDA); torch: plane sweep on CPU/CUDA; auto: colmap "
                             "when pycolmap has CUDA")
    parser.add_argument("--mvs_max_image_size", type=int, default=None,
                        help=f"long side of the undistorted images and depth maps (default: {defaults.max_image_size}"
                             f"{default_size_note})")
    parser.add_argument("--mvs_num_sources", type=int, default=defaults.num_sources, help="source views per image")
    parser.add_argument("--mvs_horizontal_planes", action=argparse.BooleanOptionalAction,
                        default=defaults.horizontal_planes,
                        help="torch backend: also sweep horizontal planes (ground, roofs; twice the time; default: on)")
    parser.add_argument("--mvs_fill_rounds", type=int, default=defaults.fill_rounds,
                        help="rounds closing enclosed planar holes of the depth maps (0 = keep only confirmed depths)")
    parser.add_argument("--mvs_device", default=defaults.device,
                        help="torch backend device: auto, cpu, cuda, cuda:1 ...")


def dense_conf_from(args: argparse.Namespace, default_size: int = DenseConf.max_image_size) -> DenseConf:
    """The DenseConf of add_mvs_arguments' options (`default_size` when --mvs_max_image_size is not given)."""
    return DenseConf(backend=args.mvs_backend, max_image_size=args.mvs_max_image_size or default_size,
                     num_sources=args.mvs_num_sources, horizontal_planes=args.mvs_horizontal_planes,
                     fill_rounds=args.mvs_fill_rounds, device=args.mvs_device)


def resolve_backend(name: str) -> str:
    """'auto' -> 'colmap' when pycolmap was built with CUDA, else 'torch'; 'colmap' without CUDA is an error."""
    if name not in BACKENDS:
        raise ValueError(f"unknown MVS backend {name!r} (choose auto, colmap or torch)")
    if name == "auto":
        return "colmap" if pycolmap.has_cuda else "torch"
    if name == "colmap" and not pycolmap.has_cuda:
        raise RuntimeError("--mvs_backend colmap needs pycolmap built with CUDA (pycolmap.has_cuda is False): install a "
                           "CUDA build of pycolmap (e.g. pip install pycolmap-cuda12), or use --mvs_backend torch")
    return name


def image_sources(scene_dir: Path, processed_dirs: list[Path]) -> list[Path]:
    """Folders holding the model's images: the GES frames and the preprocessed MegaDepth photos."""
    return [scene_dir / "footage", *processed_dirs]


def link_images(model: pycolmap.Reconstruction, folders: list[Path], out_dir: Path) -> None:
    """One folder with every model image by name (symbolic links), as COLMAP's undistorter wants."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for image in model.images.values():
        found = next((f / image.name for f in folders if (f / image.name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"image {image.name} of the localized model not found in {', '.join(map(str, folders))}")
        link = out_dir / image.name
        if not link.exists():
            link.symlink_to(found.resolve())


def undistort(model_dir: Path, image_dir: Path, workspace: Path, max_image_size: int) -> pycolmap.Reconstruction:
    """COLMAP's image undistorter into `workspace` (images/, sparse/, stereo/): PINHOLE cameras, long side capped."""
    if not (workspace / "sparse").is_dir():
        tmp = workspace.with_name(workspace.name + ".tmp")
        remove_path(tmp)
        options = pycolmap.UndistortCameraOptions(max_image_size=max_image_size)
        pycolmap.undistort_images(str(tmp), str(model_dir), str(image_dir), undistort_options=options)
        os.replace(tmp, workspace)
    return pycolmap.Reconstruction(str(workspace / "sparse"))


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


# Triangulation angles (degrees) of a shared point as stereo evidence: full weight from FULL_WEIGHT_FROM_DEG to
# FULL_WEIGHT_UP_TO_DEG, none from MAX_STEREO_ANGLE_DEG on.
FULL_WEIGHT_FROM_DEG, FULL_WEIGHT_UP_TO_DEG, MAX_STEREO_ANGLE_DEG = 5.0, 30.0, 60.0


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


def ranked_sources(model: pycolmap.Reconstruction, min_shared: int = 8,
                   greedy_picks: int = 16) -> dict[int, list[int]]:
    """Per image, the other images ranked as stereo partners: first those sharing at least min_shared sparse points
    with it, then the others that see at least min_shared of its points (a photo matched to few aerial points shares
    them with few others: on the default sample one ground photo had a single partner by shared points), each group
    in `coverage_order` (its first `greedy_picks`) over the image's sparse points (the shared ones, or those inside
    the other view) and its foreground street (`foreground_street`, inside the other view), each weighted by how well
    the pair can match it: `triangulation_angle_weight` times `resolution_weight` of the `footprint_ratios` there.
    A partner a step beside the reference has tiny angles on the far points (weights near 0 there) and good ones on
    the street in front; it is not left out for its median angle (under 1 degree it was: on the popular-spots sample
    with pavement grain, photos 0.7-3 m apart lost their only street partners; ground coverage 0.648 -> 0.675
    without that cut; unchanged on the other samples). On the street the footprint is the one along its steepest
    direction (its normal is known): a photo 20 m down the street sees the street 6 m in front of the reference 11x
    coarser, not the 3.3x its distance says, and its windows did not match there (seed 1 of the default sample:
    ground coverage 0.683 -> 0.708; seeds 0 and 2 unchanged).

    Covering the pixels rather than summing the shared points' weights: a street photo's points are on the facades it
    looks at, and the views sharing most of them (aerial frames, photos from across the square) see the street in
    front of it 10x coarser or not at all. On a sample whose photos are taken from four popular spots
    (`bench/bench_dense.py --ground_spots 4`), ranking by the points alone left the street to partners that could not
    match it: ground coverage 0.442, now 0.638 (94.0 % within 2 %); on the default sample 0.465 -> 0.482 (94.5 ->
    93.3 % within 2 %); aerial frames unchanged. Computed once per scene; the MVS sources and the consistency-filter
    neighbours are prefixes of it."""
    points = {image_id: point_ids(image) for image_id, image in model.images.items()}
    ranking = {}
    for image_id, image in model.images.items():
        own_ids, own = observed_points(model, image_id)
        street = foreground_street(model, image_id)
        camera = model.cameras[image.camera_id]
        rest = max(camera.width * camera.height - len(street) * PROXY_GRID_PX**2, 0)
        pixels = np.concatenate([np.full(len(own), rest / max(len(own), 1)), np.full(len(street), PROXY_GRID_PX**2)])
        samples = np.concatenate([own, street])
        groups: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
        for other_id, other in model.images.items():
            if other_id == image_id:
                continue
            in_view = in_image(model.cameras[other.camera_id], other.cam_from_world(), samples)
            shared = np.isin(own_ids, list(points[other_id]))
            group = 0 if shared.sum() >= min_shared else 1
            if group == 0:
                in_view[:len(own)] = shared
            elif in_view[:len(own)].sum() < min_shared:
                continue
            angles = triangulation_angles_deg(model, image_id, other_id, samples[in_view])
            ratios = np.concatenate([footprint_ratios(model, image_id, other_id, own),
                                     footprint_ratios(model, image_id, other_id, street, WORLD_UP)])
            weights = np.zeros(len(samples))
            weights[in_view] = triangulation_angle_weight(angles) * resolution_weight(ratios[in_view])
            if weights.any():
                groups[group][other_id] = weights
        first = coverage_order(groups[0], pixels, greedy_picks)
        ranking[image_id] = first + coverage_order(groups[1], pixels, greedy_picks - len(first))
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


def mvs_view(model: pycolmap.Reconstruction, image_id: int, image_dir: Path) -> MVSView:
    image = model.images[image_id]
    rgb = cv2.imread(str(image_dir / image.name), cv2.IMREAD_COLOR)
    if rgb is None:
        raise ValueError(f"{image_dir / image.name}: unreadable image")
    return MVSView(cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB), opencv_intrinsics(model.cameras[image.camera_id]),
                   cam2world_from_cam_from_world(image.cam_from_world()))


def raw_torch_depth(model: pycolmap.Reconstruction, image_id: int, sources: list[int], image_dir: Path,
                    conf: DenseConf) -> np.ndarray:
    """Plane-sweep depth of one image against its sources (before the consistency filter); ValueError for an image
    without sources or without sparse points to bound its depth (reported as the image's failure)."""
    image = model.images[image_id]
    bounds = depth_range(model, image_id)
    if not sources:
        raise ValueError(f"{image.name}: no stereo partner (no other image sees enough of its sparse points within "
                         f"{MAX_STEREO_ANGLE_DEG:.0f} degrees of this view)")
    if bounds is None:
        raise ValueError(f"{image.name}: fewer than 5 sparse points in front of the camera to bound its depth")
    ref = mvs_view(model, image_id, image_dir)
    extra = ()
    if conf.horizontal_planes:
        family = horizontal_planes(ref, WORLD_UP, *height_range(model, image_id), conf.num_depths)
        extra = (family,) if family is not None else ()
    sweep = conf.depth_sweep(max(ref.shape))
    depth_min, depth_max, planes = fronto_sweep(bounds, conf.num_depths)
    depth, _ = sweep(ref, [mvs_view(model, s, image_dir) for s in sources], depth_min, depth_max, num_depths=planes,
                     window=conf.window, device=conf.device, extra_families=extra, max_cost=conf.max_cost)
    return depth.cpu().numpy()


def torch_depths(model: pycolmap.Reconstruction, workspace: Path, conf: DenseConf,
                 failures: dict[str, str]) -> dict[str, np.ndarray]:
    """Per image name the filtered torch-backend depth; raw maps are cached in workspace/raw (resumable)."""
    raw_dir = workspace / "raw"
    raw_dir.mkdir(exist_ok=True)
    raw = {}
    ranking = ranked_sources(model, greedy_picks=max(conf.num_sources, conf.filter_neighbours))
    for image_id in tqdm(sorted(model.images), desc="MVS (torch)", leave=False):
        name = model.images[image_id].name
        path = raw_dir / depth_file_name(name)
        if not path.is_file():
            try:
                depth = raw_torch_depth(model, image_id, ranking[image_id][:conf.num_sources], workspace / "images",
                                        conf)
            except Exception as exc:  # one image's failure is reported, the scene goes on
                failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            with atomic_file(path) as tmp:
                write_depth_h5(tmp, depth)
        raw[name] = read_depth_h5(path)
    views = {model.images[i].name: mvs_view(model, i, workspace / "images") for i in model.images}
    neighbours = {image.name: [model.images[s].name for s in ranking[image_id][:conf.filter_neighbours]]
                  for image_id, image in model.images.items() if image.name in raw}
    filtered = geometric_consistency_filter(raw, views, neighbours, rel_tol=conf.consistency_tol,
                                            min_agree=conf.min_agree, max_reproj=conf.consistency_reproj,
                                            device=conf.device)
    return {name: depth.cpu().numpy() for name, depth in filtered.items()}


def close_holes(depth: np.ndarray, conf: DenseConf) -> np.ndarray:
    """The depth map with its enclosed planar holes closed (aerialmd.mvs.depth_fill) as configured."""
    window = window_pixels(max(depth.shape), conf.fill_window)
    return fill_enclosed_holes(depth, conf.fill_rounds, window, conf.fill_max_residual, conf.fill_quadrant_support)


def read_colmap_array(path: Path) -> np.ndarray:
    """A COLMAP dense array file (`W&H&C&` text header, then float32 channel planes, rows of W values) as H x W (x C)."""
    data = path.read_bytes()
    fields = data.split(b"&", 3)
    if len(fields) < 4:
        raise ValueError(f"{path}: not a COLMAP array file (no W&H&C& header)")
    width, height, channels = (int(f) for f in fields[:3])
    values = np.frombuffer(fields[3], dtype="<f4")
    if values.size != width * height * channels:
        raise ValueError(f"{path}: {values.size} values, header says {width}x{height}x{channels}")
    array = values.reshape(channels, height, width).transpose(1, 2, 0)
    return array[..., 0] if channels == 1 else array


def colmap_depths(model: pycolmap.Reconstruction, workspace: Path, conf: DenseConf,
                  failures: dict[str, str]) -> dict[str, np.ndarray]:
    """COLMAP PatchMatch stereo (CUDA) with geometric consistency; its geometric depth maps per image name."""
    options = pycolmap.PatchMatchOptions(max_image_size=conf.max_image_size, geom_consistency=True,
                                         window_radius=conf.window // 2)
    pycolmap.patch_match_stereo(str(workspace), options=options)
    out = {}
    for image in model.images.values():
        path = workspace / "stereo" / "depth_maps" / f"{image.name}.geometric.bin"
        if path.is_file():
            out[image.name] = read_colmap_array(path).astype(np.float32)
        else:
            failures[image.name] = f"{path}: no depth map written by patch_match_stereo"
    return out


def megadepth_agreement(depth: np.ndarray, megadepth_depth: np.ndarray, scale: float) -> float | None:
    """Median |MVS - s * MegaDepth| / (s * MegaDepth) over pixels where both are valid (MegaDepth resized to the
    MVS size, nearest); None without overlap."""
    resized = cv2.resize(megadepth_depth, depth.shape[::-1], interpolation=cv2.INTER_NEAREST) * scale
    both = (depth > 0) & (resized > 0)
    if both.sum() < 100:
        return None
    return float(np.median(np.abs(depth[both] - resized[both]) / resized[both]))


def megadepth_depth_path(name: str, processed_dirs: list[Path]) -> Path | None:
    """The preprocessed MegaDepth depth (.exr, SfM units) of a ground photo, if there is one."""
    return next((d / f"{Path(name).stem}.exr" for d in processed_dirs if (d / f"{Path(name).stem}.exr").is_file()),
                None)


def image_metrics(depths: dict[str, np.ndarray], model: pycolmap.Reconstruction, processed_dirs: list[Path],
                  sim3_scale: float | None) -> dict[str, dict]:
    """Per image: coverage (valid fraction of pixels) and, for ground photos, agreement with the scaled MegaDepth depth."""
    metrics = {}
    for image in model.images.values():
        depth = depths.get(image.name)
        entry: dict = {"coverage": float((depth > 0).mean()) if depth is not None else 0.0}
        mega = megadepth_depth_path(image.name, processed_dirs)
        if depth is not None and mega is not None and sim3_scale is not None:
            entry["megadepth_rel_diff"] = megadepth_agreement(depth, read_depth_exr(mega), sim3_scale)
        metrics[image.name] = entry
    return metrics


def summarize(metrics: dict[str, dict], failures: dict[str, str]) -> dict:
    """Scene-level figures: image count, median coverage, median MegaDepth agreement, failures."""
    agreements = [m["megadepth_rel_diff"] for m in metrics.values() if m.get("megadepth_rel_diff") is not None]
    return {"images": len(metrics), "median_coverage": float(np.median([m["coverage"] for m in metrics.values()])),
            "megadepth_median_rel_diff": float(np.median(agreements)) if agreements else None,
            "megadepth_photos_compared": len(agreements), "failed_images": len(failures)}


def dense_scene(sfm_dir: Path, scene_dir: Path, processed_dirs: list[Path], conf: DenseConf,
                overwrite: bool = False) -> str | None:
    """Run stage 4b on one scene's stage-4a output; a one-line summary, or None when done already."""
    out_dir = sfm_dir / DENSE_DIR
    if not overwrite and is_finished(out_dir / DENSE_REPORT, conf.settings()):
        return None
    backend = resolve_backend(conf.backend)
    workspace = sfm_dir / WORK_DIR
    settings_file = workspace / "settings.json"
    if workspace.exists() and (overwrite or not settings_file.is_file()
                               or json.loads(settings_file.read_text()) != conf.settings()):
        remove_path(workspace)  # intermediate state of other settings is not reused
    workspace.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(conf.settings()))
    timer = Timer()
    localized = pycolmap.Reconstruction(str(sfm_dir / LOCALIZED_MODEL))
    with timer.step("undistortion"):
        link_images(localized, image_sources(scene_dir, processed_dirs), workspace / "inputs")
        model = undistort(sfm_dir / LOCALIZED_MODEL, workspace / "inputs", workspace / "undistorted", conf.max_image_size)
    failures: dict[str, str] = {}
    with timer.step("mvs"):
        compute = colmap_depths if backend == "colmap" else torch_depths
        depths = compute(model, workspace / "undistorted", conf, failures)
    with timer.step("fill"):
        depths = {name: close_holes(depth, conf) for name, depth in depths.items()}
    registration = json.loads((sfm_dir / REGISTRATION_FILE).read_text())
    scale = registration.get("sim3_metric_from_sfm", {}).get("scale")
    metrics = image_metrics(depths, model, processed_dirs, scale)
    summary = summarize(metrics, failures)
    document = {SETTINGS_KEY: conf.settings(), "backend": backend, "device": str(resolve_device(conf.device)),
                "summary": summary, "images": metrics, "failures": failures, "timings": timer.seconds}
    images = {image.name: workspace / "undistorted" / "images" / image.name for image in model.images.values()}
    blank = {image.name: np.zeros((model.cameras[image.camera_id].height, model.cameras[image.camera_id].width),
                                  np.float32) for image in model.images.values()}
    write_dense_model(out_dir, model, images, {**blank, **depths}, overwrite=True,
                      text_files={DENSE_REPORT: json.dumps(document, indent=1)})
    remove_path(workspace)
    agreement = summary["megadepth_median_rel_diff"]
    return (f"{summary['images']} depth maps ({backend}), median coverage {summary['median_coverage']:.2f}, "
            f"MegaDepth agreement {'n/a' if agreement is None else f'{100 * agreement:.2f}%'}, "
            f"{len(failures)} failed images")


def densify(root_dir: Path | str, megadepth_processed: Path | str, image_list: Path | str,
            scenes: list[str] | None = None, conf: DenseConf = DenseConf(), overwrite: bool = False,
            shard: Shard | None = None) -> int:
    """Run stage 4b over the scene list: every stage-4a output of every selected scene."""
    root_dir, megadepth_processed = Path(root_dir), Path(megadepth_processed)
    pycolmap.logging.minloglevel = pycolmap.logging.WARNING
    resolve_backend(conf.backend)  # fail before any scene when the backend cannot run
    scene_images = load_scene_list(image_list)

    def process(scene: str) -> str | None:
        sfm_dirs = find_sfm_dirs(root_dir / scene)
        if not sfm_dirs:
            if scenes:
                raise FileNotFoundError(f"{root_dir / scene / OUTPUT_ROOT}: no localized model (run do_colmap_localization)")
            return None
        processed = [megadepth_processed / scene / sub for sub in sorted(scene_images[scene])]
        messages = [dense_scene(d, root_dir / scene, processed, conf, overwrite) for d in sfm_dirs]
        done = [f"{d.name}: {m}" for d, m in zip(sfm_dirs, messages) if m is not None]
        return "; ".join(done) if done else "already done (use --overwrite to redo)"

    report = run_per_scene(STAGE, select_scenes(scene_images, scenes, shard), process)
    print(report.summary(), flush=True)
    return report.exit_code()
