"""The metric dense model of a scene (`localized_dense_metric/`): reader, writer, and a sparse model built from depths.

Layout (written by the MVS stage, read by the exporter and make_pairs):
    <megadepth_aerial_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/localized_dense_metric/
        images/<name>                       undistorted photo or aerial frame (names are opaque: `9000_000.jpeg`,
                                            `123_abc_o.jpg.jpg`, ...)
        depths/<name without its last suffix>.h5   dataset `depth`, float32, metres, 0 = invalid; same size as the image
        sparse-txt/{cameras,images,points3D}.txt   COLMAP text model: PINHOLE (or SIMPLE_PINHOLE) cameras in COLMAP's
                                            pixel convention, metric cam_from_world poses (ENU metres), points3D whose
                                            tracks give co-visibility

Conventions are those of aerialmd.geometry.camera: `DenseView.K` is in OpenCV's pixel convention (converted once on reading),
`cam2world` is camera-to-world; the COLMAP files keep COLMAP's convention and cam_from_world.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import pycolmap
from scipy import sparse

from aerialmd.atomic import atomic_dir
from aerialmd.formats.depth import read_depth_h5, write_depth_h5
from aerialmd.geometry.camera import (
    COLMAP_TO_OPENCV_PIXEL_SHIFT,
    cam2world_from_cam_from_world,
    cam_from_world_from_cam2world,
    opencv_intrinsics,
    opencv_to_colmap_intrinsics,
)
from aerialmd.layout import (
    DENSE_DIR,
    DEPTHS_DIR,
    IMAGES_DIR,
    LOCALIZATION_DIR,
    LOCALIZED_MODEL,
    SFM_PREFIX,
    SPARSE_TXT_DIR,
)

PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")


@dataclasses.dataclass(frozen=True)
class DenseView:
    """One image of a dense model: name, size, intrinsics (3x3, OpenCV pixel convention), cam2world (4x4, metres)."""

    name: str
    width: int
    height: int
    K: np.ndarray
    cam2world: np.ndarray


@dataclasses.dataclass
class DenseModel:
    """A read dense model: its folder, the views by name (sorted), and the sparse model (for co-visibility)."""

    root: Path
    views: dict[str, DenseView]
    sparse: pycolmap.Reconstruction

    def image_path(self, name: str) -> Path:
        return self.root / IMAGES_DIR / name

    def depth_path(self, name: str) -> Path:
        return self.root / DEPTHS_DIR / depth_file_name(name)

    def read_depth(self, name: str) -> np.ndarray:
        """Depth of `name` (metres, 0 = invalid), checked against the camera size."""
        depth = read_depth_h5(self.depth_path(name))
        view = self.views[name]
        if depth.shape != (view.height, view.width):
            raise ValueError(f"{self.depth_path(name)}: depth is {depth.shape[1]}x{depth.shape[0]} but camera of "
                             f"{name} is {view.width}x{view.height}")
        return depth


def depth_file_name(name: str) -> str:
    """Depth file of image `name`, relative to depths/: the name without its last suffix, plus `.h5`
    (`9000_000.jpeg` -> `9000_000.h5`, `123_abc_o.jpg.jpg` -> `123_abc_o.jpg.h5`)."""
    return str(Path(name).with_suffix("")) + ".h5"


# ----------------------------------------------------------------------------------------------------------------------
# Finding and reading


def find_sfm_dirs(scene_dir: Path) -> list[Path]:
    """Stage-4a outputs of a scene (one per feature/matcher configuration), sorted."""
    root = Path(scene_dir) / LOCALIZATION_DIR
    return sorted(p for p in root.glob(f"{SFM_PREFIX}*") if (p / LOCALIZED_MODEL).is_dir()) if root.is_dir() else []


def find_dense_dir(scene_dir: Path | str, sfm_name: str | None = None) -> Path:
    """`localized_dense_metric` of a scene: in `sfm_output_localization/<sfm_name>` when given, else in the only
    `sfm_*` folder that has one (e.g. `sfm_sift+nn-ratio`, or the published `sfm_superpoint+superglue`).

    Raises FileNotFoundError when there is none, ValueError when several qualify and no sfm_name chooses."""
    root = Path(scene_dir) / LOCALIZATION_DIR
    if sfm_name is not None:
        dense = root / sfm_name / DENSE_DIR
        if not dense.is_dir():
            raise FileNotFoundError(f"{dense}: dense model not found")
        return dense
    candidates = sorted(p / DENSE_DIR for p in root.glob(f"{SFM_PREFIX}*") if (p / DENSE_DIR).is_dir())
    if not candidates:
        raise FileNotFoundError(f"{root}: no {SFM_PREFIX}*/{DENSE_DIR} folder")
    if len(candidates) > 1:
        names = ", ".join(p.parent.name for p in candidates)
        raise ValueError(f"{root}: several dense models ({names}); choose one with --sfm_name")
    return candidates[0]


def view_from_image(image: pycolmap.Image, camera: pycolmap.Camera) -> DenseView:
    """DenseView of a posed image with a pinhole camera; other camera models are an error (undistort first)."""
    if camera.model.name not in PINHOLE_MODELS:
        raise ValueError(f"image {image.name}: camera model {camera.model.name} is not pinhole "
                         f"({' or '.join(PINHOLE_MODELS)}); the dense model must hold undistorted cameras")
    if not image.has_pose:
        raise ValueError(f"image {image.name}: no pose")
    return DenseView(image.name, int(camera.width), int(camera.height), opencv_intrinsics(camera),
                     cam2world_from_cam_from_world(image.cam_from_world()))


def read_dense_model(dense_dir: Path | str) -> DenseModel:
    """Read a dense model's sparse-txt (text or binary COLMAP files both work) into DenseViews.

    Raises FileNotFoundError/ValueError naming the folder when the model is missing or unreadable, or uses a
    non-pinhole camera."""
    root = Path(dense_dir)
    sparse_dir = root / SPARSE_TXT_DIR
    if not sparse_dir.is_dir():
        raise FileNotFoundError(f"{sparse_dir}: sparse model not found")
    try:
        model = pycolmap.Reconstruction(str(sparse_dir))
    except ValueError as exc:
        raise ValueError(f"{sparse_dir}: unreadable sparse model ({exc})") from exc
    views = {}
    for image in model.images.values():
        if image.has_pose:
            views[image.name] = view_from_image(image, model.camera(image.camera_id))
    if not views:
        raise ValueError(f"{sparse_dir}: no posed image")
    return DenseModel(root, dict(sorted(views.items())), model)


def covisibility(model: pycolmap.Reconstruction, names: Sequence[str]) -> sparse.csr_matrix:
    """(N, N) counts of 3D points shared by images `names` (in that order) of a sparse model; diagonal zero.

    Computed as A A^T with A the sparse image-by-point incidence matrix, so the cost follows the observations, not the
    square of the image count."""
    index = {name: i for i, name in enumerate(names)}
    image_index = {image_id: index[image.name] for image_id, image in model.images.items() if image.name in index}
    rows, cols = [], []
    for column, point in enumerate(model.points3D.values()):
        seen = {image_index[e.image_id] for e in point.track.elements if e.image_id in image_index}
        rows += seen
        cols += [column] * len(seen)
    A = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(names), max(1, len(model.points3D))))
    shared = (A @ A.T).tocsr()
    shared.setdiag(0)
    shared.eliminate_zeros()
    return shared


# ----------------------------------------------------------------------------------------------------------------------
# Building and writing


@dataclasses.dataclass(frozen=True)
class SparsePoint:
    """A 3D point (world, metres) and its observations: (image name, COLMAP pixel coordinates)."""

    xyz: np.ndarray
    observations: tuple[tuple[str, np.ndarray], ...]


def project(view: DenseView, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV pixel coordinates (N, 2) and camera z (N,) of world points (N, 3); pixels are NaN where z <= 0."""
    world2cam = np.linalg.inv(view.cam2world)
    x_cam = points @ world2cam[:3, :3].T + world2cam[:3, 3]
    z = x_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (x_cam[:, :2] / z[:, None]) @ view.K[:2, :2].T + view.K[:2, 2]
    uv[z <= 0] = np.nan
    return uv, z


def unproject(view: DenseView, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """World points (N, 3) of OpenCV pixels (N, 2) at z-depths (N,)."""
    rays = np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(view.K).T
    return (rays * depth[:, None]) @ view.cam2world[:3, :3].T + view.cam2world[:3, 3]


def visible_in(view: DenseView, depth: np.ndarray, points: np.ndarray, rel_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Which world points a view sees (in front, inside the image, agreeing with its depth map at the nearest pixel
    within `rel_tol`, i.e. not occluded), and their OpenCV pixel coordinates."""
    uv, z = project(view, points)
    with np.errstate(invalid="ignore"):
        iu, iv = np.round(uv[:, 0]), np.round(uv[:, 1])
        inside = (z > 0) & (iu >= 0) & (iu < view.width) & (iv >= 0) & (iv < view.height)
    visible = np.zeros(len(points), bool)
    d = depth[iv[inside].astype(int), iu[inside].astype(int)]
    visible[inside] = (d > 0) & (np.abs(d - z[inside]) <= rel_tol * d)
    return visible, uv


def points_from_depths(views: Sequence[DenseView], depths: Mapping[str, np.ndarray], rng: np.random.Generator,
                       per_image: int = 300, rel_tol: float = 0.01) -> list[SparsePoint]:
    """SfM-like points from dense depth: `per_image` random valid pixels of each view lifted to 3D, observed by every
    view that sees them (visibility test of `visible_in`); points seen by fewer than two views are dropped.

    Gives a sparse model consistent with the depths, whose tracks encode co-visibility (test fixtures, or a dense model
    whose sparse points should come from its own depths)."""
    out = []
    for view in views:
        depth = depths[view.name]
        vs, us = np.nonzero(depth > 0)
        if not len(us):
            continue
        pick = rng.choice(len(us), size=min(per_image, len(us)), replace=False)
        uv = np.column_stack([us[pick], vs[pick]]).astype(np.float64)
        xyz = unproject(view, uv, depth[vs[pick], us[pick]].astype(np.float64))
        seen = [visible_in(other, depths[other.name], xyz, rel_tol) for other in views]
        for k in range(len(xyz)):
            track = tuple((other.name, uv_other[k] - COLMAP_TO_OPENCV_PIXEL_SHIFT)  # OpenCV -> COLMAP pixel
                          for other, (visible, uv_other) in zip(views, seen) if visible[k])
            if len(track) >= 2:
                out.append(SparsePoint(xyz[k], track))
    return out


def pinhole_camera(view: DenseView, camera_id: int) -> pycolmap.Camera:
    """A PINHOLE pycolmap camera (COLMAP pixel convention) of a view."""
    K = opencv_to_colmap_intrinsics(view.K)
    return pycolmap.Camera(model="PINHOLE", width=view.width, height=view.height,
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], camera_id=camera_id)


def build_sparse_model(views: Sequence[DenseView], points: Sequence[SparsePoint] = ()) -> pycolmap.Reconstruction:
    """A COLMAP model of the views (one PINHOLE camera each, ids 1..N in order) and points with their tracks."""
    model = pycolmap.Reconstruction()
    ids = {}
    for image_id, view in enumerate(views, start=1):
        model.add_camera_with_trivial_rig(pinhole_camera(view, image_id))
        model.add_image_with_trivial_frame(pycolmap.Image(name=view.name, camera_id=image_id, image_id=image_id),
                                           cam_from_world_from_cam2world(view.cam2world))
        ids[view.name] = image_id
    keypoints: dict[int, list[np.ndarray]] = {i: [] for i in ids.values()}
    tracks = []
    for point in points:
        elements = []
        for name, xy in point.observations:
            keypoints[ids[name]].append(np.asarray(xy, np.float64))
            elements.append(pycolmap.TrackElement(ids[name], len(keypoints[ids[name]]) - 1))
        tracks.append((point.xyz, elements))
    for image_id, xys in keypoints.items():
        model.image(image_id).points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in xys])
    for xyz, elements in tracks:
        model.add_point3D(np.asarray(xyz, np.float64), pycolmap.Track(elements), np.zeros(3, np.uint8))
    return model


def write_image(path: Path, source: Path | np.ndarray) -> None:
    """Copy an image file's bytes, or encode a BGR/gray uint8 array in the format of `path`'s suffix."""
    if isinstance(source, (str, Path)):
        shutil.copyfile(source, path)
        return
    ok, data = cv2.imencode(path.suffix or ".png", np.asarray(source))
    if not ok:
        raise ValueError(f"{path}: could not encode the image as {path.suffix}")
    path.write_bytes(data.tobytes())


def image_size(source: Path | np.ndarray) -> tuple[int, int]:
    """(width, height) of an image file or array."""
    if isinstance(source, (str, Path)):
        image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise ValueError(f"{source}: not a readable image")
        return image.shape[1], image.shape[0]
    return source.shape[1], source.shape[0]


def write_dense_model(dense_dir: Path | str, model: pycolmap.Reconstruction, images: Mapping[str, Path | np.ndarray],
                      depths: Mapping[str, np.ndarray], overwrite: bool = False,
                      text_files: Mapping[str, str] | None = None) -> Path:
    """Write a dense model folder atomically (it appears only when complete): images/, depths/, sparse-txt/, and any
    `text_files` (file name -> content, e.g. the MVS stage's dense.json).

    `model` holds the posed pinhole cameras (COLMAP convention, metric poses) and points; every posed image of it needs
    an entry in `images` (a file to copy, or a BGR uint8 array encoded by the name's suffix) and in `depths` (metres,
    0 = invalid, same size as the camera). Raises ValueError on a missing entry or a size mismatch."""
    dense_dir = Path(dense_dir)
    with atomic_dir(dense_dir, overwrite=overwrite) as tmp:
        for image in model.images.values():
            if not image.has_pose:
                continue
            view = view_from_image(image, model.camera(image.camera_id))
            if view.name not in images or view.name not in depths:
                raise ValueError(f"{view.name}: no image or no depth given")
            depth = np.asarray(depths[view.name], np.float32)
            sizes = {(view.width, view.height), (depth.shape[1], depth.shape[0]), image_size(images[view.name])}
            if len(sizes) != 1:
                raise ValueError(f"{view.name}: camera, depth and image sizes differ ({sorted(sizes)})")
            image_path = tmp / IMAGES_DIR / view.name
            image_path.parent.mkdir(parents=True, exist_ok=True)
            write_image(image_path, images[view.name])
            write_depth_h5(tmp / DEPTHS_DIR / depth_file_name(view.name), depth)
        (tmp / SPARSE_TXT_DIR).mkdir()
        model.write_text(str(tmp / SPARSE_TXT_DIR))
        for file_name, text in (text_files or {}).items():
            (tmp / file_name).write_text(text)
    return dense_dir
