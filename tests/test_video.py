"""Tests for aerialmd.formats.video: writing, probing and extracting videos, and sorting image sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np
import pytest

from aerialmd.formats.video import (
    VideoError,
    _check_count,
    extract_frames,
    list_image_sequence,
    probe_video,
    write_video,
)

WIDTH, HEIGHT, N_FRAMES, FPS = 160, 96, 12, 30
MIN_PSNR = 28.0  # measured 31-36 dB at quality 95; raw limited-range planes (no range fix) give about 26 dB


def source_frames() -> list[np.ndarray]:
    """Frames that differ clearly from each other: a shifting colour gradient with the frame number on it."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for i in range(N_FRAMES):
        img = np.stack([(xx * 255 // WIDTH + 20 * i) % 256, yy * 255 // HEIGHT, np.full_like(xx, 20 * i)], -1)
        img = np.ascontiguousarray(img, dtype=np.uint8)
        cv2.putText(img, str(i), (40, 70), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        frames.append(img)
    return frames


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return source_frames()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(frames, path, FPS)
    return path


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def assert_frames_match(paths: list[Path], frames: list[np.ndarray]) -> None:
    """Each extracted image is closest to its own source frame, and close enough to it."""
    for i, path in enumerate(paths):
        psnr = [cv2.PSNR(read_rgb(path), source) for source in frames]
        assert int(np.argmax(psnr)) == i, f"{path.name} looks most like source frame {int(np.argmax(psnr))}"
        assert psnr[i] > MIN_PSNR, f"{path.name}: PSNR {psnr[i]:.1f} dB"


def test_probe_video(video: Path) -> None:
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (N_FRAMES, WIDTH, HEIGHT)
    assert info.fps == pytest.approx(FPS)


def test_extract_frames_names_count_and_order(video: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    paths = extract_frames(video, tmp_path / "footage", "clip", progress=False)
    assert paths == [tmp_path / "footage" / f"clip_{i:03d}.jpeg" for i in range(N_FRAMES)]
    assert sorted(p.name for p in (tmp_path / "footage").iterdir()) == [p.name for p in paths]
    assert_frames_match(paths, frames)


def test_extract_frames_pads_to_the_count(video: Path, tmp_path: Path) -> None:
    paths = extract_frames(video, tmp_path, "clip", first_index=995, workers=1, progress=False)
    assert [p.name for p in paths] == [f"clip_{i:04d}.jpeg" for i in range(995, 995 + N_FRAMES)]


def test_extract_frames_other_pixel_format_and_container(frames: list[np.ndarray], tmp_path: Path) -> None:
    """yuv444p goes through the RGB fallback; Matroska declares no frame count, so packets are counted."""
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    assert probe_video(path).frames is None
    paths = extract_frames(path, tmp_path / "footage", "clip", progress=False)
    assert_frames_match(paths, frames)


def damage_truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def damage_zero_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(1000) + data[middle + 1000:]


@pytest.mark.parametrize("damage", [damage_truncate, damage_zero_middle])
def test_damaged_video_raises_and_leaves_no_frames(video: Path, tmp_path: Path,
                                                 damage: Callable[[bytes], bytes]) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(damage(video.read_bytes()))
    with pytest.raises(VideoError, match="broken.mp4") as error:
        extract_frames(broken, tmp_path / "footage", "clip", progress=False)
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "footage").glob("*.jpeg"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="nothing.mp4.*not found"):
        extract_frames(tmp_path / "nothing.mp4", tmp_path / "footage", "clip", progress=False)
    with pytest.raises(VideoError, match="nothing.mp4"):
        probe_video(tmp_path / "nothing.mp4")


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(VideoError, match="notes.mp4"):
        extract_frames(path, tmp_path / "footage", "clip", progress=False)


def test_zero_frames_is_an_error(tmp_path: Path) -> None:
    """Containers with an empty video track do not even open (see test_not_a_video); the count check is the net."""
    with pytest.raises(VideoError, match="x.mp4: no frames"):
        _check_count(tmp_path / "x.mp4", decoded=0, expected=0)
    with pytest.raises(VideoError, match="truncated, decoded 5 of 12"):
        _check_count(tmp_path / "x.mp4", decoded=5, expected=12)


def test_write_video_rejects_odd_sizes_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video([np.zeros((47, 64, 3), np.uint8)], tmp_path / "odd.mp4", FPS)
    assert not list(tmp_path.iterdir())


def test_list_image_sequence_sorts_numerically(tmp_path: Path) -> None:
    names = ["x_1000.jpeg", "x_999.jpeg", "x_0998.jpeg", "x_1001.png", "my_scene_002.jpeg", "x_5.txt", "x_abc.jpeg"]
    for name in names:
        (tmp_path / name).touch()
    assert [p.name for p in list_image_sequence(tmp_path, "x")] == ["x_0998.jpeg", "x_999.jpeg", "x_1000.jpeg",
                                                                     "x_1001.png"]
    assert [p.name for p in list_image_sequence(tmp_path, "my_scene")] == ["my_scene_002.jpeg"]
    assert len(list_image_sequence(tmp_path)) == 5
