"""Per-scene reports and the data-root index: what a person opens to see at a glance whether a scene worked.

Per scene, written when the scene's stages have run (and remade by every run), `<data_root>/reports/<scene>/`:
    report.json                 status of each stage (or outdated: stage 4 made from an earlier stage 2), counts,
                                registration and depth figures, timings, peak memory, settings, package versions
    cameras-<sfm>.png           top-down map (ENU x/y, metres) of the aerial and ground cameras over the sparse points
    registration-<sfm>.png      correspondences and inliers per ground photo, coloured by registration status
    depths-<sfm>.png            a grid of images beside their metric depth maps
    view-<sfm>.html             the 3D view: cameras, sparse points and fused depth (aerialmd/stages/scene_view.py)
(`<sfm>` names a stage-4 output, e.g. `sfm_sift+nn-ratio`; a scene has one per feature/matcher configuration.)
`<data_root>/index.html` lists every scene that has a report: status, key figures, the figures and the 3D views
(report.json names them under `figures` and `views`). A scene gets a
report once it has a Google Earth Studio download or any output, so a scene that failed early is listed too.

Reports are read from the stages' outputs on disk, never from a run's memory, so they describe what is there. They
live outside `data/<scene>/`, which holds the stages' outputs only. A report records the fingerprints of the scene's
stage markers (`made_from`); the index shows a scene whose outputs changed after its report (a stage rerun by hand, a
deleted scene folder) as stale, with the command that remakes it.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import platform
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pycolmap
from matplotlib.figure import Figure

from aerialmd.atomic import atomic_dir, write_text_atomic
from aerialmd.formats.dense_model import depth_file_name, find_sfm_dirs
from aerialmd.formats.depth import read_depth_h5
from aerialmd.layout import (
    CAMERAS_FILE,
    DENSE_DIR,
    DENSE_REPORT,
    DEPTHS_DIR,
    FOOTAGE_DIR,
    IMAGES_DIR,
    INDEX_FILE,
    LOCALIZATION_DIR,
    LOCALIZED_MODEL,
    PEAK_MEMORY_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    REPORTS_DIR,
    SCENES_DIR,
    SPARSE_GE_DIR,
    TIMINGS_FILE,
    DataRoot,
    is_aerial,
)
from aerialmd.run.markers import (
    MADE_FROM_KEY,
    SETTINGS_KEY,
    cameras_fingerprint,
    changed_inputs,
    input_fingerprints,
    is_preprocessed,
)
from aerialmd.run.scenes import Shard, load_scene_list, run_per_scene, select_scenes
from aerialmd.stages.scene_view import write_scene_view

STAGE = "report"
PIPELINE_STAGES = ("preprocess_ge", "preprocess_megadepth", "localization", "dense")
VERSIONED_PACKAGES = ("numpy", "torch", "pycolmap", "opencv-python-headless", "h5py", "scipy")
GRID_IMAGES_PER_KIND = 3  # images of each kind (aerial, ground) in the depth grid
MAP_MAX_POINTS = 20000  # sparse points drawn in the camera map (evenly subsampled)
FIGURE_DPI = 100


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages that shape the outputs."""
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def median_or_none(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def registration_figures(document: dict) -> dict[str, Any]:
    """Counts, Sim(3) and per-photo match/inlier counts from stage 4a's registration.json."""
    photos = document.get("images", {})
    return {
        "counts": document.get("counts", {}),
        "sim3_scale": document.get("sim3_metric_from_sfm", {}).get("scale"),
        "sim3_inliers": document.get("sim3_metric_from_sfm", {}).get("inliers"),
        "aerial_model": {k: v for k, v in document.get("aerial_model", {}).items() if not isinstance(v, dict)},
        "localized_model": {k: v for k, v in document.get("localized_model", {}).items() if not isinstance(v, dict)},
        "missing_photos": document.get("missing_photos", []),
        "photos": {name: {k: photo.get(k) for k in ("status", "num_correspondences", "num_inliers",
                                                     "position_vs_prediction_m", "rotation_vs_prediction_deg")}
                   for name, photo in sorted(photos.items())},
    }


def dense_figures(document: dict, scene: str) -> dict[str, Any]:
    """Median coverage per image kind, MegaDepth agreement and failures from stage 4b's dense.json."""
    images = document.get("images", {})
    coverage = {kind: median_or_none([m["coverage"] for name, m in images.items() if is_aerial(name, scene) == aerial])
                for kind, aerial in (("aerial", True), ("ground", False))}
    return {"summary": document.get("summary", {}), "median_coverage": coverage,
            "backend": document.get("backend"), "failures": document.get("failures", {})}


def model_report(sfm_dir: Path, scene: str) -> dict[str, Any]:
    """What stage 4 left in one of its output folders."""
    registration = read_json(sfm_dir / REGISTRATION_FILE) or {}
    dense = read_json(sfm_dir / DENSE_DIR / DENSE_REPORT)
    return {
        "features": registration.get("features"), "matcher": registration.get("matcher"),
        "registration": registration_figures(registration),
        "dense": dense_figures(dense, scene) if dense is not None else None,
        "timings": {"localization": read_json(sfm_dir / TIMINGS_FILE),
                    "dense": dense.get("timings") if dense is not None else None},
        "peak_memory_mb": {"localization": read_json(sfm_dir / PEAK_MEMORY_FILE),
                           "dense": dense.get("peak_rss_mb") if dense is not None else None},
        "settings": {"localization": registration.get(SETTINGS_KEY),
                     "dense": dense.get(SETTINGS_KEY) if dense is not None else None},
    }


def stage_status(scene_dir: Path, processed_dirs: list[Path]) -> dict[str, bool]:
    """Whether each stage's output for the scene is there (stage 4: in at least one configuration)."""
    models = find_sfm_dirs(scene_dir)
    return {
        "preprocess_ge": is_preprocessed(scene_dir),
        "preprocess_megadepth": bool(processed_dirs) and all(any(d.glob("*.npz")) for d in processed_dirs),
        "localization": bool(models),
        "dense": any((m / DENSE_DIR / DENSE_REPORT).is_file() for m in models),
    }


def outdated_models(scene_dir: Path) -> list[str]:
    """The stage-4 outputs (sfm_* folders) made from an earlier stage-2 output than the scene's current one."""
    cameras = cameras_fingerprint(scene_dir)
    return [sfm_dir.name for sfm_dir in find_sfm_dirs(scene_dir)
            if changed_inputs((read_json(sfm_dir / REGISTRATION_FILE) or {}).get(MADE_FROM_KEY, {}), cameras)]


def overall_status(stages: dict[str, bool], outdated: list[str]) -> str:
    """'complete', 'incomplete: <first stage without output>', or 'outdated: ...' for stage-4 outputs made from an
    earlier stage 2."""
    missing = [name for name in PIPELINE_STAGES if not stages[name]]
    if missing:
        return f"incomplete: {missing[0]} not done"
    if outdated:
        return (f"outdated: {', '.join(outdated)} made from an earlier {CAMERAS_FILE} (redo stage 4 with "
                f"--overwrite)")
    return "complete"


def output_fingerprints(scene_dir: Path) -> dict[str, str]:
    """Fingerprints of the scene's stage markers (aerialmd.run.markers) by path in the scene folder: a report whose
    fingerprints are not the scene's now describes outputs that have changed since."""
    markers = [scene_dir / CAMERAS_FILE, *(sfm_dir / name for sfm_dir in find_sfm_dirs(scene_dir)
                                           for name in (REGISTRATION_FILE, f"{DENSE_DIR}/{DENSE_REPORT}"))]
    return input_fingerprints(*markers, root=scene_dir)


def scene_report(scene_dir: Path, processed_dirs: list[Path]) -> dict[str, Any]:
    """The report.json document of one scene."""
    scene = scene_dir.name
    stages = stage_status(scene_dir, processed_dirs)
    return {
        "scene": scene,
        "status": overall_status(stages, outdated_models(scene_dir)),
        "stages": stages,
        "counts": {"aerial_frames": len(list((scene_dir / FOOTAGE_DIR).glob("*.jpeg"))),
                   "ground_photos_preprocessed": sum(len(list(d.glob("*.npz"))) for d in processed_dirs)},
        "models": {d.name: model_report(d, scene) for d in find_sfm_dirs(scene_dir)},
        "versions": package_versions(),
        MADE_FROM_KEY: output_fingerprints(scene_dir),
    }


# ------------------------------------------------------------------------------------------------------------ figures


def camera_positions(model: pycolmap.Reconstruction, scene: str) -> dict[str, np.ndarray]:
    """Camera centres and viewing directions (world), split into aerial and ground: keys '<kind>_centres/_dirs'."""
    out: dict[str, list] = {f"{kind}_{what}": [] for kind in ("aerial", "ground") for what in ("centres", "dirs")}
    for image in sorted(model.images.values(), key=lambda i: i.name):
        if not image.has_pose:
            continue
        kind = "aerial" if is_aerial(image.name, scene) else "ground"
        out[f"{kind}_centres"].append(image.projection_center())
        out[f"{kind}_dirs"].append(image.cam_from_world().rotation.matrix()[2])  # the optical axis in world
    return {k: np.array(v).reshape(-1, 3) for k, v in out.items()}


def map_extent(points: np.ndarray, centres: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """x/y bounds holding every camera and the bulk (2nd-98th percentile) of the points, with a margin: far stray
    points would otherwise shrink the scene to a dot."""
    bulk = np.percentile(points[:, :2], [2, 98], axis=0) if len(points) else np.empty((0, 2))
    xy = np.vstack([centres[:, :2], bulk])
    low, high = xy.min(axis=0), xy.max(axis=0)
    pad = margin * np.maximum(high - low, 1.0)
    return low - pad, high + pad


def plot_camera_map(model: pycolmap.Reconstruction, scene: str, path: Path) -> None:
    """Top-down (x east, y north) map of the sparse points and the cameras with their viewing directions."""
    points = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    points = points[:: max(1, len(points) // MAP_MAX_POINTS)]
    cams = camera_positions(model, scene)
    figure = Figure(figsize=(7, 7), dpi=FIGURE_DPI)
    axes = figure.add_subplot()
    axes.scatter(points[:, 0], points[:, 1], s=1, c="0.6", label=f"sparse points ({len(model.points3D)})")
    for kind, colour in (("aerial", "tab:blue"), ("ground", "tab:red")):
        centres, dirs = cams[f"{kind}_centres"], cams[f"{kind}_dirs"]
        axes.scatter(centres[:, 0], centres[:, 1], s=16, c=colour, label=f"{kind} cameras ({len(centres)})")
        horizontal = dirs[:, :2] / np.maximum(np.linalg.norm(dirs[:, :2], axis=1, keepdims=True), 1e-9)
        axes.quiver(centres[:, 0], centres[:, 1], horizontal[:, 0], horizontal[:, 1], color=colour, width=0.003,
                    scale=30)
    low, high = map_extent(points, np.vstack([cams["aerial_centres"], cams["ground_centres"]]))
    axes.set_xlim(low[0], high[0])
    axes.set_ylim(low[1], high[1])
    axes.set_aspect("equal", adjustable="box")
    axes.set_xlabel("east (m)")
    axes.set_ylabel("north (m)")
    axes.set_title(f"scene {scene}: cameras seen from above")
    axes.legend(loc="upper right", fontsize="small")
    figure.savefig(path)


def plot_registration(photos: dict[str, dict], scene: str, path: Path) -> None:
    """Horizontal bars per ground photo: correspondences (light) and the matches confirming its pose (dark: its
    predicted pose's support, or its PnP inliers when that was not measured), coloured by status."""
    names = sorted(photos)
    colours = {"registered": "tab:green"}
    figure = Figure(figsize=(8, max(2.5, 0.25 * len(names) + 1.2)), dpi=FIGURE_DPI)
    axes = figure.add_subplot()
    rows = np.arange(len(names))
    matches = [photos[n].get("num_correspondences") or 0 for n in names]
    inliers = [photos[n].get("predicted_pose_support") or photos[n].get("num_inliers") or 0 for n in names]
    status_colours = [colours.get(photos[n].get("status"), "tab:red") for n in names]
    axes.barh(rows, matches, color="0.8", label="2D-3D correspondences")
    axes.barh(rows, inliers, color=status_colours, label="confirming matches (green registered, red rejected)")
    axes.set_yticks(rows, [n.split(".")[0][:24] for n in names], fontsize="x-small")
    axes.invert_yaxis()
    axes.set_xlabel("count")
    axes.set_title(f"scene {scene}: registration of {len(names)} ground photos")
    axes.legend(loc="lower right", fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path)


def grid_names(names: list[str], scene: str) -> list[str]:
    """Up to GRID_IMAGES_PER_KIND aerial and ground images, evenly spread over the sorted names."""
    chosen = []
    for aerial in (True, False):
        kind = sorted(n for n in names if is_aerial(n, scene) == aerial)
        if kind:
            picks = np.linspace(0, len(kind) - 1, min(GRID_IMAGES_PER_KIND, len(kind))).round().astype(int)
            chosen += [kind[i] for i in dict.fromkeys(picks.tolist())]
    return chosen


def plot_depth_grid(dense_dir: Path, scene: str, path: Path) -> None:
    """Rows of image | depth (metres, 0 = invalid shown white) for a few aerial frames and ground photos."""
    names = grid_names(sorted(p.name for p in (dense_dir / IMAGES_DIR).iterdir()), scene)
    figure = Figure(figsize=(9, 2.6 * max(1, len(names))), dpi=FIGURE_DPI)
    for row, name in enumerate(names):
        image = cv2.cvtColor(cv2.imread(str(dense_dir / IMAGES_DIR / name)), cv2.COLOR_BGR2RGB)
        depth = read_depth_h5(dense_dir / DEPTHS_DIR / depth_file_name(name))
        shown = np.ma.masked_equal(depth, 0)
        left = figure.add_subplot(len(names), 2, 2 * row + 1)
        left.imshow(image)
        left.set_title(name, fontsize="small")
        right = figure.add_subplot(len(names), 2, 2 * row + 2)
        drawn = right.imshow(shown, cmap="turbo")
        right.set_title(f"depth, {100 * (depth > 0).mean():.0f}% of pixels", fontsize="small")
        figure.colorbar(drawn, ax=right, label="m", fraction=0.04)
        for axes in (left, right):
            axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path)


def write_figures(scene_dir: Path, report: dict, out_dir: Path) -> list[str]:
    """The figures the scene's outputs allow, into out_dir; their file names."""
    scene = scene_dir.name
    written = []
    for sfm_name, model in report["models"].items():
        sfm_dir = scene_dir / LOCALIZATION_DIR / sfm_name
        if (sfm_dir / LOCALIZED_MODEL).is_dir():
            plot_camera_map(pycolmap.Reconstruction(str(sfm_dir / LOCALIZED_MODEL)), scene,
                            out_dir / f"cameras-{sfm_name}.png")
            written.append(f"cameras-{sfm_name}.png")
        if model["registration"]["photos"]:
            plot_registration(model["registration"]["photos"], scene, out_dir / f"registration-{sfm_name}.png")
            written.append(f"registration-{sfm_name}.png")
        if model["dense"] is not None:
            plot_depth_grid(sfm_dir / DENSE_DIR, scene, out_dir / f"depths-{sfm_name}.png")
            written.append(f"depths-{sfm_name}.png")
    if not report["models"] and (scene_dir / SPARSE_GE_DIR).is_dir():
        plot_camera_map(pycolmap.Reconstruction(str(scene_dir / SPARSE_GE_DIR)), scene, out_dir / "cameras-aerial.png")
        written.append("cameras-aerial.png")
    return written


def write_views(scene_dir: Path, report: dict, out_dir: Path) -> list[str]:
    """The 3D view of every registration, into out_dir; their file names."""
    written = []
    for sfm_name in report["models"]:
        sfm_dir = scene_dir / LOCALIZATION_DIR / sfm_name
        if (sfm_dir / LOCALIZED_MODEL).is_dir():
            write_scene_view(sfm_dir, scene_dir.name, out_dir / f"view-{sfm_name}.html")
            written.append(f"view-{sfm_name}.html")
    return written


def write_scene_report(scene_dir: Path, processed_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """report.json, the figures and the 3D views into out_dir (replaced as a whole); returns the report."""
    report = scene_report(scene_dir, processed_dirs)
    with atomic_dir(out_dir) as tmp:
        report["figures"] = write_figures(scene_dir, report, tmp)
        report["views"] = write_views(scene_dir, report, tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report


# -------------------------------------------------------------------------------------------------------------- index


def scene_summary_cells(report: dict) -> list[str]:
    """Key figures of a scene for the index table (first stage-4 configuration)."""
    model = next(iter(report["models"].values()), None)
    counts = model["registration"]["counts"] if model else {}
    dense = model["dense"] if model else None
    registered = counts.get("registered", 0)
    coverage = dense["median_coverage"] if dense else {}
    agreement = dense["summary"].get("megadepth_median_rel_diff") if dense else None
    return [
        str(report["counts"]["aerial_frames"]),
        f"{registered}/{report['counts']['ground_photos_preprocessed']}" if model else "-",
        "/".join("-" if coverage.get(k) is None else f"{coverage[k]:.2f}" for k in ("aerial", "ground")) if dense else "-",
        "-" if agreement is None else f"{100 * agreement:.2f}%",
    ]


def index_html(reports: Iterable[dict]) -> str:
    """The data root's index page: one row per scene with its status, key figures and figure thumbnails."""
    rows = []
    for report in reports:
        scene = html.escape(report["scene"])
        status = html.escape(report["status"])
        css = "ok" if report["status"] == "complete" else "incomplete"
        folder = f"{REPORTS_DIR}/{urllib.parse.quote(report['scene'])}"
        figures = "".join(
            f'<a href="{html.escape(link)}"><img src="{html.escape(link)}" alt="{html.escape(name)}"></a>'
            for name in report["figures"] for link in [f"{folder}/{urllib.parse.quote(name)}"])
        views = "<br>".join(f'<a class="view" href="{html.escape(folder)}/{html.escape(urllib.parse.quote(name))}">'
                            f'{html.escape(name.removeprefix("view-").removesuffix(".html"))}</a>'
                            for name in report.get("views", []))
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in scene_summary_cells(report))
        report_link = f"{REPORTS_DIR}/{urllib.parse.quote(report['scene'])}/{REPORT_FILE}"
        rows.append(f'<tr id="scene-{scene}"><td><a href="{html.escape(report_link)}">{scene}</a></td>'
                    f'<td class="{css}">{status}</td>{cells}<td>{views}</td><td class="figures">{figures}</td></tr>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>AerialMegaDepth scenes</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }}
td.ok {{ background: #d9f2d9; }} td.incomplete {{ background: #fde2c8; }}
td.figures img {{ height: 160px; margin-right: 0.3em; }}
</style></head><body>
<h1>AerialMegaDepth scenes ({len(rows)})</h1>
<table>
<tr><th>scene</th><th>status</th><th>aerial frames</th><th>ground photos registered</th>
<th>median depth coverage aerial/ground</th><th>MegaDepth vs MVS depth</th><th>3D view</th><th>figures</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def marked_if_stale(report: dict, data_root: Path) -> dict:
    """The report, its status replaced by a note when the scene's outputs have changed since it was written (a stage
    rerun on its own, a scene folder deleted)."""
    if report.get(MADE_FROM_KEY) == output_fingerprints(data_root / SCENES_DIR / report["scene"]):
        return report
    return {**report, "status": f"stale: the outputs changed since this report (make_report.py --scenes "
                                f"{report['scene']})"}


def write_index(data_root: Path) -> Path:
    """<data_root>/index.html over every scene with a report."""
    reports = [marked_if_stale(json.loads(p.read_text()), data_root)
               for p in sorted((data_root / REPORTS_DIR).glob(f"*/{REPORT_FILE}"))]
    path = data_root / INDEX_FILE
    write_text_atomic(path, index_html(reports))
    return path


def write_reports(data_root: Path | str, megadepth_processed: Path | str, scene_list: Path | str,
                  scenes: list[str] | None = None, shard: Shard | None = None) -> int:
    """The report of every selected scene with a download or an output, then the data root's index."""
    data_root, megadepth_processed = Path(data_root), Path(megadepth_processed)
    if not data_root.is_dir():
        raise FileNotFoundError(f"{data_root}: data root not found")
    scene_images = load_scene_list(scene_list)

    def process(scene: str) -> str | None:
        scene_dir = data_root / SCENES_DIR / scene
        if not scene_dir.is_dir() and not DataRoot(data_root).has_download(scene):
            return None
        processed = [megadepth_processed / scene / sub for sub in sorted(scene_images[scene])]
        out_dir = data_root / REPORTS_DIR / scene
        report = write_scene_report(scene_dir, processed, out_dir)
        return f"{report['status']}, {len(report['figures'])} figures in {out_dir}"

    run = run_per_scene(STAGE, select_scenes(scene_images, scenes, shard), process)
    index = write_index(data_root)
    print(f"{run.summary()}\n[{STAGE}] index of all scenes: {index}", flush=True)
    return run.exit_code()
