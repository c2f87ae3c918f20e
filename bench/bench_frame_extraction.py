"""Benchmark: video -> JPEG image sequence, our extract_frames against the plain OpenCV loop and decode-only speed.

    python bench/bench_frame_extraction.py [--frames N] [--workdir DIR] [--repeats R] [--quality Q] [--video MP4]

Two 1920x1080 H.264 test videos are made once and cached in the work folder: a camera panning, zooming and turning
over a large synthetic aerial map (moderate bitrate), and, when ../shared/data is present, the 61 real GESblender
Google Earth Studio frames played back and forth at high quality (crf 16, about 110 Mbit/s). The second is the
representative one: on it the plain loop runs at about 30 frames/s with about 80% of its CPU time in decoding, the
figures measured on a real 1080p GES render. --video measures given files instead. Every method then runs on that same file, interleaved, R times; the best wall
time of each is kept because the machine is shared and noisy. CPU time per frame is printed too: it is much less
sensitive to other load and shows how much work each method really does.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

from aerialmd.formats.video import extract_frames, probe_video, write_video

WIDTH, HEIGHT, FPS = 1920, 1080, 30
REAL_FOOTAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ges_gesblender_local" / "footage"
REAL_CRF = 16
TARGET_SPEEDUP = 1.3  # ours vs the plain loop, at least
TARGET_DECODE_RATIO = 1.2  # our time vs the fastest decode-only time, at most
PLAIN, OURS, DECODE = "plain loop: cv2.VideoCapture + cv2.imwrite", "ours: extract_frames", "decode only: "


@dataclass
class Timing:
    frames: int
    wall: float
    cpu: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu / self.frames


def aerial_map(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A large RGB image that looks roughly like a satellite map: land-cover patches with fine texture,
    buildings (outlined boxes) and roads (anti-aliased lines), so the encoder sees edges as well as grain."""
    def smooth_noise(cells_x: int) -> np.ndarray:
        cells = rng.random((max(2, height * cells_x // width), cells_x), dtype=np.float32)
        return cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)

    palette = np.array([[60, 90, 50], [110, 120, 70], [150, 135, 105], [90, 85, 80]], np.float32)
    land = palette[np.clip((smooth_noise(6) * 4).astype(int), 0, 3)]
    grain = 0.5 * smooth_noise(64) + 0.3 * smooth_noise(400) + 0.2 * rng.random((height, width), dtype=np.float32)
    img = np.clip(land * (0.6 + 0.8 * grain[..., None]), 0, 255).astype(np.uint8)
    n_buildings = height * width // 6000
    corners = rng.integers(0, [width, height], (n_buildings, 2))
    sizes = rng.integers(8, 60, (n_buildings, 2))
    roofs = rng.integers(70, 220, (n_buildings, 1)) + rng.integers(-25, 25, (n_buildings, 3))
    for corner, size, roof in zip(corners.tolist(), sizes.tolist(), roofs.tolist()):
        far = (corner[0] + size[0], corner[1] + size[1])
        cv2.rectangle(img, corner, far, roof, -1)
        cv2.rectangle(img, corner, far, (30, 30, 30), 2)
    for _ in range(height * width // 200000):
        ends = rng.integers(0, [width, height], (2, 2)).tolist()
        cv2.line(img, ends[0], ends[1], (200, 200, 190), int(rng.integers(4, 14)), cv2.LINE_AA)
    return img


def flyover(world: np.ndarray, n_frames: int) -> Iterator[np.ndarray]:
    """Frames of a camera that pans across `world` while slowly zooming in and turning."""
    for i in range(n_frames):
        s = i / max(1, n_frames - 1)
        cx, cy = 1500 + 2000 * s, 1200 + 500 * np.sin(3 * s)
        warp = cv2.getRotationMatrix2D((cx, cy), 10 * s, 1.0 + 0.6 * s)
        warp[:, 2] += (WIDTH / 2 - cx, HEIGHT / 2 - cy)
        yield cv2.warpAffine(world, warp, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)


def test_video(workdir: Path, n_frames: int) -> Path:
    """The cached synthetic test video, made on first use."""
    path = workdir / f"aerial_{WIDTH}x{HEIGHT}_{n_frames}f.mp4"
    if not path.is_file():
        print(f"making {path} ({n_frames} frames) ...", flush=True)
        world = aerial_map(3000, 5000, np.random.default_rng(0))
        write_video(flyover(world, n_frames), path, FPS)
    return path


def real_ges_video(workdir: Path, n_frames: int) -> Path | None:
    """The cached video of real GES frames (forth and back), or None without ../shared/data."""
    footage = sorted(REAL_FOOTAGE.glob("GESblender_*.jpeg"))
    if not footage:
        return None
    path = workdir / f"gesblender_{n_frames}f_crf{REAL_CRF}.mp4"
    if not path.is_file():
        print(f"making {path} ({n_frames} frames) ...", flush=True)
        order = (footage + footage[::-1]) * (n_frames // (2 * len(footage)) + 1)
        frames = (cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in order[:n_frames])
        write_video(frames, path, FPS, crf=REAL_CRF)
    return path


def timed(run: Callable[[], int]) -> Timing:
    """Wall and process CPU time (all threads) of run(), which returns the number of frames it handled."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    frames = run()
    wall = time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Timing(frames, wall, usage.ru_utime + usage.ru_stime - cpu0)


def cv2_frames(video: Path) -> Iterator[np.ndarray]:
    """BGR frames from cv2.VideoCapture (OpenCV's FFmpeg backend with its default threading)."""
    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise SystemExit(f"{video}: cv2.VideoCapture cannot open it (OpenCV built without FFmpeg?)")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def plain_loop(video: Path, out_dir: Path, quality: int) -> int:
    """The straightforward way: cv2.VideoCapture.read then cv2.imwrite, one frame after the other."""
    out_dir.mkdir(parents=True)
    count = 0
    for count, frame in enumerate(cv2_frames(video), start=1):
        cv2.imwrite(str(out_dir / f"frame_{count - 1:03d}.jpeg"), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return count


def decode_cv2(video: Path) -> int:
    """Decode-only: cv2.VideoCapture.read (includes its YUV -> BGR conversion, as the plain loop uses it)."""
    return sum(1 for _ in cv2_frames(video))


def decode_pyav(video: Path, thread_type: str, thread_count: int) -> int:
    """Decode-only: PyAV frames left in the decoder's YUV format, as extract_frames uses them."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = thread_type, thread_count
        return sum(1 for _ in container.decode(stream))


def ours(video: Path, out_dir: Path, quality: int) -> int:
    """aerialmd.formats.video.extract_frames with its defaults."""
    return len(extract_frames(video, out_dir, "frame", quality=quality, progress=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames in the test video (default 300: 10 s)")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_work")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best is kept")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality, the same for every method")
    parser.add_argument("--video", type=Path, nargs="+", help="measure these videos (e.g. real GES renders) instead")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    videos = args.video or [v for v in (test_video(args.workdir, args.frames), real_ges_video(args.workdir, args.frames)) if v]
    for video in videos:
        benchmark(video, args)


def benchmark(video: Path, args: argparse.Namespace) -> None:
    """Measure every method on one video, interleaved, and print the table and ratios."""
    info = probe_video(video)
    print(f"video: {video} ({info.width}x{info.height}, {info.frames} frames, {info.fps:g} fps, "
          f"{video.stat().st_size / 1e6:.1f} MB); {os.cpu_count()} CPUs; JPEG quality {args.quality} for both "
          f"the plain loop and ours; best of {args.repeats}")
    out_plain, out_ours = args.workdir / "plain_loop", args.workdir / "ours"
    methods: dict[str, Callable[[], int]] = {
        PLAIN: lambda: plain_loop(video, out_plain, args.quality),
        DECODE + "cv2.VideoCapture.read (BGR)": lambda: decode_cv2(video),
        DECODE + "PyAV 1 thread (YUV)": lambda: decode_pyav(video, "SLICE", 1),
        DECODE + "PyAV frame threads AUTO (YUV)": lambda: decode_pyav(video, "AUTO", 0),
        OURS: lambda: ours(video, out_ours, args.quality),
    }
    best: dict[str, Timing] = {}
    for _ in range(args.repeats):
        for name, run in methods.items():
            remove_outputs(out_plain, out_ours)
            timing = timed(run)
            if timing.frames != info.frames:
                raise SystemExit(f"{name}: {timing.frames} frames, expected {info.frames}")
            if name not in best or timing.wall < best[name].wall:
                best[name] = timing
    remove_outputs(out_plain, out_ours)  # hundreds of MB of JPEGs; the test video stays cached
    report(best)


def remove_outputs(*folders: Path) -> None:
    """Delete extracted frames, so every run writes new files into an empty folder."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def report(best: dict[str, Timing]) -> None:
    """Print the table and the two PASS/FAIL ratios."""
    print(f"\n{'method':<46} {'frames/s':>9} {'CPU ms/frame':>13}")
    for name, timing in best.items():
        print(f"{name:<46} {timing.fps:>9.1f} {timing.cpu_ms_per_frame:>13.2f}")
    plain, ours_t = best[PLAIN], best[OURS]
    fastest_name = min((name for name in best if name.startswith(DECODE)), key=lambda name: best[name].wall)
    fastest = best[fastest_name]
    speedup, decode_ratio = plain.wall / ours_t.wall, ours_t.wall / fastest.wall
    print(f"\nours vs plain loop: {speedup:.2f}x faster (target >= {TARGET_SPEEDUP}x) "
          f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'}")
    print(f"ours vs fastest decode-only ({fastest_name.removeprefix(DECODE)}): {decode_ratio:.2f}x the time "
          f"(target <= {TARGET_DECODE_RATIO}x) {'PASS' if decode_ratio <= TARGET_DECODE_RATIO else 'FAIL'}")
    cores = os.cpu_count() or 1
    floor_ms, fastest_ms = ours_t.cpu_ms_per_frame / cores, 1000 * fastest.wall / fastest.frames
    print(f"CPU floor for ours: {ours_t.cpu_ms_per_frame:.2f} CPU ms/frame over {cores} cores = {floor_ms:.2f} "
          f"ms/frame at best, {floor_ms / fastest_ms:.2f}x the fastest decode-only time ({fastest_ms:.2f} ms/frame)")


if __name__ == "__main__":
    main()
