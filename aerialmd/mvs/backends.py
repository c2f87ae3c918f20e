"""The two MVS backends of the dense stage, each turning an undistorted COLMAP workspace into raw depth maps per image:
`torch` (the plane sweep of aerialmd.mvs.plane_sweep against ranked sources, then the multi-view consistency filter;
CPU or CUDA) and `colmap` (pycolmap's CUDA PatchMatch stereo with geometric consistency); and the hole closing both
get (aerialmd.mvs.depth_fill).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pycolmap
from tqdm import tqdm

from aerialmd.atomic import atomic_file
from aerialmd.formats.dense_model import depth_file_name
from aerialmd.formats.depth import read_depth_h5, write_depth_h5
from aerialmd.geometry.camera import cam2world_from_cam_from_world, opencv_intrinsics
from aerialmd.geometry.geodesy import WORLD_UP
from aerialmd.layout import RAW_DEPTHS_DIR
from aerialmd.mvs.depth_fill import fill_enclosed_holes, window_pixels
from aerialmd.mvs.plane_sweep import (
    MVSView,
    geometric_consistency_filter,
    horizontal_planes,
    oblique_vertical_planes,
    resolve_device,
)
from aerialmd.mvs.view_selection import MAX_STEREO_ANGLE_DEG, depth_range, fronto_sweep, height_range, ranked_sources

if TYPE_CHECKING:  # the stage's settings; the stage imports this module
    from aerialmd.run.scenes import Timer
    from aerialmd.stages.dense import DenseConf

BACKENDS = ("auto", "colmap", "torch")


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
    for azimuth in conf.vertical_plane_azimuths:
        family = oblique_vertical_planes(ref, WORLD_UP, azimuth, depth_min, depth_max, conf.vertical_depths)
        extra += (family,) if family is not None else ()
    depth, _ = sweep(ref, [mvs_view(model, s, image_dir) for s in sources], depth_min, depth_max, num_depths=planes,
                     window=conf.window, device=conf.device, extra_families=extra, max_cost=conf.max_cost,
                     smoothing=conf.smoothing())
    return depth.cpu().numpy()


def torch_depths(model: pycolmap.Reconstruction, workspace: Path, conf: DenseConf, failures: dict[str, str],
                 timer: Timer, prior_depths: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per image name the filtered torch-backend depth; raw maps are cached in workspace/raw (resumable). Steps timed:
    ranking (the sources; images with a prior depth, by name, are ranked over it when conf.rank_by_megadepth:
    `ranked_sources`), sweep, consistency (a prior depth counts as one view there when conf.megadepth_vote)."""
    raw_dir = workspace / RAW_DEPTHS_DIR
    raw_dir.mkdir(exist_ok=True)
    prior_depths = prior_depths or {}
    with timer.step("ranking"):
        priors = {image_id: prior_depths[image.name] for image_id, image in model.images.items()
                  if image.name in prior_depths and conf.rank_by_megadepth}
        ranking = ranked_sources(model, greedy_picks=max(conf.num_sources, conf.filter_neighbours),
                                 prior_depths=priors)
    with timer.step("sweep"):
        raw = sweep_depths(model, workspace, conf, ranking, failures)
    with timer.step("consistency"):
        views = {model.images[i].name: mvs_view(model, i, workspace / "images") for i in model.images}
        neighbours = {image.name: [model.images[s].name for s in ranking[image_id][:conf.filter_neighbours]]
                      for image_id, image in model.images.items() if image.name in raw}
        filtered = geometric_consistency_filter(raw, views, neighbours, rel_tol=conf.consistency_tol,
                                                min_agree=conf.min_agree, max_reproj=conf.consistency_reproj,
                                                device=conf.device,
                                                priors=prior_depths if conf.megadepth_vote else None)
        return {name: depth.cpu().numpy() for name, depth in filtered.items()}


def sweep_depths(model: pycolmap.Reconstruction, workspace: Path, conf: DenseConf, ranking: dict[int, list[int]],
                 failures: dict[str, str]) -> dict[str, np.ndarray]:
    """Per image name the raw plane-sweep depth against its first sources in `ranking`, cached in workspace/raw."""
    raw_dir = workspace / RAW_DEPTHS_DIR
    raw = {}
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
    return raw


def close_holes(depth: np.ndarray, conf: DenseConf) -> np.ndarray:
    """The depth map with its enclosed planar holes closed (aerialmd.mvs.depth_fill) as configured, on the stage's
    device."""
    window = window_pixels(max(depth.shape), conf.fill_window)
    return fill_enclosed_holes(depth, conf.fill_rounds, window, conf.fill_max_residual, conf.fill_quadrant_support,
                               resolve_device(conf.device))


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


def colmap_depths(model: pycolmap.Reconstruction, workspace: Path, conf: DenseConf, failures: dict[str, str],
                  timer: Timer) -> dict[str, np.ndarray]:
    """COLMAP PatchMatch stereo (CUDA) with geometric consistency; its geometric depth maps per image name."""
    options = pycolmap.PatchMatchOptions(max_image_size=conf.max_image_size, geom_consistency=True,
                                         window_radius=conf.window // 2)
    with timer.step("patch_match"):
        pycolmap.patch_match_stereo(str(workspace), options=options)
    out = {}
    for image in model.images.values():
        path = workspace / "stereo" / "depth_maps" / f"{image.name}.geometric.bin"
        if path.is_file():
            out[image.name] = read_colmap_array(path).astype(np.float32)
        else:
            failures[image.name] = f"{path}: no depth map written by patch_match_stereo"
    return out
