"""Video I/O: write H.264 mp4 files and turn a video into a numbered JPEG image sequence.

Google Earth Studio renders either an mp4 or an image sequence `<name>_000.jpeg, <name>_001.jpeg, ...`;
the pipeline works on image sequences, so a rendered video is extracted into that same layout.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np
import simplejpeg
from tqdm import tqdm

from aerialmd.atomic import atomic_file

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

# Decoder threading, chosen by measurement (bench/bench_frame_extraction.py: 1920x1080 H.264 High, 300 frames,
# 2 cores, shared machine, best of 3). Decode only: PyAV single thread 142 frames/s (7.0 CPU ms/frame), PyAV frame
# threads (AUTO) 203/s (7.9 CPU ms/frame), cv2.VideoCapture 157/s (9.6 CPU ms/frame, includes its YUV -> BGR
# conversion), so PyAV it is. Full extraction at JPEG quality 95, decoder setup x encoder threads: single thread x1
# 121-122/s, x2 117-123/s, AUTO x2 118-124/s, FRAME(2) x2 114-120/s, AUTO x3 110-119/s: all within noise, because
# encoding (~7.5 CPU ms/frame) costs as much as decoding, so both cores are saturated whatever the split. We use
# AUTO (frame threads; ffmpeg picks the count) with one encoder thread per core: as fast here, and the only setup
# that also scales when decoding is the bottleneck (more cores, lower JPEG quality, higher-bitrate video).
DECODER_THREAD_TYPE = "AUTO"
DECODER_THREAD_COUNT = 0

# JPEG stores full-range BT.601 YCbCr. Limited-range ("MPEG", the H.264 default) 8-bit planes are stretched with
# these lookup tables, which is far cheaper than a YUV -> RGB -> YUV round trip.
_LEVELS = np.arange(256, dtype=np.float32)
_LUMA_TO_FULL = np.clip(np.round((_LEVELS - 16) * 255 / 219), 0, 255).astype(np.uint8)
_CHROMA_TO_FULL = np.clip(np.round((_LEVELS - 128) * 255 / 224 + 128), 0, 255).astype(np.uint8)
# AVFrame.colorspace values (AVColorSpace) whose matrix is BT.601; swscale, and so OpenCV and PyAV, also convert
# UNSPECIFIED as BT.601.
_BT601_COLORSPACES = {2, 5, 6}  # AVCOL_SPC_UNSPECIFIED, AVCOL_SPC_BT470BG, AVCOL_SPC_SMPTE170M


class VideoError(RuntimeError):
    """A video file is missing, unreadable, truncated or empty."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    frames: int | None  # from the container header; None when it does not declare a count
    width: int
    height: int
    fps: float


def write_video(frames: Iterable[np.ndarray], path: Path | str, fps: float, crf: int = 18) -> None:
    """Encode RGB uint8 frames (all the same even size) as an H.264 yuv420p mp4, written atomically.

    The moov index goes first (faststart), as in web-delivered renders: a file cut short then still opens and the
    missing frames are detected by extract_frames.
    """
    path = Path(path)
    with atomic_file(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.pix_fmt = "yuv420p"
            # One x264 thread: x264 with frame threads gave different bytes for the same frames on some runs, and the
            # sample scene must be reproducible. It also yields one slice per frame, like real renders.
            stream.options = {"crf": str(crf), "threads": "1"}
            count = 0
            for frame in frames:
                if count == 0:
                    stream.width, stream.height = _check_frame_size(frame, path)
                elif frame.shape[:2] != (stream.height, stream.width):
                    raise ValueError(f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"expected {stream.width}x{stream.height}")
                video_frame = _yuv420_frame(frame)
                video_frame.pts = count  # explicit timestamps: x264's rate control reads them
                container.mux(stream.encode(video_frame))
                count += 1
            if count == 0:
                raise ValueError(f"{path}: no frames to write")
            container.mux(stream.encode())


def _yuv420_frame(rgb: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame (BT.601, limited range, as decoders assume for untagged video) converted by OpenCV.

    Converting here rather than handing rgb24 to PyAV keeps encoding reproducible: swscale's conversion of the same
    rgb24 frames gave different bytes from run to run (it reads the frame's uninitialised row padding)."""
    return av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")


def _check_frame_size(frame: np.ndarray, path: Path) -> tuple[int, int]:
    """(width, height) of an RGB uint8 frame; yuv420p needs both even."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{path}: frames must be HxWx3 uint8 RGB, got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"{path}: frame size {width}x{height} must be even for yuv420p")
    return width, height


def probe_video(path: Path | str) -> VideoInfo:
    """Frame count, size and frame rate of the first video stream, read from the container without decoding."""
    path = Path(path)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(frames=stream.frames or None, width=stream.width, height=stream.height,
                         fps=float(rate) if rate else 0.0)


def _open_video(path: Path) -> av.container.InputContainer:
    """Open a file that has a video stream, or raise a one-line VideoError."""
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc.strerror or exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def frame_name(prefix: str, index: int, digits: int = 3) -> str:
    """Google Earth Studio's image-sequence file name, e.g. `<prefix>_007.jpeg`."""
    return f"{prefix}_{index:0{digits}d}.jpeg"


def extract_frames(video_path: Path | str, out_dir: Path | str, prefix: str, quality: int = 95, first_index: int = 0,
                   workers: int | None = None, progress: bool = True) -> list[Path]:
    """Decode the video once and write every frame as `out_dir/<prefix>_NNN.jpeg`; returns the paths in order.

    Numbers start at first_index, zero-padded to 3 digits or more when the count needs it. The decoder thread
    hands frames to `workers` JPEG-encoding threads (at most 2 x workers frames in flight, so memory stays
    bounded). A missing, unreadable, truncated or empty video raises VideoError and leaves no frames behind.
    """
    video_path, out_dir = Path(video_path), Path(out_dir)
    workers = workers or os.cpu_count() or 1
    with _open_video(video_path) as container:
        stream = container.streams.video[0]
        expected = stream.frames or _count_packets(video_path, stream.index)
        digits = max(3, len(str(first_index + expected - 1)))
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="jpeg") as pool:
                pending: collections.deque[Future] = collections.deque()
                frames = _decode(container, stream, video_path)
                for index, frame in enumerate(tqdm(frames, total=expected, disable=not progress, unit="frame",
                                                   desc=video_path.name), start=first_index):
                    written.append(out_dir / frame_name(prefix, index, digits))
                    pending.append(pool.submit(_write_jpeg, frame, written[-1], quality))
                    if len(pending) > 2 * workers:
                        pending.popleft().result()
                for job in pending:
                    job.result()
            _check_count(video_path, len(written), expected)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
    return written


def _count_packets(path: Path, stream_index: int) -> int:
    """Frames of a stream whose container declares no count, by demuxing (reading packets, no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as exc:
            raise VideoError(f"{path}: unreadable packets ({exc.strerror or exc})") from exc


def _decode(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> Iterator[av.VideoFrame]:
    """Yield decoded frames; decoder errors and corrupt frames become a VideoError naming the file."""
    stream.thread_type = DECODER_THREAD_TYPE
    stream.thread_count = DECODER_THREAD_COUNT
    index = 0
    try:
        for frame in container.decode(stream):
            if frame.is_corrupt:  # the decoder concealed damage; the image would be silently wrong
                raise VideoError(f"{path}: frame {index} is corrupt (damaged or truncated file)")
            yield frame
            index += 1
    except av.FFmpegError as exc:
        reason = exc.strerror or exc
        raise VideoError(f"{path}: damaged or truncated, decoding failed after {index} frames ({reason})") from exc


def _check_count(path: Path, decoded: int, expected: int) -> None:
    """A video that decodes to no frames, or to fewer than it declares, is empty or truncated."""
    if decoded == 0:
        raise VideoError(f"{path}: no frames could be decoded")
    if decoded < expected:
        raise VideoError(f"{path}: truncated, decoded {decoded} of {expected} frames")


def _write_jpeg(frame: av.VideoFrame, path: Path, quality: int) -> None:
    """Encode one decoded frame to JPEG and write it."""
    path.write_bytes(_encode_jpeg(frame, quality))


def _encode_jpeg(frame: av.VideoFrame, quality: int) -> bytes:
    """JPEG bytes of a frame, straight from its YUV 4:2:0 planes when their colour matrix is JPEG's (BT.601)."""
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.colorspace in _BT601_COLORSPACES:
        y, u, v = (_plane_array(plane) for plane in frame.planes)
        if frame.format.name == "yuv420p" and frame.color_range != av.video.reformatter.ColorRange.JPEG:
            y, u, v = cv2.LUT(y, _LUMA_TO_FULL), cv2.LUT(u, _CHROMA_TO_FULL), cv2.LUT(v, _CHROMA_TO_FULL)
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
    rgb = frame.to_ndarray(format="rgb24")  # swscale converts any other format / colour matrix
    return simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB", colorsubsampling="420")


def _plane_array(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A zero-copy HxW uint8 view of an 8-bit plane (rows may be padded to line_size)."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def list_image_sequence(footage_dir: Path | str, prefix: str | None = None) -> list[Path]:
    """JPEG/PNG frames `<prefix>_<number>.<ext>` in a folder, sorted by frame number (x_999 before x_1000)."""
    footage_dir = Path(footage_dir)
    if not footage_dir.is_dir():
        raise FileNotFoundError(f"{footage_dir}: footage folder not found")
    pattern = re.compile(rf"^({re.escape(prefix) if prefix is not None else '.+'})_(\d+)$")
    frames = []
    for path in footage_dir.iterdir():
        match = pattern.match(path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            frames.append((match.group(1), int(match.group(2)), path))
    return [path for _, _, path in sorted(frames)]
