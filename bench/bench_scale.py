"""Benchmark: how the cost of each step of registration (stage 4a) and the dense stage (4b) grows with the scene.

    python bench/bench_scale.py [--root scale_data] [--photos 32] [--frames 32] [--factors 1 2 4] [--depth_size 240]
                                [--registration_only]

One town of the sample family (SEED, photos from a few popular spots, the appearance gap on) is made once with the
largest number of images: the photos and every orbit's frames multiplied by the largest factor (images of the small
family size, 480 px), and preprocessed (stages 2-3). The scene of each factor is a subset of it, every k-th frame and
every k-th photo (a data root of links under --root), so that N, 2N and 4N images show the same town, spots and
photos and differ only in how many there are (drawn apart, each size had photos of other spots, with other keypoint
counts, and the per-image costs measured the draw more than the scaling: docs/performance.md). Each is
registered and densified from scratch with the defaults but for the depth maps' size (--depth_size: small, so that
it runs on 2 cores). One table: per step the seconds per image (stage 4a: per frame and photo; stage 4b: per depth
map) and the peak resident memory of the process at each size (the stages' own records: timings.json and
peak_memory.json of stage 4a, dense.json of stage 4b), then the ratio of seconds per image between the largest and
the smallest scene (growth) and between the two largest (last: a step whose work per image grows with the views'
density until a bound, such as the aerial points around a photo's keypoints, flattens there). Rule (issue #24):
every step within 1.5x between N and 4N, that is no step grows faster than about N log N. Run it on an otherwise
idle machine: the figures are seconds. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pycolmap

from aerialmd.atomic import remove_path
from aerialmd.layout import DataRoot
from aerialmd.run.scenes import load_scene_list, save_scene_list
from aerialmd.sample_scene import generate_sample
from aerialmd.sample_scene.family import family_config
from aerialmd.sample_scene.generate import SampleConfig
from aerialmd.sfm.triangulation import select_images
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


def prepare_town(root: Path, config: SampleConfig) -> DataRoot:
    """Generate (or reuse) the largest scene and run stages 2-3 on it."""
    sample = generate_sample(root / config.scene_id, config)
    preprocess_ge(sample.root, sample.scene_list)
    preprocess_megadepth(sample.megadepth_root, sample.scene_list, sample.data_root.megadepth_processed)
    return sample.data_root


def subset_root(town: DataRoot, scene: str, every: int, root: Path) -> DataRoot:
    """A data root at `root` with every `every`-th frame (by name) and photo of the town's preprocessed scene: its
    cameras as a model, links to its frames and to the town's processed MegaDepth, and its own scene list."""
    subset = DataRoot(root)
    source, target = town.scene(scene), subset.scene(scene)
    remove_path(root)
    target.sparse_ge.mkdir(parents=True)
    model = pycolmap.Reconstruction(str(source.sparse_ge))
    frames = sorted(image.name for image in model.images.values())[::every]
    select_images(model, frames).write(str(target.sparse_ge))
    target.footage.mkdir()
    for name in frames:
        (target.footage / name).symlink_to(source.footage / name)
    shutil.copy(source.cameras, target.cameras)
    subset.megadepth_processed.symlink_to(town.megadepth_processed.resolve(), target_is_directory=True)
    photos = {sub: sorted(names)[::every] for sub, names in load_scene_list(town.scene_list)[scene].items()}
    save_scene_list(subset.scene_list, {scene: photos})
    return subset


def run_scene(data: DataRoot, scene: str, label: str, dense_conf: DenseConf | None) -> dict:
    """Stage 4a, then (unless `dense_conf` is None) 4b, from scratch on a prepared data root; its steps' seconds and
    peak memory."""
    conf = LocalizationConf()
    if localize(data.scenes, data.megadepth_processed, data.scene_list, conf=conf, overwrite=True) != 0:
        raise RuntimeError(f"{label}: registration failed")
    sfm = data.scene(scene).sfm(conf.output_name())
    document = json.loads(sfm.registration.read_text())
    frames = document["aerial_model"]["num_images"]
    photos = sum(len(names) for names in load_scene_list(data.scene_list)[scene].values())
    per_image = {f"4a {name}": seconds / (frames + photos)
                 for name, seconds in json.loads(sfm.timings.read_text()).items()}
    memory = {f"4a {name}": mb for name, mb in json.loads(sfm.peak_memory.read_text()).items()}
    maps = 0
    if dense_conf is not None:
        if densify(data.scenes, data.megadepth_processed, data.scene_list, conf=dense_conf, overwrite=True) != 0:
            raise RuntimeError(f"{label}: dense stage failed")
        dense = json.loads(sfm.dense.report.read_text())
        maps = dense["summary"]["images"]
        per_image.update({f"4b {name}": seconds / maps for name, seconds in dense["timings"].items()})
        memory.update({f"4b {name}": mb for name, mb in dense["peak_rss_mb"].items()})
    return {"scene": label, "images": frames + photos, "frames": frames, "photos": photos,
            "registered": document["counts"]["registered"], "seconds_per_image": per_image, "peak_rss_mb": memory,
            "depth_maps": maps,
            "observations_per_frame": document["aerial_model"]["mean_observations_per_image"]}


def growth(rows: list[dict], step: str) -> float:
    """Seconds per image of `step` in the largest scene over the smallest."""
    return rows[-1]["seconds_per_image"][step] / rows[0]["seconds_per_image"][step]


def print_table(rows: list[dict]) -> list[str]:
    """The table; returns the steps that grew more than MAX_GROWTH."""
    print()
    for row in rows:
        print(f"{row['scene']}: {row['frames']} frames + {row['photos']} photos, {row['registered']} registered, "
              f"{row['depth_maps']} depth maps; aerial model {row['observations_per_frame']:.0f} observations "
              "per frame")
    header = (f"{'step':<18}" + "".join(f"{'s/img ' + r['scene']:>17}{'MB':>7}" for r in rows)
              + f"{'growth':>8}{'last':>8}")
    print("\n" + header)
    slow = []
    for step in rows[0]["seconds_per_image"]:
        cells = "".join(f"{r['seconds_per_image'].get(step, float('nan')):17.4f}"
                        f"{r['peak_rss_mb'].get(step, float('nan')):7.0f}" for r in rows)
        ratio = growth(rows, step)
        verdict = "" if ratio <= MAX_GROWTH else "  FAIL"
        print(f"{step:<18}{cells}{ratio:8.2f}{growth(rows[-2:], step):8.2f}{verdict}")
        if ratio > MAX_GROWTH:
            slow.append(step)
    totals = [sum(r["seconds_per_image"].values()) for r in rows]
    print(f"{'all steps':<18}" + "".join(f"{t:17.4f}{'':>7}" for t in totals)
          + f"{totals[-1] / totals[0]:8.2f}{totals[-1] / totals[-2]:8.2f}")
    return slow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("scale_data"))
    parser.add_argument("--photos", type=int, default=32, help="photos of the smallest scene")
    parser.add_argument("--frames", type=int, default=32, help="aerial frames of the smallest scene")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4],
                        help="scene sizes in units of the smallest; each divides the largest")
    parser.add_argument("--depth_size", type=int, default=240, help="long side of the depth maps")
    parser.add_argument("--registration_only", action="store_true",
                        help="stage 4a only (larger factors in minutes, e.g. --factors 1 2 4 8)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if any(max(args.factors) % f for f in args.factors):
        parser.error(f"--factors {args.factors}: each must divide the largest")
    base = family_config(SEED, "small", "spots", gap=True)
    dense_conf = None if args.registration_only else DenseConf(backend="torch", max_image_size=args.depth_size)
    factors = sorted(args.factors)
    town_config = scaled_config(base, factors[-1], args.photos, args.frames)
    town = prepare_town(args.root, town_config)
    rows = [run_scene(subset_root(town, town_config.scene_id, factors[-1] // f, args.root / f"{f}N"),
                      town_config.scene_id, f"{f}N", dense_conf) for f in factors]
    slow = print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nevery step within {MAX_GROWTH}x per image between N and {rows[-1]['images'] / rows[0]['images']:.0f}N: "
          + ("PASS" if not slow else f"FAIL ({', '.join(slow)})"))
    return 0 if not slow else 1


if __name__ == "__main__":
    sys.exit(main())
