"""Stage 4b: dense metric depth for every image of the localized model (multi-view stereo), in the seed's layout.

Per scene, into `<root_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/` (next to stage 4a's output):
    localized_dense_metric/images/<name>              undistorted images (PINHOLE cameras)
    localized_dense_metric/depths/<name stem>.h5      dataset 'depth', float32, metres, same size as the image, 0 = invalid
    localized_dense_metric/sparse-txt/                the undistorted model (cameras, images, points3D) as COLMAP text
    localized_dense_metric/dense.json                 settings, per-image coverage / agreement / failures, timings and
                                                      peak memory per step
    dense_work/                                       resumable intermediate state (removed when the scene finishes)

`localized_dense_metric/` is written under a temporary name and renamed when complete; its `dense.json` records the
settings, and re-running with other settings is refused unless `--overwrite`. Raw per-image depth maps are cached in
`dense_work/raw/`, so a killed run resumes at the first image it had not finished.

Backends (aerialmd.mvs.backends): `colmap` (pycolmap's CUDA PatchMatch stereo, geometric depth maps) and `torch`
(the plane sweep of aerialmd.mvs.plane_sweep plus a multi-view geometric consistency filter; CPU or CUDA). `auto` picks colmap when pycolmap has CUDA, torch otherwise.
Either backend's depth maps then get their enclosed planar holes closed (aerialmd.mvs.depth_fill, `fill_*` settings),
and lose their depths on the sky and their flying pixels (aerialmd.mvs.depth_clean, `clean_sky`, `sky_*`, `flying_*`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pycolmap
import torch

from aerialmd.atomic import remove_path
from aerialmd.formats.dense_model import find_sfm_dirs, write_dense_model
from aerialmd.formats.depth import read_depth_exr
from aerialmd.layout import (
    DENSE_DIR,
    DENSE_REPORT,
    DENSE_WORK_DIR,
    FOOTAGE_DIR,
    IMAGES_DIR,
    LINKED_INPUTS_DIR,
    LOCALIZATION_DIR,
    LOCALIZED_MODEL,
    REGISTRATION_FILE,
    UNDISTORTED_DIR,
    WORK_SETTINGS_FILE,
)
from aerialmd.mvs.backends import close_holes, colmap_depths, resolve_backend, torch_depths
from aerialmd.mvs.depth_clean import clean_depth_map
from aerialmd.mvs.plane_sweep import SmoothingConf, coarse_to_fine_depth, plane_sweep_depth, resolve_device
from aerialmd.run.markers import SETTINGS_KEY, as_recorded, is_finished
from aerialmd.run.scenes import Shard, Timer, load_scene_list, run_per_scene, select_scenes

STAGE = "dense"


@dataclasses.dataclass(frozen=True)
class DenseConf:
    """Settings of the dense stage (recorded in dense.json; changing them needs --overwrite)."""

    backend: str = "auto"  # auto | colmap | torch
    max_image_size: int = 640  # long side of the undistorted images and depth maps
    num_sources: int = 8  # fewer leave parts of photos without two partners in frame (bench/bench_dense.py)
    num_depths: int = 128
    window: int = 7
    max_cost: float = 0.8  # 1 - NCC (after smoothing) above which a pixel gets no depth; ~1 = no photometric evidence
    # Semi-global smoothing of the cost volumes (aerialmd.mvs.plane_sweep.SmoothingConf), in 1 - NCC units: a step of
    # one plane between neighbouring pixels costs smoothing_p1, a larger jump smoothing_p2 (docs/mvs.md)
    smoothing_p1: float = SmoothingConf.p1
    smoothing_p2: float = SmoothingConf.p2
    horizontal_planes: bool = True  # also sweep planes of constant height (ground, roofs); doubles the cost
    # Also sweep vertical planes (facades) turned this far (degrees) from facing the camera, vertical_depths planes
    # each: facades seen obliquely at orbit baselines do not match in fronto-parallel windows (docs/mvs.md)
    vertical_plane_azimuths: tuple[float, ...] = (-45.0, 45.0)
    vertical_depths: int = 64
    coarse_to_fine_above: int = 400  # long side above which the sweep runs at half resolution, refined at full (4x less)
    # Rank a ground photo's stereo partners over its MegaDepth depth rather than its sparse points (torch backend;
    # aerialmd.mvs.view_selection.ranked_sources, docs/mvs.md)
    rank_by_megadepth: bool = True
    # A ground photo's MegaDepth depth (scale fitted per photo) counts as one confirming view in the consistency
    # filter (torch backend; plane_sweep.prior_agreement, docs/mvs.md)
    megadepth_vote: bool = True
    filter_neighbours: int = 12  # views checked by the consistency filter (torch backend)
    min_agree: int = 2  # of those, views whose depth must confirm a depth
    consistency_tol: float = 0.01  # relative depth tolerance of the consistency check
    consistency_reproj: float = 1.0 / 320.0  # its reprojection tolerance, fraction of the long side (2 px at 640 px)
    fill_rounds: int = 10  # rounds closing enclosed holes with local planes (aerialmd.mvs.depth_fill), both backends; 0 = off
    fill_window: float = 31.0 / 640.0  # their window side, fraction of the long side (31 px at 640 px)
    fill_max_residual: float = 0.02  # RMS of the window's plane fit in inverse depth, relative to the pixel's
    fill_quadrant_support: float = 0.05  # share of each quadrant of the window that must hold depths
    # Depth cleaning (aerialmd.mvs.depth_clean), both backends, after the hole closing:
    clean_sky: bool = True  # remove depths on the sky (smooth bright regions at the top without depth), grown by:
    sky_margin: float = 1.0 / 120.0  # fraction of the long side (3 px at 320 px, 4 at 480): the band the matching
    # window spreads over the sky and the strip the contrast window misses (wider where the sweep is coarse-to-fine)
    sky_window: int = 5  # pixels of the window whose standard deviation (largest of the channels) tells contrast
    sky_max_std: float = 8.0  # levels (0-255) under which a pixel has no contrast
    sky_smooth_std: float = 3.0  # levels under which at least half of a sky region lies (walls are rougher)
    sky_max_depth_share: float = 0.5  # a smooth bright region at the top with depth on more of it is a wall
    flying_min_neighbours: int = 1  # of the 8 neighbours, those within flying_tol a depth needs (0: no such step)
    flying_tol: float = 0.02  # relative depth tolerance of the flying-pixel step
    # Then the silhouette fringe, a foreground's depth spread past its silhouette by the matching window: depths
    # within silhouette_trim (fraction of the long side: 2 px at 480 and 640) of a depth jump of more than
    # silhouette_jump, on its near side, go; 0 = no such step (bench/bench_sweep.py --dense, docs/mvs.md)
    silhouette_trim: float = 1.0 / 320.0
    silhouette_jump: float = 0.2
    device: str = "auto"

    def depth_sweep(self, long_side: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """The plane sweep for an image of this long side: coarse-to-fine above coarse_to_fine_above, else full."""
        return coarse_to_fine_depth if long_side > self.coarse_to_fine_above else plane_sweep_depth

    def smoothing(self) -> SmoothingConf:
        """The sweep's and the refinement's semi-global smoothing."""
        return SmoothingConf(self.smoothing_p1, self.smoothing_p2)

    def without_cleaning(self) -> DenseConf:
        """These settings with depth cleaning off: benchmarks measure before and after it from one run."""
        return dataclasses.replace(self, clean_sky=False, flying_min_neighbours=0, silhouette_trim=0.0)

    def settings(self) -> dict:
        """What determines the outputs (the device does not), as they read back from JSON (tuples as lists)."""
        return as_recorded({k: v for k, v in dataclasses.asdict(self).items() if k != "device"})


def image_sources(scene_dir: Path, processed_dirs: list[Path]) -> list[Path]:
    """Folders holding the model's images: the GES frames and the preprocessed MegaDepth photos."""
    return [scene_dir / FOOTAGE_DIR, *processed_dirs]


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


def cleaned(depth: np.ndarray, image_path: Path, conf: DenseConf) -> np.ndarray:
    """The depth map without its sky, flying pixels and silhouette fringes as configured (aerialmd.mvs.depth_clean)."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    margin = round(conf.sky_margin * max(depth.shape)) if conf.clean_sky else None
    return clean_depth_map(rgb, depth, conf.sky_window, conf.sky_max_std, conf.sky_smooth_std,
                           conf.sky_max_depth_share, margin, conf.flying_tol, conf.flying_min_neighbours,
                           round(conf.silhouette_trim * max(depth.shape)), conf.silhouette_jump)


def megadepth_agreement(depth: np.ndarray, megadepth_depth: np.ndarray) -> float | None:
    """Median |MVS - MegaDepth| / MegaDepth over pixels where both are valid (the MegaDepth depth in metres at the
    depth map's size: metric_megadepth_depths); None without overlap."""
    both = (depth > 0) & (megadepth_depth > 0)
    if both.sum() < 100:
        return None
    return float(np.median(np.abs(depth[both] - megadepth_depth[both]) / megadepth_depth[both]))


def megadepth_depth_path(name: str, processed_dirs: list[Path]) -> Path | None:
    """The preprocessed MegaDepth depth (.exr, SfM units) of a ground photo, if there is one."""
    return next((d / f"{Path(name).stem}.exr" for d in processed_dirs if (d / f"{Path(name).stem}.exr").is_file()),
                None)


def metric_megadepth_depths(model: pycolmap.Reconstruction, processed_dirs: list[Path],
                            sim3_scale: float | None) -> dict[str, np.ndarray]:
    """Per ground photo of the (undistorted) model with a preprocessed MegaDepth depth: that depth in metres (times
    the registration's Sim(3) scale) at the photo's size (nearest), to rank its stereo partners by
    (view_selection.ranked_sources), to confirm its depths (plane_sweep.prior_agreement) and to report their
    agreement (image_metrics); none without a scale."""
    priors: dict[str, np.ndarray] = {}
    if sim3_scale is None:
        return priors
    for image in model.images.values():
        path = megadepth_depth_path(image.name, processed_dirs)
        if path is not None:
            camera = model.cameras[image.camera_id]
            priors[image.name] = cv2.resize(read_depth_exr(path), (camera.width, camera.height),
                                            interpolation=cv2.INTER_NEAREST) * sim3_scale
    return priors


def image_metrics(depths: dict[str, np.ndarray], model: pycolmap.Reconstruction,
                  megadepth_depths: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per image: coverage (valid fraction of pixels) and, for ground photos, agreement with their MegaDepth depth
    (metric_megadepth_depths)."""
    metrics = {}
    for image in model.images.values():
        depth = depths.get(image.name)
        entry: dict = {"coverage": float((depth > 0).mean()) if depth is not None else 0.0}
        if depth is not None and image.name in megadepth_depths:
            entry["megadepth_rel_diff"] = megadepth_agreement(depth, megadepth_depths[image.name])
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
    workspace = sfm_dir / DENSE_WORK_DIR
    settings_file = workspace / WORK_SETTINGS_FILE
    if workspace.exists() and (overwrite or not settings_file.is_file()
                               or json.loads(settings_file.read_text()) != conf.settings()):
        remove_path(workspace)  # intermediate state of other settings is not reused
    workspace.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(conf.settings()))
    timer = Timer()
    localized = pycolmap.Reconstruction(str(sfm_dir / LOCALIZED_MODEL))
    with timer.step("undistortion"):
        link_images(localized, image_sources(scene_dir, processed_dirs), workspace / LINKED_INPUTS_DIR)
        model = undistort(sfm_dir / LOCALIZED_MODEL, workspace / LINKED_INPUTS_DIR, workspace / UNDISTORTED_DIR,
                          conf.max_image_size)
    failures: dict[str, str] = {}
    registration = json.loads((sfm_dir / REGISTRATION_FILE).read_text())
    scale = registration.get("sim3_metric_from_sfm", {}).get("scale")
    megadepth_depths = metric_megadepth_depths(model, processed_dirs, scale)
    if backend == "colmap":
        depths = colmap_depths(model, workspace / UNDISTORTED_DIR, conf, failures, timer)
    else:
        depths = torch_depths(model, workspace / UNDISTORTED_DIR, conf, failures, timer, megadepth_depths)
    with timer.step("fill"):
        depths = {name: close_holes(depth, conf) for name, depth in depths.items()}
    with timer.step("cleaning"):
        depths = {name: cleaned(depth, workspace / UNDISTORTED_DIR / IMAGES_DIR / name, conf)
                  for name, depth in depths.items()}
    metrics = image_metrics(depths, model, megadepth_depths)
    summary = summarize(metrics, failures)
    document = {SETTINGS_KEY: conf.settings(), "backend": backend, "device": str(resolve_device(conf.device)),
                "summary": summary, "images": metrics, "failures": failures, "timings": timer.seconds,
                "peak_rss_mb": timer.peak_rss_mb}
    images = {image.name: workspace / UNDISTORTED_DIR / IMAGES_DIR / image.name for image in model.images.values()}
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
                raise FileNotFoundError(f"{root_dir / scene / LOCALIZATION_DIR}: no localized model (run do_colmap_localization)")
            return None
        processed = [megadepth_processed / scene / sub for sub in sorted(scene_images[scene])]
        messages = [dense_scene(d, root_dir / scene, processed, conf, overwrite) for d in sfm_dirs]
        done = [f"{d.name}: {m}" for d, m in zip(sfm_dirs, messages) if m is not None]
        return "; ".join(done) if done else "already done (use --overwrite to redo)"

    report = run_per_scene(STAGE, select_scenes(scene_images, scenes, shard), process)
    print(report.summary(), flush=True)
    return report.exit_code()
