"""Benchmark of the stage 5 export: images/s of a single-threaded loop against the worker pool, in one run.

Target (issue): with 2 workers on 2 cores, at least 1.5x the single-threaded loop. Input: a synthetic dense model
(`localized_dense_metric` layout, written with aerialmd.formats.dense_model.write_dense_model) of N aerial-sized images with
random smooth depth (some beyond the 2000 m cut) and JPEG photos, and a pair file naming every image. Both modes run the
same exporter (aerialmd.stages.export.export_aerialmegadepth) with --overwrite: --workers 1 works in this process, a plain
loop over the images; --workers N uses N worker processes. The modes alternate and the best of the repeats counts.
Usage: python bench/bench_export.py [--images 40] [--size 1920x1080] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would dominate the output

import cv2
import numpy as np

from aerialmd.formats.dense_model import DenseView, build_sparse_model, write_dense_model
from aerialmd.geometry.camera import intrinsics_matrix
from aerialmd.layout import DENSE_DIR, LOCALIZATION_DIR
from aerialmd.stages.export import PairFile, export_aerialmegadepth, save_pair_file

WORK = Path(__file__).resolve().parent / "_work" / "export"
SCENE = "9999"


def smooth_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random field in [0, 1] (coarse noise upsampled), like natural depth or image content."""
    coarse = rng.random((height // 60 + 2, width // 60 + 2)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def synthetic_scene(root: Path, count: int, width: int, height: int) -> Path:
    """Write (once) a dense model of `count` images and a pair file naming all of them; returns the pair file."""
    pairs_path = root / "pairs.npz"
    dense_dir = root / "data" / SCENE / LOCALIZATION_DIR / "sfm_bench" / DENSE_DIR
    tag = f"{count}x{width}x{height}"
    if pairs_path.is_file() and (root / "tag.txt").is_file() and (root / "tag.txt").read_text() == tag:
        return pairs_path
    rng = np.random.default_rng(0)
    K = intrinsics_matrix(0.9 * width, 0.9 * width, (width - 1) / 2, (height - 1) / 2)
    views, images, depths = [], {}, {}
    for i in range(count):
        name = f"{SCENE}_{i:03d}.jpeg"
        pose = np.eye(4)
        pose[:3, 3] = [i * 2.0, 0.0, 0.0]
        views.append(DenseView(name, width, height, K, pose))
        depth = 50.0 + 2500.0 * smooth_field(rng, width, height) ** 3
        depth[smooth_field(rng, width, height) > 0.8] = 0.0  # invalid patches
        depths[name] = depth.astype(np.float32)
        texture = (255 * smooth_field(rng, width, height)).astype(np.uint8)
        noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
        images[name] = cv2.add(np.dstack([texture] * 3), noise)
    write_dense_model(dense_dir, build_sparse_model(views), images, depths, overwrite=True)
    names = [v.name for v in views]
    rows = [(0, i, i + 1, 0.3) for i in range(count - 1)]
    save_pair_file(pairs_path, PairFile.from_rows([SCENE], names, [SCENE] * count, rows))
    (root / "tag.txt").write_text(tag)
    return pairs_path


def run_export(root: Path, pairs_path: Path, workers: int) -> float:
    """Seconds to export every image (overwrite), the exporter's printout swallowed."""
    out = root / f"out_w{workers}"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = export_aerialmegadepth(root / "data", pairs_path, out, workers=workers, overwrite=True)
    seconds = time.perf_counter() - start
    if code != 0 or len(list((out / SCENE).glob("*.exr"))) == 0:
        raise RuntimeError("export failed")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", default="1920x1080", help="WxH (default: %(default)s, GES frames)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    pairs_path = synthetic_scene(WORK, args.images, width, height)
    loop, pool = [], []
    for _ in range(args.repeats):
        loop.append(run_export(WORK, pairs_path, 1))
        pool.append(run_export(WORK, pairs_path, args.workers))
    loop_rate, pool_rate = args.images / min(loop), args.images / min(pool)
    print(f"{args.images} images {width}x{height}, {os.cpu_count()} cores, best of {args.repeats} (alternating runs)")
    print(f"single-threaded loop (--workers 1): {loop_rate:6.1f} images/s  runs {', '.join(f'{s:.2f}' for s in loop)} s")
    print(f"process pool (--workers {args.workers}):     {pool_rate:6.1f} images/s  "
          f"runs {', '.join(f'{s:.2f}' for s in pool)} s")
    print(f"ratio: {pool_rate / loop_rate:.2f}x (target >= 1.5x on 2 cores)")


if __name__ == "__main__":
    main()
