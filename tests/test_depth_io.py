"""Depth map files: EXR and HDF5 round trips, file layout, and errors that name the bad file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import OpenEXR
import pytest

from aerialmd.formats.depth import read_depth_exr, read_depth_h5, write_depth_exr, write_depth_h5
from tests.helpers import SHARED_DATA

MEGADEPTH_0446 = SHARED_DATA / "real" / "megadepth_0446"


def sample_depth(height: int = 37, width: int = 53) -> np.ndarray:
    """Random float32 depths with invalid (0) pixels and values no lossy path would keep exactly."""
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.1, 100.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.3] = 0.0
    depth[0, 0] = np.float32(np.pi)
    return depth


def test_exr_round_trip_is_exact(tmp_path: Path) -> None:
    depth = sample_depth()
    path = tmp_path / "d.exr"
    write_depth_exr(path, depth)
    back = read_depth_exr(path)
    assert back.dtype == np.float32 and back.shape == depth.shape
    assert np.array_equal(back, depth)
    assert [p.name for p in tmp_path.iterdir()] == ["d.exr"]  # no temporary file left behind


def test_exr_layout_single_float_channel_y_zip(tmp_path: Path) -> None:
    path = tmp_path / "d.exr"
    write_depth_exr(path, sample_depth())
    with OpenEXR.File(str(path)) as exr:  # header and channels are only valid while the file is open
        header = exr.header()
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert [c.name for c in header["channels"]] == ["Y"]
        assert exr.channels()["Y"].pixels.dtype == np.float32


def test_write_exr_rejects_non_2d_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_depth_exr(tmp_path / "d.exr", np.zeros((4, 5, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_h5_round_trip(tmp_path: Path) -> None:
    depth = sample_depth()
    path = tmp_path / "d.h5"
    write_depth_h5(path, depth.astype(np.float64))
    with h5py.File(path, "r") as h5:
        assert h5["depth"].dtype == np.float32
    assert np.array_equal(read_depth_h5(path), depth)


@pytest.mark.parametrize("reader", [read_depth_exr, read_depth_h5])
def test_missing_file_names_the_file(tmp_path: Path, reader) -> None:
    path = tmp_path / "nothing_here.bin"
    with pytest.raises(FileNotFoundError, match="nothing_here.bin"):
        reader(path)


@pytest.mark.parametrize("reader", [read_depth_exr, read_depth_h5])
def test_garbage_file_names_the_file(tmp_path: Path, reader) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"not a depth map" * 10)
    with pytest.raises(ValueError, match="garbage.bin"):
        reader(path)


def test_truncated_exr_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.exr"
    write_depth_exr(path, sample_depth())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cut.exr"):
        read_depth_exr(path)


def test_exr_without_y_channel(tmp_path: Path) -> None:
    path = tmp_path / "z.exr"
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, {"Z": sample_depth()}) as exr:
        exr.write(str(path))
    with pytest.raises(ValueError, match="z.exr.*'Y'"):
        read_depth_exr(path)


def test_h5_without_depth_dataset(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("disparity", data=sample_depth())
    with pytest.raises(ValueError, match="other.h5.*'depth'"):
        read_depth_h5(path)


def test_real_megadepth_h5_survives_exr_round_trip(tmp_path: Path) -> None:
    if not MEGADEPTH_0446.is_dir():
        pytest.skip(f"shared reference data not found at {MEGADEPTH_0446}")
    depth = read_depth_h5(MEGADEPTH_0446 / "8583256543_96562c14f2_o.h5")
    assert depth.shape == (827, 1242) and depth.dtype == np.float32
    assert depth.min() == 0.0 and 0.0 < depth.max() < 100.0
    write_depth_exr(tmp_path / "d.exr", depth)
    assert np.array_equal(read_depth_exr(tmp_path / "d.exr"), depth)
