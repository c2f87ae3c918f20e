"""Benchmark of the dense stage (MVS) on the default sample scene: depth accuracy against the ground truth per image
kind next to the issue's targets, agreement with the scaled MegaDepth depth, seconds per image.

Targets (issue): per kind at least 70 % of the true-valid pixels with a depth, of those at least 90 % within 2 % and
under 3 % off by more than 10 %; MegaDepth-vs-MVS median relative difference under 3 %.
Runs registration first when needed (sample under --root, default ./sample_data, shared with run_pipeline.py).
Usage: python bench/bench_dense.py [--root sample_data] [--max_image_size 640] [--horizontal_planes on|off]
                                   [--num_ground 16]
(--max_image_size defaults to the stage's, DenseConf.max_image_size; the tests run the tiny sample at 320.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aerialmd.dense import DENSE_DIR, DenseConf, dense_scene  # noqa: E402
from aerialmd.evaluation import dense_accuracy  # noqa: E402
from aerialmd.pipeline import build_stages, run_stages, sample_pipeline  # noqa: E402
from aerialmd.sample_scene import SampleConfig  # noqa: E402

TARGETS = dict(coverage=0.70, within_2pct=0.90, off_10pct=0.03)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("sample_data"))
    parser.add_argument("--max_image_size", type=int, default=DenseConf.max_image_size)
    parser.add_argument("--horizontal_planes", choices=["on", "off"], default="on")
    parser.add_argument("--num_ground", type=int, default=SampleConfig.num_ground,
                        help="ground photos in the sample (MegaDepth scenes have hundreds; use another --root)")
    args = parser.parse_args()
    config = SampleConfig(num_ground=args.num_ground)
    paths, create = sample_pipeline(args.root, config)
    registration = [s for s in build_stages(paths, None, None, False) if s.name not in ("dense", "report")]
    if any(r.exit_code for r in run_stages([create, *registration])):
        sys.exit("registration failed; see above")
    sfm_dir = paths.data_root / "data" / config.scene_id / "sfm_output_localization" / "sfm_sift+nn-ratio"
    conf = DenseConf(backend="torch", max_image_size=args.max_image_size,
                     horizontal_planes=args.horizontal_planes == "on")
    start = time.perf_counter()
    dense_scene(sfm_dir, paths.data_root / "data" / config.scene_id,
                [paths.megadepth_processed / config.scene_id / "0"], conf, overwrite=True)
    seconds = time.perf_counter() - start
    report = json.loads((sfm_dir / DENSE_DIR / "dense.json").read_text())
    figures = dense_accuracy(sfm_dir / DENSE_DIR, args.root / "ground_truth" / config.scene_id)
    print(f"settings: {conf.settings()}")
    print(f"{'kind':<8} {'images':>6} {'coverage':>9} {'within 2%':>10} {'off >10%':>9}   targets: "
          f">= {TARGETS['coverage']}, >= {TARGETS['within_2pct']}, < {TARGETS['off_10pct']}")
    for kind, f in figures.items():
        print(f"{kind:<8} {f['images']:>6} {f['coverage']:>9.3f} {f['within_2pct']:>10.3f} {f['off_10pct']:>9.3f}")
    agreement = report["summary"]["megadepth_median_rel_diff"]
    print(f"MegaDepth vs MVS median relative difference: {agreement:.4f} (target < 0.03) over "
          f"{report['summary']['megadepth_photos_compared']} photos")
    images = report["summary"]["images"]
    print(f"dense stage: {seconds:.0f} s for {images} images = {seconds / images:.1f} s per image "
          f"(undistortion {report['timings']['undistortion']:.1f} s, MVS {report['timings']['mvs']:.0f} s)")


if __name__ == "__main__":
    main()
