"""Benchmark of the plane-sweep MVS core: seconds per 640x480 reference with 5 sources, and peak memory.

Targets (issue): <= 15 s per reference with 5 sources on CPU, peak memory < 4 GB (`--sources 8`: the dense stage's
default, DenseConf.num_sources). Input: synthetic random-texture images from sideways-translated cameras; the cost of
the sweep does not depend on the content. By default the sweep is configured as the dense stage runs it
(aerialmd.stages.dense.DenseConf: fronto-parallel plus horizontal planes, semi-global smoothing, swept at half resolution and
refined at full resolution since 640 exceeds coarse_to_fine_above).
Usage: python bench/bench_mvs.py [--device cpu|cuda|auto] [--num-depths N] [--window W] [--fronto-only] [--no-smoothing]
                                 [--full-resolution] [--sources N]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from aerialmd.mvs.plane_sweep import (
    MVSView,
    PlaneFamily,
    coarse_to_fine_depth,
    geometric_offsets,
    plane_sweep_depth,
    resolve_device,
)
from aerialmd.stages.dense import DenseConf

WIDTH, HEIGHT, SOURCES = 640, 480, 5  # the benchmark setting


def synthetic_views(count: int) -> tuple[MVSView, list[MVSView]]:
    """A random-texture reference and `count` sources translated sideways."""
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0.0, (WIDTH - 1) / 2], [0.0, 500.0, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
    views = []
    for x in np.linspace(-1.0, 1.0, count + 1):
        pose = np.eye(4)
        pose[0, 3] = x
        views.append(MVSView(rng.random((HEIGHT, WIDTH, 3), dtype=np.float32), K, pose))
    return views[0], views[1:]


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-depths", type=int, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--fronto-only", action="store_true", help="no second plane family")
    parser.add_argument("--no-smoothing", action="store_true", help="winner-take-all on the raw cost volume")
    parser.add_argument("--full-resolution", action="store_true", help="sweep at full resolution (no coarse-to-fine)")
    parser.add_argument("--sources", type=int, default=SOURCES, help="source views (default: the issue's 5)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    stage = DenseConf()
    options = dict(num_depths=args.num_depths or stage.num_depths, window=args.window or stage.window)
    if stage.horizontal_planes and not args.fronto_only:  # a ground plane 10 m below, seen at 45 degrees
        normal = np.array([0.0, np.sqrt(0.5), np.sqrt(0.5)])
        options["extra_families"] = (PlaneFamily(normal, geometric_offsets(1.4, 36.0, options["num_depths"])),)
    if args.no_smoothing:
        options["smoothing"] = None
    ref, sources = synthetic_views(args.sources)
    before = peak_rss_gb()
    start = time.perf_counter()
    sweep = plane_sweep_depth if args.full_resolution else stage.depth_sweep(max(WIDTH, HEIGHT))
    sweep(ref, sources, 2.0, 50.0, device=device, **options)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    families = 1 + len(options.get("extra_families", ()))
    print(f"device {device}, {torch.get_num_threads()} threads, {WIDTH}x{HEIGHT}, {args.sources} sources, "
          f"{families} plane families x {options['num_depths']} planes, window {options['window']}, "
          f"smoothing {'off' if args.no_smoothing else 'on'}, "
          f"{'coarse-to-fine' if sweep is coarse_to_fine_depth else 'full-resolution sweep'}")
    print(f"seconds per reference: {seconds:.1f} (target <= 15)")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GB (target < 4)")
    print(f"peak process RSS: {peak_rss_gb():.2f} GB (before the sweep: {before:.2f} GB; target < 4)")


if __name__ == "__main__":
    main()
