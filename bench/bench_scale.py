"""Benchmark: how the cost of each step of registration (stage 4a) and the dense stage (4b) grows with the scene.

    python bench/bench_scale.py [--root scale_data] [--photos 32] [--frames 32] [--factors 1 2 4] [--depth_size 240]

One town of the sample family (SEED, photos from a few popular spots, the appearance gap on) is made with N, 2N and 4N
images: the photos and every orbit's frames multiplied by each factor (images of the small family size, 480 px). Each
scene is generated under --root if needed, preprocessed (stages 2-3), registered and densified from scratch with the
defaults but for the depth maps' size (--depth_size: small, so that it runs on 2 cores). One table: per step the
seconds per image (stage 4a: per frame and photo; stage 4b: per depth map) and the peak resident memory of the process
at each size (the stages' own records: timings.json and peak_memory.json of stage 4a, dense.json of stage 4b), then the
ratio of seconds per image between the largest and the smallest scene. Rule (issue #24): every step within 1.5x
between N and 4N, that is no step grows faster than about N log N. Run it on an otherwise idle machine: the figures are
seconds. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from aerialmd.layout import DataRoot
from aerialmd.sample_scene import generate_sample
from aerialmd.sample_scene.family import family_config
from aerialmd.sample_scene.generate import SampleConfig
from aerialmd.stages.dense import DenseConf, densify
from aerialmd.stages.localization import LocalizationConf, localize
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth

SEED = 3  # the town (small0003 of bench_sweep.py, whose photos all register): chosen once
MAX_GROWTH = 1.5  # seconds per image at 4N over N, each step


def scaled_config(base: SampleConfig, factor: int, photos: int, frames: int) -> SampleConfig:
    """The town of `base` with `factor` x `photos` photos and `factor` x `frames` frames (shared by its orbits as in
    base)."""
    shares = [orbit.frames for orbit in base.orbits]
    total = factor * frames
    counts = [total * share // sum(shares) for share in shares]
    counts[0] += total - sum(counts)
    orbits = tuple(dataclasses.replace(orbit, frames=count) for orbit, count in zip(base.orbits, counts))
    return dataclasses.replace(base, scene_id=f"scale{factor}x", orbits=orbits, num_ground=factor * photos)


def run_scene(root: Path, config: SampleConfig, dense_conf: DenseConf) -> dict:
    """Generate (or reuse) the scene, run stages 2-4b on it from scratch; its steps' seconds and peak memory."""
    sample = generate_sample(root / config.scene_id, config)
    preprocess_ge(sample.root, sample.scene_list)
    processed = sample.root / "megadepth_processed"
    preprocess_megadepth(sample.megadepth_root, sample.scene_list, processed)
    conf = LocalizationConf()
    data = DataRoot(sample.root)
    if localize(data.scenes, processed, sample.scene_list, conf=conf, overwrite=True) != 0:
        raise RuntimeError(f"{config.scene_id}: registration failed")
    if densify(data.scenes, processed, sample.scene_list, conf=dense_conf, overwrite=True) != 0:
        raise RuntimeError(f"{config.scene_id}: dense stage failed")
    sfm = data.scene(config.scene_id).sfm(conf.output_name())
    dense = json.loads(sfm.dense.report.read_text())
    images, maps = config.num_frames + config.num_ground, dense["summary"]["images"]
    per_image = {f"4a {name}": seconds / images for name, seconds in json.loads(sfm.timings.read_text()).items()}
    per_image.update({f"4b {name}": seconds / maps for name, seconds in dense["timings"].items()})
    memory = {f"4a {name}": mb for name, mb in json.loads(sfm.peak_memory.read_text()).items()}
    memory.update({f"4b {name}": mb for name, mb in dense["peak_rss_mb"].items()})
    registration = json.loads(sfm.registration.read_text())["counts"]
    return {"scene": config.scene_id, "images": images, "frames": config.num_frames, "photos": config.num_ground,
            "registered": registration["registered"], "seconds_per_image": per_image, "peak_rss_mb": memory,
            "depth_maps": maps}


def growth(rows: list[dict], step: str) -> float:
    """Seconds per image of `step` in the largest scene over the smallest."""
    return rows[-1]["seconds_per_image"][step] / rows[0]["seconds_per_image"][step]


def print_table(rows: list[dict]) -> list[str]:
    """The table; returns the steps that grew more than MAX_GROWTH."""
    print()
    for row in rows:
        print(f"{row['scene']}: {row['frames']} frames + {row['photos']} photos, {row['registered']} registered, "
              f"{row['depth_maps']} depth maps")
    header = f"{'step':<18}" + "".join(f"{'s/img ' + r['scene']:>17}{'MB':>7}" for r in rows) + f"{'growth':>8}"
    print("\n" + header)
    slow = []
    for step in rows[0]["seconds_per_image"]:
        cells = "".join(f"{r['seconds_per_image'].get(step, float('nan')):17.4f}"
                        f"{r['peak_rss_mb'].get(step, float('nan')):7.0f}" for r in rows)
        ratio = growth(rows, step)
        verdict = "" if ratio <= MAX_GROWTH else "  FAIL"
        print(f"{step:<18}{cells}{ratio:8.2f}{verdict}")
        if ratio > MAX_GROWTH:
            slow.append(step)
    totals = [sum(r["seconds_per_image"].values()) for r in rows]
    print(f"{'all steps':<18}" + "".join(f"{t:17.4f}{'':>7}" for t in totals) + f"{totals[-1] / totals[0]:8.2f}")
    return slow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("scale_data"))
    parser.add_argument("--photos", type=int, default=32, help="photos of the smallest scene")
    parser.add_argument("--frames", type=int, default=32, help="aerial frames of the smallest scene")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--depth_size", type=int, default=240, help="long side of the depth maps")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    base = family_config(SEED, "small", "spots", gap=True)
    dense_conf = DenseConf(backend="torch", max_image_size=args.depth_size)
    rows = [run_scene(args.root, scaled_config(base, f, args.photos, args.frames), dense_conf)
            for f in sorted(args.factors)]
    slow = print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nevery step within {MAX_GROWTH}x per image between N and {rows[-1]['images'] / rows[0]['images']:.0f}N: "
          + ("PASS" if not slow else f"FAIL ({', '.join(slow)})"))
    return 0 if not slow else 1


if __name__ == "__main__":
    sys.exit(main())
