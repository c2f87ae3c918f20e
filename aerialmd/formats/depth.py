"""Depth map files: OpenEXR (our outputs) and HDF5 (MegaDepth inputs).

Depths are float32 H x W arrays in SfM units with 0 = invalid. EXR files hold one float32 channel named `Y` with ZIP
compression, the layout OpenCV's EXR reader (`cv2.imread(path, cv2.IMREAD_UNCHANGED)`) returns as a 2-D float32 array.
opencv-python 5 cannot read or write EXR, hence the OpenEXR package.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import OpenEXR

from aerialmd.atomic import atomic_file

EXR_CHANNEL = "Y"
H5_DATASET = "depth"


def _as_depth(depth: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 2-D copy-or-view of `depth`; anything else is an error."""
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be 2-D (H x W), got shape {depth.shape}")
    return depth


def _require_file(path: Path) -> None:
    """Raise FileNotFoundError naming `path` if it is not a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: depth file not found")


def write_depth_exr(path: Path | str, depth: np.ndarray) -> None:
    """Write a depth map as a single-channel (`Y`) float32 ZIP-compressed EXR, atomically."""
    depth = _as_depth(depth)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_file(path) as tmp, OpenEXR.File(header, {EXR_CHANNEL: depth}) as exr:
        exr.write(str(tmp))


def read_depth_exr(path: Path | str) -> np.ndarray:
    """Read the `Y` channel of an EXR depth map as float32 H x W."""
    path = Path(path)
    _require_file(path)
    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            if EXR_CHANNEL not in channels:
                raise ValueError(f"no '{EXR_CHANNEL}' channel (channels: {', '.join(channels)})")
            pixels = channels[EXR_CHANNEL].pixels
    except (RuntimeError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable EXR depth map ({exc})") from exc
    return _as_depth(pixels)


def read_depth_h5(path: Path | str) -> np.ndarray:
    """Read a MegaDepth depth map (HDF5 dataset `depth`) as float32 H x W."""
    path = Path(path)
    _require_file(path)
    try:
        with h5py.File(path, "r") as h5:
            depth = h5[H5_DATASET][()]
    except (OSError, KeyError, TypeError) as exc:  # h5py: OSError for a bad file, KeyError for a missing dataset
        raise ValueError(f"{path}: not a readable HDF5 depth map with a '{H5_DATASET}' dataset ({exc})") from exc
    try:
        return _as_depth(depth)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_depth_h5(path: Path | str, depth: np.ndarray) -> None:
    """Write a depth map as HDF5 dataset `depth` (float32), atomically."""
    depth = _as_depth(depth)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset(H5_DATASET, data=depth)
