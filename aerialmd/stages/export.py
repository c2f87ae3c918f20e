"""Stage 5 export: per image of a pair file, the training files DUSt3R/MASt3R's AerialMegaDepth loader reads.

Input: each scene's dense model (aerialmd.formats.dense_model: `<megadepth_aerial_dir>/<scene>/sfm_output_localization/
sfm_*/localized_dense_metric/`) and a pair file (format: aerialmd.formats.pair_file).

Output, per image `<name>` of the pair file (names kept whole: `9000_000.jpeg` -> `9000_000.jpeg.jpg`):
    <output_dir>/<scene>/<name>.jpg   the photo: the source bytes when it is a JPEG without EXIF, else re-encoded
    <output_dir>/<scene>/<name>.exr   depth, one float32 channel `Y`, metres, 0 = invalid (and beyond --max_depth)
    <output_dir>/<scene>/<name>.npz   `intrinsics` 3x3 (OpenCV pixel convention), `cam2world` 4x4 (metres, ENU)
    <output_dir>/<scene>/settings.json   the settings the scene's files were made with, and a fingerprint of the dense
                                         model's dense.json (aerialmd.run.markers)
That is the `dust3r` format, always written. Formats `megadepth_scene_info` (a <name>.h5 depth per image, and
<output_dir>/scene_info/<scene>.npz) and `covisibility` (<output_dir>/covisibility/<scene>.npz) add the files other
trainers read: aerialmd/stages/export_formats.py.
Each file is written atomically and the three are removed together if one fails; finished images are skipped unless
overwrite. A scene whose dense model was redone since its files were exported is refused without overwrite (its old
files would otherwise be kept next to new ones). Names of the pair file without data (not in the dense model, missing or
unreadable files) are listed at the end; a scene fails when its dense model is missing or unreadable or none of its
images could be exported.

Pair file: the published `aerial_megadepth_{train,val}.npz` or make_pairs' output, in the format of aerialmd.formats.pair_file
(PairFile, load_pair_file and save_pair_file are re-exported here for existing callers).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import simplejpeg
from tqdm import tqdm

from aerialmd.atomic import atomic_file, remove_path, remove_stale_temporaries
from aerialmd.formats.dense_model import DenseModel, DenseView, find_dense_dir, read_dense_model
from aerialmd.formats.depth import read_depth_h5, write_depth_exr, write_depth_h5
from aerialmd.formats.pair_file import PairFile, load_pair_file, save_pair_file
from aerialmd.layout import DENSE_REPORT, ExportRoot
from aerialmd.run.markers import check_folder_settings, input_fingerprints, record_folder_settings
from aerialmd.run.scenes import Shard, run_per_scene, select_scenes
from aerialmd.stages.export_formats import FORMATS, SCENE_INFO, depth_path, scene_files, write_scene_formats
from aerialmd.stages.preprocess_megadepth import is_done, output_paths, read_photo, write_camera_npz, write_jpeg

__all__ = ["DEFAULT_MAX_DEPTH", "ExportStats", "ExportTask", "PairFile", "SceneFailed", "clean_depth",
           "export_aerialmegadepth", "export_image", "export_scene", "load_pair_file", "save_pair_file", "write_photo"]

STAGE = "export_aerialmegadepth"
DEFAULT_MAX_DEPTH = 2000.0  # metres; farther depths (sky leaks, far background) become invalid, as in the original
JPEG_SUFFIXES = (".jpg", ".jpeg")


# ----------------------------------------------------------------------------------------------------------------------
# One image


@dataclasses.dataclass(frozen=True)
class ExportTask:
    """Everything a worker needs for one image (picklable for a process pool): its dense-model view (name, size,
    OpenCV intrinsics, cam2world), its source files, the output folder and the depth cut-off."""

    view: DenseView
    image_path: Path
    depth_path: Path
    out_dir: Path
    max_depth: float
    depth_h5: bool = False  # also the depth as MegaDepth's HDF5 (format megadepth_scene_info)

    @property
    def name(self) -> str:
        """The image's name in the pair file and dense model."""
        return self.view.name


def clean_depth(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth with non-finite, negative and farther-than-max_depth values set to 0 (invalid)."""
    valid = np.isfinite(depth) & (depth > 0) & (depth <= max_depth)
    return np.where(valid, depth, 0).astype(np.float32)


def has_exif(data: bytes) -> bool:
    """Whether a JPEG carries an EXIF block (which may hold an orientation that readers such as cv2.imread apply,
    turning the photo against its depth map)."""
    return b"Exif\x00\x00" in data[:65536]


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG header, or None when the bytes are not a JPEG."""
    try:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
    except ValueError:
        return None
    return width, height


def check_size(source: Path, actual: tuple[int, int], expected: tuple[int, int]) -> None:
    """ValueError naming the photo when its (width, height) is not the camera's and depth's."""
    if tuple(actual) != tuple(expected):
        raise ValueError(f"{source}: image is {actual[0]}x{actual[1]}, camera and depth are {expected[0]}x{expected[1]}")


def write_photo(source: Path, target: Path, size: tuple[int, int]) -> None:
    """The photo as JPEG at `target`: the source bytes when it is an EXIF-free JPEG (no re-encoding loss, no decoding),
    else decoded in its stored pixel layout and re-encoded. Raises ValueError when its size is not `size` (width,
    height), FileNotFoundError when it is missing."""
    if source.suffix.lower() in JPEG_SUFFIXES and source.is_file():
        data = source.read_bytes()
        header_size = jpeg_size(data)
        if header_size is not None and not has_exif(data):
            check_size(source, header_size, size)
            with atomic_file(target) as tmp:
                tmp.write_bytes(data)
            return
    image = read_photo(source)
    check_size(source, (image.shape[1], image.shape[0]), size)
    write_jpeg(target, image)


def export_image(task: ExportTask) -> None:
    """Write the three outputs of one image; none of them is left when one fails."""
    view = task.view
    depth = read_depth_h5(task.depth_path)
    if depth.shape != (view.height, view.width):
        raise ValueError(f"{task.depth_path}: depth is {depth.shape[1]}x{depth.shape[0]}, "
                         f"camera is {view.width}x{view.height}")
    jpg_path, exr_path, npz_path = paths = output_paths(task.out_dir, view.name)
    h5_path = depth_path(task.out_dir, view.name)
    paths.append(h5_path)
    try:
        write_photo(task.image_path, jpg_path, (view.width, view.height))
        depth = clean_depth(depth, task.max_depth)
        write_depth_exr(exr_path, depth)
        if task.depth_h5:
            with atomic_file(h5_path) as tmp:
                write_depth_h5(tmp, depth)
        write_camera_npz(npz_path, view.K, view.cam2world)
    except BaseException:
        for path in paths:
            remove_path(path)
        raise


# ----------------------------------------------------------------------------------------------------------------------
# Scenes


@dataclasses.dataclass
class ExportStats:
    """Outcome of a scene: images written, skipped as already done, and the names without outputs with the reason."""

    written: int = 0
    skipped: int = 0
    missing: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return f"{self.written} written, {self.skipped} skipped, {len(self.missing)} without data"


class SceneFailed(Exception):
    """A scene without a usable dense model, or none of whose requested images could be exported."""


def export_tasks(model: DenseModel, names: Iterable[str], out_dir: Path, max_depth: float,
                 stats: ExportStats, depth_h5: bool) -> list[ExportTask]:
    """Tasks of the names present in the dense model; absent names go to stats.missing."""
    tasks = []
    for name in names:
        view = model.views.get(name)
        if view is None:
            stats.missing.append((name, "not in the dense model"))
            continue
        tasks.append(ExportTask(view, model.image_path(name), model.depth_path(name), out_dir, max_depth, depth_h5))
    return tasks


def run_tasks(tasks: Sequence[ExportTask], pool: Executor | None, stats: ExportStats, desc: str) -> None:
    """Export the tasks in the pool (in this process when None); a failed image goes to stats.missing."""

    def outcomes() -> Iterator[tuple[ExportTask, str | None]]:
        if pool is None:
            for task in tasks:
                yield task, _call(task)
        else:
            futures: list[tuple[ExportTask, Future]] = [(task, pool.submit(_call, task)) for task in tasks]
            for task, future in futures:
                yield task, future.result()

    for task, error in tqdm(outcomes(), total=len(tasks), desc=desc, leave=False):
        if error is None:
            stats.written += 1
        else:
            stats.missing.append((task.name, error))


def _call(task: ExportTask) -> str | None:
    """export_image, returning the error message instead of raising (keeps the pool's results picklable)."""
    try:
        export_image(task)
    except Exception as exc:  # one bad image must never stop the scene; the message names the file
        return f"{type(exc).__name__}: {exc}"
    return None


def dense_fingerprint(scene_dir: Path, sfm_name: str | None) -> dict[str, str]:
    """The fingerprint of the scene's dense.json (aerialmd.run.markers.input_fingerprints); empty when the scene has no
    dense model (the export then fails on it, or has nothing left to do) or a published one (no dense.json)."""
    try:
        return input_fingerprints(find_dense_dir(scene_dir, sfm_name) / DENSE_REPORT)
    except (FileNotFoundError, ValueError):
        return {}


def image_done(out_dir: Path, name: str, formats: Sequence[str]) -> bool:
    """Whether every per-image file of `formats` exists for image `name`."""
    return is_done(out_dir, name) and (SCENE_INFO not in formats or depth_path(out_dir, name).is_file())


def export_scene(scene_dir: Path, names: Sequence[str], export: ExportRoot, max_depth: float = DEFAULT_MAX_DEPTH,
                 pool: Executor | None = None, overwrite: bool = False, sfm_name: str | None = None,
                 formats: Sequence[str] = ("dust3r",), pairs: Sequence[tuple[str, str, float]] = ()) -> ExportStats:
    """Export the named images of one scene (finished ones skipped unless overwrite), then the scene-level files of
    `formats` (aerialmd.stages.export_formats) over the exported images and the `pairs` (names and score) between them.

    Raises FileNotFoundError/ValueError when the dense model is needed and missing or unreadable, and ValueError when
    the scene's finished files were made with other settings (without overwrite)."""
    names, scene, out_dir = list(dict.fromkeys(names)), scene_dir.name, export.scene(scene_dir.name)
    settings = {"max_depth": max_depth, "sfm_name": sfm_name}
    inputs = dense_fingerprint(scene_dir, sfm_name)
    check_folder_settings(out_dir, settings, overwrite, inputs)
    pending = [name for name in names if overwrite or not image_done(out_dir, name, formats)]
    stats = ExportStats(skipped=len(names) - len(pending))
    files = scene_files(export, scene, formats)
    if not pending and all(path.is_file() for path in files):
        return stats
    remove_stale_temporaries(out_dir)  # of a run killed while writing its files
    model = read_dense_model(find_dense_dir(scene_dir, sfm_name))
    record_folder_settings(out_dir, settings, inputs)
    tasks = export_tasks(model, pending, out_dir, max_depth, stats, SCENE_INFO in formats)
    run_tasks(tasks, pool, stats, scene)
    failed = {name for name, _ in stats.missing}
    exported = [name for name in names if name not in failed]
    if exported and files:
        index = {name: k for k, name in enumerate(exported)}
        kept = [(index[a], index[b], score) for a, b, score in pairs if a in index and b in index]
        write_scene_formats(export, scene, model, exported,
                            [clean_depth(model.read_depth(name), max_depth) for name in exported],
                            np.array([(i, j) for i, j, _ in kept], np.int64).reshape(-1, 2),
                            np.array([score for _, _, score in kept], np.float64), formats)
    return stats


def named_pairs(pair_file: PairFile) -> dict[str, list[tuple[str, str, float]]]:
    """Scene id -> its pairs as (image name, image name, score); pairs naming a None image are left out."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for scene_index, i, j, score in zip(pair_file.scene_id, pair_file.im1_id, pair_file.im2_id, pair_file.score):
        a, b = pair_file.images[int(i)], pair_file.images[int(j)]
        if a is not None and b is not None:
            out.setdefault(pair_file.scenes[int(scene_index)], []).append((a, b, float(score)))
    return out


def make_pool(workers: int) -> Executor | None:
    """A process pool of `workers` (forked: tasks are small, workers start fast), or None to work in this process."""
    if workers <= 1:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def report_missing(missing: dict[str, list[tuple[str, str]]], scenes_without_data: dict[str, tuple[int, str]],
                   none_entries: int) -> None:
    """Print, after the run, the names of the pair file that have no outputs, with the reason (one line for a scene
    without a usable dense model)."""
    total = sum(len(v) for v in missing.values()) + sum(n for n, _ in scenes_without_data.values())
    if none_entries:
        print(f"[{STAGE}] {none_entries} entries of 'images' are None (no data in the pair file), skipped")
    if not total:
        return
    print(f"[{STAGE}] {total} images named in the pair file have no data:")
    for scene, (count, reason) in sorted(scenes_without_data.items()):
        print(f"  {scene}: all {count} images: {reason}")
    for scene, entries in sorted(missing.items()):
        for name, reason in entries:
            print(f"  {scene}/{name}: {reason}")


def export_aerialmegadepth(megadepth_aerial_dir: Path | str, pairs_path: Path | str, output_dir: Path | str,
                           scenes: Sequence[str] | None = None, max_depth: float = DEFAULT_MAX_DEPTH,
                           workers: int = os.cpu_count() or 1, overwrite: bool = False, shard: Shard | None = None,
                           sfm_name: str | None = None, formats: Sequence[str] = ("dust3r",)) -> int:
    """Export every image named in the pair file, for the selected scenes, in `formats` (FORMATS; dust3r's files are
    always written); returns the process exit code.

    Setup problems (pair file, unknown scene ids, input folder) raise; failed scenes give exit code 1; names without
    data are listed at the end and do not fail a scene that exported others."""
    root, export = Path(megadepth_aerial_dir), ExportRoot(Path(output_dir))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; known: {', '.join(FORMATS)}")
    pair_file = load_pair_file(pairs_path)
    pairs_by_scene = named_pairs(pair_file)
    by_scene = {scene: names for scene, names in pair_file.images_by_scene().items() if names}
    selected = select_scenes(by_scene, scenes, shard)
    print(f"[{STAGE}] {len(pair_file.score)} pairs, {sum(len(by_scene[s]) for s in selected)} images "
          f"in {len(selected)} scenes", flush=True)
    missing: dict[str, list[tuple[str, str]]] = {}
    scenes_without_data: dict[str, tuple[int, str]] = {}
    pool = make_pool(workers)

    def process(scene: str) -> str:
        names = by_scene[scene]
        try:
            stats = export_scene(root / scene, names, export, max_depth, pool, overwrite, sfm_name, formats,
                                 pairs_by_scene.get(scene, []))
        except (FileNotFoundError, ValueError) as exc:
            scenes_without_data[scene] = (len(names), str(exc))
            raise SceneFailed(str(exc)) from exc
        if stats.missing:
            missing[scene] = stats.missing
        if stats.written + stats.skipped == 0:
            raise SceneFailed(f"no image exported ({stats.summary()})")
        return stats.summary()

    try:
        report = run_per_scene(STAGE, selected, process)
    finally:
        if pool is not None:
            pool.shutdown()
    report_missing(missing, scenes_without_data, sum(name is None for name in pair_file.images))
    print(report.summary(), flush=True)
    return report.exit_code()
