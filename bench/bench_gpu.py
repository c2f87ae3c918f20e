"""Every stage on the sample, timed on one device, with accuracy against the sample's ground truth next to each time:
registration with SIFT and with ALIKED + LightGlue, depth with the torch backend and (when pycolmap has CUDA) the
colmap backend. Made to be run once on a GPU machine (one prepared call), and on a CPU with `--device cpu`.

Rules (issue #24): on one data-centre GPU the whole script finishes in under 8 minutes on the full sample, and the
dense stage's torch backend takes at most 0.5 s per 640 px image at the accuracy it has on the CPU.
Usage: python bench/bench_gpu.py [--device auto|cuda|cpu] [--sample_size full|tiny] [--root DIR]
                                 [--max_image_size 640] [--features sift aliked] [--backends torch colmap] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pycolmap
import torch

from aerialmd.layout import DataRoot
from aerialmd.mvs.plane_sweep import resolve_device
from aerialmd.run.pipeline import build_stages, run_stages, sample_pipeline
from aerialmd.sample_scene import SAMPLE_SIZES, SampleConfig, sample_paths
from aerialmd.sample_scene.evaluation import dense_accuracy, load_ground_truth, registration_accuracy
from aerialmd.stages.dense import DenseConf, dense_scene
from aerialmd.stages.localization import LocalizationConf, localize

SCRIPT_BUDGET_S = 480  # the whole script on one data-centre GPU, full sample
DENSE_BUDGET_S_PER_IMAGE = 0.5  # torch backend on CUDA, 640 px images


@dataclasses.dataclass
class Row:
    """One timed step: its name, seconds, images it handled and accuracy figures (already formatted)."""

    step: str
    seconds: float
    images: int
    accuracy: str

    def line(self) -> str:
        per_image = self.seconds / self.images if self.images else float("nan")
        return f"{self.step:<34} {self.seconds:9.1f} {per_image:9.2f}  {self.accuracy}"


def registration_row(paths, config: SampleConfig, conf: LocalizationConf, truth: dict) -> tuple[Row, Path | None]:
    """Stage 4a from scratch with `conf`; its row and its output folder (None when it failed)."""
    start = time.perf_counter()
    root = DataRoot(paths.data_root)
    code = localize(root.scenes, paths.megadepth_processed, paths.scene_list, conf=conf, overwrite=True)
    seconds = time.perf_counter() - start
    sfm_dir = root.scene(config.scene_id).sfm(conf.output_name())
    step = f"registration {conf.output_name()}"
    images = len(truth["images"])
    if code != 0:
        return Row(step, seconds, images, "FAILED"), None
    accuracy = registration_accuracy(pycolmap.Reconstruction(str(sfm_dir.localized_model)), truth)
    return Row(step, seconds, images,
               f"registered {accuracy['registered']}/{accuracy['total']}, median rotation "
               f"{accuracy.get('median_rotation_deg', float('nan')):.3f} deg, median position "
               f"{100 * accuracy.get('median_position_fraction', float('nan')):.3f} % extent"), sfm_dir.path


def dense_row(sfm_dir: Path, paths, config: SampleConfig, conf: DenseConf, truth_dir: Path) -> Row:
    """Stage 4b from scratch with `conf` on a registration's output; its row (accuracy per image kind)."""
    scene = DataRoot(paths.data_root).scene(config.scene_id)
    start = time.perf_counter()
    dense_scene(sfm_dir, scene.path, [paths.megadepth_processed / config.scene_id / "0"], conf, overwrite=True)
    seconds = time.perf_counter() - start
    dense = scene.sfm(sfm_dir.name).dense
    report = json.loads(dense.report.read_text())
    figures = dense_accuracy(dense.path, truth_dir)
    accuracy = "; ".join(f"{kind} coverage {f['coverage']:.3f} within 2 % {f['within_2pct']:.3f} off > 10 % "
                         f"{f['off_10pct']:.3f}" for kind, f in figures.items())
    timings = ", ".join(f"{name} {value:.1f} s" for name, value in report["timings"].items())
    return Row(f"dense {conf.backend}", seconds, report["summary"]["images"], f"{accuracy} ({timings})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when there), cuda, cpu")
    parser.add_argument("--sample_size", choices=sorted(SAMPLE_SIZES), default="full")
    parser.add_argument("--root", type=Path, default=None, help="the sample's folder (default: bench/_work/gpu_<size>)")
    parser.add_argument("--max_image_size", type=int, default=DenseConf.max_image_size, help="depth maps' long side")
    parser.add_argument("--features", nargs="+", default=["sift", "aliked"], choices=["sift", "aliked"])
    parser.add_argument("--backends", nargs="+", default=["torch", "colmap"], choices=["torch", "colmap"])
    parser.add_argument("--max_keypoints", type=int, default=None, help="ALIKED's keypoint budget (default: its own)")
    parser.add_argument("--resize_max", type=int, default=None, help="ALIKED's extraction size (default: full)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    device = str(resolve_device(args.device))
    config = SAMPLE_SIZES[args.sample_size]
    root = args.root or Path(__file__).resolve().parent / "_work" / f"gpu_{args.sample_size}"
    script_start = time.perf_counter()
    print(f"device {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}), torch "
          f"{torch.__version__}, pycolmap {pycolmap.__version__} (CUDA: {pycolmap.has_cuda}), sample {args.sample_size}")

    paths, create = sample_pipeline(root, config)
    inputs = [s for s in build_stages(paths, None, None, False) if s.name in ("preprocess_ge", "preprocess_megadepth")]
    start = time.perf_counter()
    if any(r.exit_code for r in run_stages([create, *inputs])):
        sys.exit("the sample or its preprocessing failed; see above")
    truth_dir = sample_paths(root, config).ground_truth_dir
    truth = load_ground_truth(truth_dir)
    rows = [Row("sample and stages 2-3", time.perf_counter() - start, len(truth["images"]), "(inputs)")]

    sfm_dirs = {}
    for features in args.features:
        extra = dict(max_keypoints=args.max_keypoints, resize_max=args.resize_max) if features == "aliked" else {}
        row, sfm_dir = registration_row(paths, config, LocalizationConf(features=features, device=device, **extra),
                                        truth)
        rows.append(row)
        sfm_dirs[features] = sfm_dir
    sfm_dir = next((d for d in sfm_dirs.values() if d is not None), None)
    for backend in args.backends:
        if sfm_dir is None:
            rows.append(Row(f"dense {backend}", 0.0, 0, "skipped: no registration succeeded"))
        elif backend == "colmap" and not pycolmap.has_cuda:
            rows.append(Row("dense colmap", 0.0, 0, "skipped: pycolmap without CUDA"))
        else:
            conf = DenseConf(backend=backend, device=device, max_image_size=args.max_image_size)
            rows.append(dense_row(sfm_dir, paths, config, conf, truth_dir))

    total = time.perf_counter() - script_start
    print(f"\n{'step':<34} {'seconds':>9} {'s/image':>9}  accuracy against the ground truth")
    for row in rows:
        print(row.line())
    print(f"whole script {total:.0f} s (rule on a data-centre GPU, full sample: under {SCRIPT_BUDGET_S} s); dense "
          f"torch rule on CUDA: at most {DENSE_BUDGET_S_PER_IMAGE} s per {DenseConf.max_image_size} px image")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "sample": args.sample_size, "total_seconds": total,
                                         "rows": [dataclasses.asdict(r) for r in rows]}, indent=1))
    return 0 if all(r.accuracy != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
