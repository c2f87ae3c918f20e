"""Training dataloader for the exported AerialMegaDepth data (DUSt3R/MASt3R pairs of views).

Data layout (written by datasets_preprocess/preprocess_aerialmegadepth.py), as in the seed and DUSt3R's MegaDepth:
    <ROOT>/<scene>/<image id>.jpg   RGB
    <ROOT>/<scene>/<image id>.exr   depth, one float32 channel `Y`, metres, 0 = invalid
    <ROOT>/<scene>/<image id>.npz   `intrinsics` (3x3, OpenCV pixel centres), `cam2world` (4x4, metres)
The image id is the pair file's `images` entry used verbatim (it usually keeps the original extension, so files are
named e.g. `0015_146.jpeg.jpg`, `0015_146.jpeg.exr`, `0015_146.jpeg.npz`).
Optional sky masks: `<sky_mask_dir>/<scene>/<image id>.png`, ADE20k labels (sky = 2), as the seed's segmentation.

Pair file (npz, format and reader in aerialmd.formats.pair_file; `Pair` and `read_pair_file` are re-exported here): `scenes`,
`images` (may hold None), optionally `images_scene_name`, and `pairs` either as an object array of rows [scene index,
image index 1, image index 2, score] (the published files) or as a structured array with fields scene_id, im1_id,
im2_id, score (DUSt3R's MegaDepth metadata).

The dataset logic is the mixin `MegaDepthAerialPairs`; it sits on top of a stereo-view base class: DUSt3R's
`BaseStereoViewDataset` when dust3r is installed (see misc/megadepth_aerial.py), or the stand-alone `StereoViewDataset`
below, which reproduces that base class (resolutions, per-item random generator, pts3d, image normalisation) so the
loader runs and is tested without dust3r. The crop/resize is this module's under both base classes, so the views are
the same with and without dust3r: DUSt3R's steps (crop around the principal point, orient, scale to cover the
resolution with a random aug_crop zoom, centre crop) with intrinsics rescaled exactly for the rounded image size and
depth resampled onto the surface (resize_depth) rather than by nearest neighbour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import cv2
import numpy as np
import PIL.Image
import torch
import torchvision.transforms as tvf

from aerialmd.formats.depth import read_depth_exr
from aerialmd.formats.pair_file import Pair, read_pair_file
from aerialmd.geometry.camera import rescale_intrinsics

IMAGE_SUFFIX, DEPTH_SUFFIX, CAMERA_SUFFIX, MASK_SUFFIX = ".jpg", ".exr", ".npz", ".png"
VAL_SCENES = ("0015", "0022")  # the seed's (and DUSt3R's MegaDepth) validation scenes
SKY_LABEL = 2  # ADE20k 'sky' in the seed's segmentation PNGs
DEPTH_PERCENTILE = 98.0  # the seed drops depths beyond this percentile as outliers
DATASET_LABEL = "MegaDepth"  # the seed's `dataset` field of every view
PLANAR_TOLERANCE = 0.01  # inverse depth this close to affine counts as one surface when resizing (resize_depth)

ImgNorm = tvf.Compose([tvf.ToTensor(), tvf.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

Resolution = tuple[int, int]  # (width, height)


# ----------------------------------------------------------------------------------------------------- pair files
def select_split(pairs: Sequence[Pair], split: str | None, val_scenes: Sequence[str] = VAL_SCENES) -> list[Pair]:
    """The pairs of a split: 'val' keeps scenes whose id starts with one of `val_scenes`, 'train' the others, None
    everything (the seed's rule). An empty split is an error rather than a silently empty dataset."""
    if split is None:
        return list(pairs)
    if split not in ("train", "val"):
        raise ValueError(f"bad split {split!r}: expected 'train', 'val' or None")
    prefixes = tuple(val_scenes)
    kept = [p for p in pairs if p.scene.startswith(prefixes) == (split == "val")]
    if not kept:
        scenes = sorted({p.scene for p in pairs})
        raise ValueError(f"no pairs in split {split!r} (validation scenes {', '.join(prefixes)}; scenes present: "
                         f"{', '.join(scenes) or 'none'})")
    return kept


# ------------------------------------------------------------------------------------------------ reading a view
class RawView(NamedTuple):
    """One exported image as stored: RGB uint8 H x W x 3, depth float32 H x W (metres, 0 = invalid), intrinsics
    (OpenCV convention) and cam2world, both float64."""

    image: np.ndarray
    depthmap: np.ndarray
    intrinsics: np.ndarray
    cam2world: np.ndarray


def view_files(root: Path | str, scene: str, image_id: str) -> dict[str, Path]:
    """The exported files of one image (see the module docstring for the naming rule)."""
    folder = Path(root) / scene
    return {kind: folder / (image_id + suffix)
            for kind, suffix in (("image", IMAGE_SUFFIX), ("depth", DEPTH_SUFFIX), ("camera", CAMERA_SUFFIX))}


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 H x W x 3."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_camera(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics 3x3, cam2world 4x4) of a camera npz, float64, checked for shape and finiteness."""
    try:
        with np.load(path) as data:
            K, cam2world = np.array(data["intrinsics"], np.float64), np.array(data["cam2world"], np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a camera npz with 'intrinsics' and 'cam2world' ({exc})") from exc
    if K.shape != (3, 3) or cam2world.shape != (4, 4) or not (np.isfinite(K).all() and np.isfinite(cam2world).all()):
        raise ValueError(f"{path}: intrinsics {K.shape} / cam2world {cam2world.shape} not finite 3x3 / 4x4 matrices")
    return K, cam2world


def read_sky_mask(path: Path, shape: tuple[int, int], sky_label: int = SKY_LABEL) -> np.ndarray:
    """Boolean H x W sky mask from a label PNG (single channel, palette, or three equal channels as the seed's)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sky mask not found (sky_mask_dir is set, so every image needs one)")
    labels = np.asarray(PIL.Image.open(path))
    if labels.ndim == 3:
        if not (labels[..., :3] == labels[..., :1]).all():
            raise ValueError(f"{path}: colour PNG; expected a label image (one channel or three equal channels)")
        labels = labels[..., 0]
    if labels.shape != shape:
        raise ValueError(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]}, image is {shape[1]}x{shape[0]}")
    return labels == sky_label


def drop_far_depths(depth: np.ndarray, percentile: float | None) -> np.ndarray:
    """Depth with values beyond the given percentile of the valid depths set to 0 (the seed's outlier clean-up,
    here over valid pixels only so the share of sky does not change the threshold); None keeps everything."""
    valid = depth > 0
    if percentile is None or not valid.any():
        return depth
    depth = depth.copy()
    depth[depth > np.percentile(depth[valid], percentile)] = 0
    return depth


def load_view(root: Path | str, scene: str, image_id: str, *, sky_mask_dir: Path | str | None = None,
              sky_label: int = SKY_LABEL, depth_percentile: float | None = DEPTH_PERCENTILE) -> RawView:
    """Read one exported image, mask its sky (if `sky_mask_dir`) and drop far-depth outliers."""
    files = view_files(root, scene, image_id)
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"image {image_id!r} of scene {scene!r}: missing {', '.join(missing)} (expected "
                                f"<ROOT>/<scene>/<image id>{IMAGE_SUFFIX}|{DEPTH_SUFFIX}|{CAMERA_SUFFIX})")
    image, depth = read_rgb(files["image"]), read_depth_exr(files["depth"])
    if image.shape[:2] != depth.shape:
        raise ValueError(f"{files['depth']}: depth is {depth.shape[1]}x{depth.shape[0]}, "
                         f"image is {image.shape[1]}x{image.shape[0]}")
    K, cam2world = read_camera(files["camera"])
    if sky_mask_dir is not None:
        depth = np.where(read_sky_mask(Path(sky_mask_dir) / scene / (image_id + MASK_SUFFIX), depth.shape, sky_label),
                         np.float32(0), depth)
    return RawView(image, drop_far_depths(depth, depth_percentile), K, cam2world)


# ---------------------------------------------------------------------------------------------- crop and resize
def _as_pil(image: PIL.Image.Image | np.ndarray) -> PIL.Image.Image:
    return image if isinstance(image, PIL.Image.Image) else PIL.Image.fromarray(image)


def crop(image: PIL.Image.Image, depth: np.ndarray, K: np.ndarray,
         box: tuple[int, int, int, int]) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
    """Crop image and depth to box (left, top, right, bottom); the principal point moves by (-left, -top)."""
    left, top, right, bottom = box
    K = np.array(K, np.float64)
    K[0, 2] -= left
    K[1, 2] -= top
    return image.crop(box), depth[top:bottom, left:right], K


def principal_point_box(K: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest box centred on the (rounded) principal point, as DUSt3R's first crop; refuses a principal point
    so far off-centre that less than 2/5 of the image would be left along an axis."""
    width, height = size
    cx, cy = (int(c) for c in np.round(K[:2, 2]))
    mx, my = min(cx, width - cx), min(cy, height - cy)
    if mx <= width / 5 or my <= height / 5:
        raise ValueError(f"principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) too far from the centre of the "
                         f"{width}x{height} image to crop around it")
    return cx - mx, cy - my, cx + mx, cy + my


def orient_resolution(resolution: Resolution, size: tuple[int, int], rng: np.random.Generator) -> Resolution:
    """A landscape (W >= H) resolution turned to portrait for portrait images; for near-square images (aspect within
    10%) the orientation is drawn at random, as DUSt3R does."""
    width, height = size
    if height > 1.1 * width:
        return resolution[::-1]
    if 0.9 < height / width < 1.1 and resolution[0] != resolution[1] and rng.integers(2):
        return resolution[::-1]
    return resolution


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output pixel when resizing an axis with nearest sampling, pixel centres aligned."""
    return np.minimum(((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64), size_in - 1)


def _neighbours(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel of an axis: the two source pixels around its centre and the weight of the second."""
    position = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5  # OpenCV pixel-centre coordinates
    first = np.clip(np.floor(position).astype(np.int64), 0, size_in - 1)
    second = np.minimum(first + 1, size_in - 1)
    return first, second, np.clip(position - first, 0.0, 1.0)


def locally_planar(depth: np.ndarray, tolerance: float = PLANAR_TOLERANCE) -> np.ndarray:
    """Pixels whose inverse depth is affine (as on any plane, whatever its slope) across their row and column
    neighbours: both second differences within `tolerance` of the pixel's inverse depth, all three pixels valid.
    A depth edge next to a pixel breaks this whatever the slope of the surfaces, unless its jump is within tolerance."""
    valid = depth > 0
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1).astype(np.float64), 0.0)
    planar = np.zeros(depth.shape, bool)
    centre = inverse[1:-1, 1:-1]
    both = valid[1:-1, 1:-1].copy()
    for before, after, valid_before, valid_after in (
            (inverse[1:-1, :-2], inverse[1:-1, 2:], valid[1:-1, :-2], valid[1:-1, 2:]),  # along the row
            (inverse[:-2, 1:-1], inverse[2:, 1:-1], valid[:-2, 1:-1], valid[2:, 1:-1])):  # along the column
        both &= valid_before & valid_after & (np.abs(before - 2 * centre + after) <= tolerance * centre)
    planar[1:-1, 1:-1] = both
    return planar


def resize_depth(depth: np.ndarray, size: tuple[int, int], tolerance: float = PLANAR_TOLERANCE) -> np.ndarray:
    """Depth map resized to `size` (W, H), each output pixel the depth at its centre.

    Where the four source pixels around that centre are locally planar (locally_planar), inverse depth is
    interpolated bilinearly (exact on planes, so pts3d stay on the surface); elsewhere (depth edges, sky borders,
    noisy depth) the nearest source depth is kept, as DUSt3R does everywhere, so no point floats between surfaces.
    Nearest sampling alone puts points up to half a source pixel off the surface along the ray, which on grazing
    ground seen from the air and from the street is more than 1% of depth in the other view.
    """
    height, width = depth.shape
    nearest = depth[nearest_indices(height, size[1])[:, None], nearest_indices(width, size[0])[None, :]]
    r0, r1, fy = _neighbours(height, size[1])
    c0, c1, fx = _neighbours(width, size[0])
    planar = locally_planar(depth, tolerance)
    rows, cols = (r0[:, None], r1[:, None]), (c0[None, :], c1[None, :])
    smooth = np.logical_and.reduce([planar[r, c] for r in rows for c in cols])
    fx, fy = fx[None, :], fy[:, None]
    weights = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
    corners = [np.where(smooth, depth[r, c], 1).astype(np.float64) for r in rows for c in cols]
    inverse = sum(w / c for w, c in zip(weights, corners))
    return np.where(smooth, 1.0 / inverse, nearest).astype(np.float32)


def resize_to_cover(image: PIL.Image.Image, depth: np.ndarray, K: np.ndarray,
                    target: Sequence[int]) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
    """Scale (keeping the aspect ratio) so the image covers `target` (W, H): LANCZOS when shrinking, bicubic when
    enlarging, depth by resize_depth; intrinsics rescaled exactly for the rounded size, per axis."""
    width, height = image.size
    scale = max(target[0] / width, target[1] / height) + 1e-8
    out_w, out_h = int(np.floor(width * scale)), int(np.floor(height * scale))
    if (out_w, out_h) == (width, height):
        return image, depth, K
    image = image.resize((out_w, out_h), PIL.Image.LANCZOS if scale < 1 else PIL.Image.BICUBIC)
    return image, resize_depth(depth, (out_w, out_h)), rescale_intrinsics(K, out_w / width, out_h / height)


def centre_crop(image: PIL.Image.Image, depth: np.ndarray, K: np.ndarray,
                size: Resolution) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
    """Crop the centre `size` (W, H) of an image at least that large."""
    width, height = image.size
    left, top = int(np.round((width - size[0]) / 2)), int(np.round((height - size[1]) / 2))
    return crop(image, depth, K, (left, top, left + size[0], top + size[1]))


def crop_resize(image: PIL.Image.Image | np.ndarray, depth: np.ndarray, K: np.ndarray, resolution: Resolution,
                rng: np.random.Generator, aug_crop: int = 0) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
    """DUSt3R's crop/resize: crop centred on the principal point, orient the resolution like the image, scale to cover
    it (enlarged by a random 0..aug_crop-1 pixels when aug_crop > 1, i.e. a random zoom), crop the centre."""
    image = _as_pil(image)
    if depth.shape != image.size[::-1]:
        raise ValueError(f"depth is {depth.shape[1]}x{depth.shape[0]}, image is {image.size[0]}x{image.size[1]}")
    image, depth, K = crop(image, depth, K, principal_point_box(K, image.size))
    resolution = orient_resolution(tuple(resolution), image.size, rng)
    target = np.array(resolution)
    if aug_crop > 1:
        target = target + rng.integers(0, aug_crop)
    image, depth, K = resize_to_cover(image, depth, K, target)
    return centre_crop(image, depth, K, resolution)


def view_at_resolution(image: PIL.Image.Image | np.ndarray, depth: np.ndarray, K: np.ndarray,
                       resolution: Resolution | None, rng: np.random.Generator | None, aug_crop: int = 0,
                       info: Any = None) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
    """crop_resize to `resolution`, or the view as stored for None; `info` (e.g. scene and image) prefixes errors."""
    if resolution is None:
        return _as_pil(image), depth, np.array(K, np.float64)
    try:
        return crop_resize(image, depth, K, resolution, rng, aug_crop)
    except ValueError as exc:
        raise ValueError(f"{info}: {exc}") from exc


# --------------------------------------------------------------------------------------- stand-alone base class
def depth_to_world_points(depth: np.ndarray, K: np.ndarray, cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (float32 H x W x 3) of every pixel's depth (pinhole, no skew, in float64) and the valid mask
    (depth > 0 and finite points), like DUSt3R's depthmap_to_absolute_camera_coordinates."""
    K, cam2world = np.asarray(K, np.float64), np.asarray(cam2world, np.float64)
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    z = depth.astype(np.float64)
    cam = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=-1)
    world = cam @ cam2world[:3, :3].T + cam2world[:3, 3]
    return world.astype(np.float32), (depth > 0) & np.isfinite(world).all(axis=-1)


def parse_resolutions(resolution: Any) -> list[Resolution | None]:
    """DUSt3R's resolution argument as a list of (W, H): an int (square), a (W, H) pair, a list of those, or None
    (stand-alone only: views at their stored size, no crop or resize). Landscape only (W >= H): portrait images get
    the transposed resolution automatically."""
    if resolution is None:
        return [None]
    items = resolution if isinstance(resolution, list) else [resolution]
    parsed = []
    for item in items:
        size = (item, item) if isinstance(item, int) else tuple(int(x) for x in item)
        if len(size) != 2 or min(size) <= 0 or size[0] < size[1]:
            raise ValueError(f"bad resolution {item!r}: expected an int or (width, height) with width >= height > 0")
        parsed.append(size)
    return parsed


class StereoViewDataset(torch.utils.data.Dataset):
    """Stand-in for DUSt3R's BaseStereoViewDataset with the same constructor and item protocol.

    Subclasses provide __len__ and `_get_views(idx, resolution, rng)` -> list of dicts (img, depthmap, camera_pose,
    camera_intrinsics, dataset, label, instance). `dataset[idx]` or `dataset[idx, resolution_index]` adds idx,
    true_shape (H, W), pts3d, valid_mask and rng, and normalises img with `transform`. The random generator of an item
    is seeded by (seed, epoch, idx), so the same seed gives the same item; without a seed, torch's initial seed (one
    per process / DataLoader worker) is used, as DUSt3R does.
    """

    def __init__(self, *, split: str | None = None, resolution: Any = None, transform: Callable | None = None,
                 aug_crop: int | bool = False, seed: int | None = None) -> None:
        self.split = split
        self._resolutions = parse_resolutions(resolution)
        self.transform = ImgNorm if transform is None else transform
        self.aug_crop = int(aug_crop)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def _get_views(self, idx: int, resolution: Resolution | None, rng: np.random.Generator) -> list[dict]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Draw other augmentations in the next epoch (the generator seed includes the epoch)."""
        self.epoch = int(epoch)

    def _item_rng(self, idx: int) -> np.random.Generator:
        """The random generator of one item: a function of (seed, epoch, idx) only."""
        base = self.seed if self.seed is not None else torch.initial_seed()
        return np.random.default_rng([int(base), self.epoch, int(idx)])

    def _crop_resize_if_necessary(self, image: PIL.Image.Image | np.ndarray, depthmap: np.ndarray,
                                  intrinsics: np.ndarray, resolution: Resolution | None,
                                  rng: np.random.Generator | None = None,
                                  info: Any = None) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
        """DUSt3R's hook: see view_at_resolution."""
        return view_at_resolution(image, depthmap, intrinsics, resolution, rng, self.aug_crop, info)

    def __getitem__(self, idx: int | tuple[int, int]) -> list[dict]:
        idx, resolution_index = idx if isinstance(idx, tuple) else (idx, 0)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        rng = self._item_rng(idx)
        views = self._get_views(idx, self._resolutions[resolution_index], rng)
        for v, view in enumerate(views):
            image = _as_pil(view["img"])
            view["idx"] = (idx, resolution_index, v)
            view["true_shape"] = np.int32((image.size[1], image.size[0]))
            view["img"] = self.transform(image)
            view["pts3d"], view["valid_mask"] = depth_to_world_points(view["depthmap"], view["camera_intrinsics"],
                                                                      view["camera_pose"])
            view["rng"] = int.from_bytes(rng.bytes(4), "big")
        return views


# ------------------------------------------------------------------------------------------------ the dataset
class MegaDepthAerialPairs:
    """AerialMegaDepth pairs on top of a stereo-view base class (DUSt3R's, or StereoViewDataset).

    Constructor as the seed's: split ('train', 'val' or None), ROOT (the export folder), split_file (pair file,
    relative to ROOT or absolute), plus the base class's resolution, aug_crop, transform, seed. Extra options:
    sky_mask_dir (folder of <scene>/<image id>.png label masks, sky = sky_label; None: no masking),
    depth_percentile (far-outlier clean-up, None: off), val_scenes (scene-id prefixes of the validation split).
    """

    dataset_label = DATASET_LABEL

    def __init__(self, *args: Any, split: str | None, ROOT: Path | str, split_file: Path | str,
                 sky_mask_dir: Path | str | None = None, sky_label: int = SKY_LABEL,
                 depth_percentile: float | None = DEPTH_PERCENTILE, val_scenes: Sequence[str] = VAL_SCENES,
                 **kwargs: Any) -> None:
        self.ROOT = str(ROOT)
        super().__init__(*args, split=split, **kwargs)
        self.split_file = str(split_file)
        self.sky_mask_dir = None if sky_mask_dir is None else str(sky_mask_dir)
        self.sky_label = sky_label
        self.depth_percentile = depth_percentile
        path = Path(self.ROOT) / self.split_file
        pairs = read_pair_file(path)
        try:
            self.pairs = select_split(pairs, split, val_scenes)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        self.scenes = sorted({pair.scene for pair in self.pairs})

    def __len__(self) -> int:
        return len(self.pairs)

    def _crop_resize_if_necessary(self, image: PIL.Image.Image | np.ndarray, depthmap: np.ndarray,
                                  intrinsics: np.ndarray, resolution: Resolution | None,
                                  rng: np.random.Generator | None = None,
                                  info: Any = None) -> tuple[PIL.Image.Image, np.ndarray, np.ndarray]:
        """Ours under DUSt3R's base class too (same views with and without dust3r): exact intrinsics, depth resized
        onto the surface (resize_depth) instead of DUSt3R's nearest sampling."""
        return view_at_resolution(image, depthmap, intrinsics, resolution, rng, self.aug_crop, info)

    def get_stats(self) -> str:
        return f"{len(self)} pairs from {len(self.scenes)} scenes"

    def _get_views(self, idx: int, resolution: Resolution | None, rng: np.random.Generator) -> list[dict]:
        """The two views of pair `idx` at `resolution`; float32 arrays as DUSt3R requires."""
        pair = self.pairs[idx]
        views = []
        for image_id in (pair.im1, pair.im2):
            raw = load_view(self.ROOT, pair.scene, image_id, sky_mask_dir=self.sky_mask_dir, sky_label=self.sky_label,
                            depth_percentile=self.depth_percentile)
            image, depth, K = self._crop_resize_if_necessary(raw.image, raw.depthmap, raw.intrinsics, resolution,
                                                             rng=rng, info=(pair.scene, image_id))
            views.append(dict(img=image, depthmap=np.ascontiguousarray(depth, np.float32),
                              camera_pose=raw.cam2world.astype(np.float32),
                              camera_intrinsics=np.asarray(K, np.float64).astype(np.float32),
                              dataset=self.dataset_label, label=pair.scene, instance=image_id))
        return views


class MegaDepthAerial(MegaDepthAerialPairs, StereoViewDataset):
    """The AerialMegaDepth dataloader without dust3r (a torch Dataset); see MegaDepthAerialPairs for the arguments."""
