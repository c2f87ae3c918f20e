"""MegaDepth preprocessing: undistorted intrinsics, poses and downscaled image/depth pairs per image.

Input layout (`md_root` is the MegaDepth download folder):
    <md_root>/MegaDepth_v1_SfM/<scene>/sparse/manhattan/<subscene>/{cameras,images,points3D}.txt   SIMPLE_RADIAL cameras
    <md_root>/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense<subscene>/imgs/<name>               undistorted photo
    <md_root>/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense<subscene>/depths/<name stem>.h5     depth, SfM units, 0 = invalid

Output, per image `<name>` (file names keep the source name, e.g. `foo.jpg` -> `foo.jpg.jpg`):
    <output_dir>/<scene>/<subscene>/<name>.jpg   photo, downscaled to cover 800x600 (600x800 for portraits)
    <output_dir>/<scene>/<subscene>/<name>.exr   depth at the same size, SfM units, 0 = invalid
    <output_dir>/<scene>/<subscene>/<name>.npz   `intrinsics` (3x3, OpenCV pixel convention), `cam2world` (4x4, SfM frame)

Failures: a problem with one image (missing or unreadable photo or depth, size mismatch, image absent from the sparse
model) is reported on one line and counted; the other images go on. A scene fails when its sparse model or dense folder
is missing or unreadable, or when none of its requested images ends up with outputs (all failed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pycolmap
from tqdm import tqdm

from aerialmd.atomic import atomic_file, remove_path, remove_stale_temporaries
from aerialmd.formats.depth import read_depth_h5, write_depth_exr
from aerialmd.geometry.camera import (
    cam2world_from_cam_from_world,
    colmap_to_opencv_intrinsics,
    intrinsics_matrix,
    rescale_intrinsics,
)
from aerialmd.layout import (
    MEGADEPTH_DEPTHS_DIR,
    MEGADEPTH_IMAGES_DIR,
    MEGADEPTH_SFM_DIR,
    megadepth_dense_dir,
    megadepth_sparse_dir,
)
from aerialmd.run.scenes import Shard, load_scene_list, run_per_scene, select_scenes

STAGE = "preprocess_megadepth"
COVER_SIZE = (800, 600)  # (width, height) a landscape output must still cover; swapped for portraits
JPEG_QUALITY = 95
OUTPUT_SUFFIXES = (".jpg", ".exr", ".npz")


@dataclasses.dataclass
class SceneStats:
    """Outcome of one (scene, subscene): images written, skipped as already done, and one line per failure."""

    written: int = 0
    skipped: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return f"{self.written} written, {self.skipped} skipped, {len(self.failed)} failed"


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What one worker needs to process an image: its name, distorted camera and pose from the sparse model."""

    name: str
    camera: pycolmap.Camera
    cam2world: np.ndarray


def resolve_megadepth_root(megadepth_dir: Path | str) -> Path:
    """The MegaDepth root, given either the root itself or its `MegaDepth_v1_SfM` folder (as the original README does)."""
    path = Path(megadepth_dir)
    root = path.parent if path.name == MEGADEPTH_SFM_DIR else path
    if not (root / MEGADEPTH_SFM_DIR).is_dir():
        raise FileNotFoundError(f"{path}: not a MegaDepth folder (no {MEGADEPTH_SFM_DIR} in {root})")
    return root


def sparse_model_dir(root: Path, scene: str, subscene: str) -> Path:
    """Folder of the COLMAP text model of a subscene."""
    return megadepth_sparse_dir(root, scene, subscene)


def dense_dir(root: Path, scene: str, subscene: str) -> Path:
    """Folder holding `imgs/` and `depths/` of a subscene."""
    return megadepth_dense_dir(root, scene, subscene)


def output_paths(out_dir: Path, name: str) -> list[Path]:
    """The three output files of image `name`: photo, depth, camera."""
    return [out_dir / f"{name}{suffix}" for suffix in OUTPUT_SUFFIXES]


def undistorted_intrinsics(camera: pycolmap.Camera, image_size: tuple[int, int]) -> np.ndarray:
    """Pinhole K (3x3, OpenCV pixel convention) of the undistorted image of size `image_size` = (width, height).

    MegaDepth's dense photos were undistorted from SIMPLE_RADIAL cameras; the original pipeline recovers their
    intrinsics with `cv2.getOptimalNewCameraMatrix(K_pre, (k1, 0, 0, 0), (W_cam, H_cam), alpha=0,
    newImgSize=(W_dense, H_dense), centerPrincipalPoint=True)`. It built K_pre from COLMAP's principal point, which is
    half a pixel off in OpenCV's convention. Here K_pre is converted to the OpenCV convention first, so the result is
    consistently OpenCV: focal lengths scaled so the undistorted view has no invalid border, principal point exactly at
    ((W - 1) / 2, (H - 1) / 2). With k1 = 0 and equal sizes the camera's own (OpenCV-convention) K comes back unchanged.
    """
    if camera.model != pycolmap.CameraModelId.SIMPLE_RADIAL:
        raise ValueError(f"camera {camera.camera_id}: expected a SIMPLE_RADIAL camera, got {camera.model.name}")
    f, cx, cy, k1 = camera.params
    K_pre = colmap_to_opencv_intrinsics(intrinsics_matrix(f, f, cx, cy))
    distortion = np.array([k1, 0.0, 0.0, 0.0])
    K, _ = cv2.getOptimalNewCameraMatrix(
        K_pre, distortion, (camera.width, camera.height), 0, tuple(image_size), centerPrincipalPoint=True
    )
    return K


def output_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) after the smallest downscale that still covers 800x600 (600x800 for portraits); never upscales."""
    cover_w, cover_h = COVER_SIZE if width >= height else COVER_SIZE[::-1]
    scale = min(1.0, max(cover_w / width, cover_h / height))
    return round(width * scale), round(height * scale)


def downscale(image: np.ndarray, depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize photo (area averaging), depth (nearest, so depths never blend across edges) and intrinsics alike."""
    height, width = depth.shape
    new_w, new_h = output_size(width, height)
    if (new_w, new_h) == (width, height):
        return image, depth, K
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, depth, rescale_intrinsics(K, new_w / width, new_h / height)


def read_photo(path: Path) -> np.ndarray:
    """Decode a photo as BGR uint8 with its stored pixel layout (EXIF orientation ignored, as COLMAP saw it)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image


def write_jpeg(path: Path, image_bgr: np.ndarray) -> None:
    """Write a colour JPEG atomically."""
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"{path}: JPEG encoding failed")
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.tobytes())


def write_camera_npz(path: Path, intrinsics: np.ndarray, cam2world: np.ndarray) -> None:
    """Write `intrinsics` and `cam2world` to an npz atomically (through a file object: np.savez renames bare paths)."""
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        np.savez(f, intrinsics=intrinsics.astype(np.float64), cam2world=cam2world.astype(np.float64))


def scene_info_cam2world(path: Path) -> np.ndarray:
    """The camera-to-world poses (N x 4 x 4, SfM units) of the posed images of a MegaDepth scene-info file in the
    LoFTR format (a pickled dict whose 'poses' holds world-to-camera 4x4 matrices, None for images without one)."""
    try:
        info = np.load(path, allow_pickle=True)
        poses = [np.asarray(p, np.float64) for p in info["poses"] if p is not None]
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{path}: not a MegaDepth scene-info file with 'poses' ({exc})") from exc
    return np.linalg.inv(np.stack(poses)) if poses else np.zeros((0, 4, 4))


def process_image(task: ImageTask, dense: Path, out_dir: Path) -> None:
    """Undistorted intrinsics, downscale and write the three outputs of one image; none of them is left on failure."""
    image_path = dense / MEGADEPTH_IMAGES_DIR / task.name
    depth_path = dense / MEGADEPTH_DEPTHS_DIR / f"{Path(task.name).stem}.h5"
    image = read_photo(image_path)
    depth = read_depth_h5(depth_path)
    if image.shape[:2] != depth.shape:
        raise ValueError(
            f"{image_path}: image is {image.shape[1]}x{image.shape[0]} "
            f"but depth {depth_path.name} is {depth.shape[1]}x{depth.shape[0]}"
        )
    K = undistorted_intrinsics(task.camera, (image.shape[1], image.shape[0]))
    image, depth, K = downscale(image, depth, K)
    jpg_path, exr_path, npz_path = paths = output_paths(out_dir, task.name)
    try:
        write_jpeg(jpg_path, image)
        write_depth_exr(exr_path, depth)
        write_camera_npz(npz_path, K, task.cam2world)
    except BaseException:
        for path in paths:
            remove_path(path)
        raise


def is_done(out_dir: Path, name: str) -> bool:
    """Whether all three outputs of image `name` exist."""
    return all(path.is_file() for path in output_paths(out_dir, name))


def outputs_fingerprint(processed_dirs: dict[str, Path], subscene_images: dict[str, list[str]]) -> dict[str, str]:
    """What later stages record as made from stage 3 (like aerialmd.run.markers.input_fingerprints), per subscene: a hash
    of which requested photos have all their outputs and of their cameras, so that photos preprocessed since (a stage 3
    interrupted or sharded before) or redone with other poses or intrinsics are noticed. The arrays are hashed, not
    the npz bytes, which hold the time they were written."""
    out = {}
    for subscene, names in sorted(subscene_images.items()):
        digest = hashlib.sha256()
        for name in sorted(names):
            if is_done(processed_dirs[subscene], name):
                _, _, camera_file = output_paths(processed_dirs[subscene], name)
                with np.load(camera_file) as camera:
                    arrays = [np.ascontiguousarray(camera[key], np.float64) for key in ("intrinsics", "cam2world")]
                digest.update(name.encode() + b"\0" + b"".join(a.tobytes() for a in arrays))
        out[f"preprocess_megadepth output of subscene {subscene}"] = digest.hexdigest()[:16]
    return out


def read_sparse_model(model_dir: Path) -> pycolmap.Reconstruction:
    """Read a COLMAP model; a missing or unreadable model is an error naming the folder."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: sparse model not found")
    try:
        return pycolmap.Reconstruction(model_dir)
    except ValueError as exc:
        raise ValueError(f"{model_dir}: unreadable sparse model ({exc})") from exc


def image_task(model: pycolmap.Reconstruction, name: str) -> ImageTask:
    """Camera and pose of image `name` from the sparse model."""
    image = model.find_image_with_name(name)
    if image is None or not image.has_pose:
        raise ValueError(f"{name}: not a registered image of the sparse model")
    return ImageTask(name, image.camera, cam2world_from_cam_from_world(image.cam_from_world()))


def preprocess_megadepth_scene(
    megadepth_dir: Path | str,
    scene: str,
    subscene: str,
    image_names: Iterable[str],
    output_dir: Path | str,
    workers: int,
    overwrite: bool,
) -> SceneStats:
    """Preprocess the listed images of one subscene in a thread pool; finished images are skipped unless overwrite.

    Raises FileNotFoundError/ValueError when the sparse model or dense folder is missing or unreadable (checked only if
    some image is still to do). Per-image problems are printed and collected in the returned stats.
    """
    root = resolve_megadepth_root(megadepth_dir)
    out_dir = Path(output_dir) / scene / subscene
    names = list(dict.fromkeys(image_names))
    pending = [name for name in names if overwrite or not is_done(out_dir, name)]
    stats = SceneStats(skipped=len(names) - len(pending))
    if not pending:
        return stats
    remove_stale_temporaries(out_dir)  # of a run killed while writing its files
    dense = dense_dir(root, scene, subscene)
    if not dense.is_dir():
        raise FileNotFoundError(f"{dense}: dense folder not found")
    model = read_sparse_model(sparse_model_dir(root, scene, subscene))

    def fail(message: str) -> None:
        stats.failed.append(message)
        tqdm.write(f"[{STAGE}] {scene}/{subscene} failed: {message}")

    tasks = []
    for name in pending:
        try:
            tasks.append(image_task(model, name))
        except ValueError as exc:
            fail(str(exc))
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(tasks), desc=f"{scene}/{subscene}") as bar:
        futures = {pool.submit(process_image, task, dense, out_dir): task.name for task in tasks}
        for future in as_completed(futures):
            try:
                future.result()
                stats.written += 1
            except Exception as exc:  # one bad image must never stop the scene; the message names the file
                fail(f"{futures[future]}: {exc}")
            bar.update()
    return stats


class SceneFailed(Exception):
    """A scene with a subscene whose model or dense folder is missing/unreadable, or none of whose images has outputs."""


def preprocess_scene_subscenes(
    root: Path, scene: str, subscenes: dict[str, list[str]], output_dir: Path | str, workers: int, overwrite: bool
) -> str:
    """Preprocess every subscene of a scene (a failed one does not stop the others); returns the report message.

    Raises SceneFailed, with the per-subscene messages, if any subscene failed.
    """
    failed, messages = False, []
    for subscene, names in sorted(subscenes.items()):
        try:
            stats = preprocess_megadepth_scene(root, scene, subscene, names, output_dir, workers, overwrite)
        except (FileNotFoundError, ValueError) as exc:
            failed = True
            messages.append(f"subscene {subscene}: {exc}")
            continue
        failed |= bool(names) and stats.written + stats.skipped == 0
        messages.append(f"subscene {subscene}: {stats.summary()}")
    message = "; ".join(messages)
    if failed:
        raise SceneFailed(message)
    return message


def preprocess_megadepth(
    megadepth_dir: Path | str,
    image_list: Path | str,
    output_dir: Path | str,
    scenes: Iterable[str] | None = None,
    workers: int = os.cpu_count() or 1,
    overwrite: bool = False,
    shard: Shard | None = None,
) -> int:
    """Preprocess the selected scenes of a scene list (all when `scenes` is None); returns the process exit code.

    Setup problems (scene list, unknown scene ids, MegaDepth folder) raise; failed scenes are reported and give 1.
    """
    scene_images = load_scene_list(image_list)
    selected = select_scenes(scene_images, scenes, shard)
    root = resolve_megadepth_root(megadepth_dir)

    def process(scene: str) -> str:
        return preprocess_scene_subscenes(root, scene, scene_images[scene], output_dir, workers, overwrite)

    report = run_per_scene(STAGE, selected, process)
    print(report.summary(), flush=True)
    return report.exit_code()
