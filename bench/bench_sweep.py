"""Benchmark: registration (stage 4a) and, with --dense, depth (stage 4b) over a fixed sweep of sample scenes of the
family, with the defaults a user gets.

    python bench/bench_sweep.py [--root sweep_data] [--scenes small0001 ...] [--features sift] [--dense]
                                [--measure_only]

The scenes (SWEEP, chosen once: both photo layouts, the appearance gap on and off, small and larger scenes; see
aerialmd/sample_scene/family.py) are generated under --root if needed, preprocessed (stages 2-3) and registered from
scratch. One table: per scene the photos registered (views: of them, those confirmed by the aerial frames warped to
their viewpoint; nbrs: by registered photos; the others by their matches to the aerial points), median and worst
rotation and position error (position as a share of the scene extent) and the scale error of the registered cameras
against the truth; then pooled figures and each target of the registration issue with PASS or FAIL, then every
rejected photo's reason. One set of defaults for every scene: nothing here is chosen per scene. Figures:
docs/registration.md.

With --dense, stage 4b then runs on each registered scene (defaults, but its depth cleaning off so that the figures
before and after it come from one run; the cleaned maps are made with the stage's own function) and a second table
gives, per scene and image kind, against the truth: coverage and its ceiling (true-valid pixels seen by at least two
other views of any kind at a pixel footprint within 3x, evaluation.coverage_ceiling), the shares of depths within
2 % and off by more than 10 %, and the depths on the sky and the coverage before and after cleaning; then the dense
issue's targets and the cleaning rule with PASS or FAIL. Figures: docs/mvs.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pycolmap

from aerialmd.layout import DENSE_DIR, DENSE_REPORT, IMAGES_DIR, LOCALIZATION_DIR
from aerialmd.run.markers import SETTINGS_KEY
from aerialmd.sample_scene import generate_sample
from aerialmd.sample_scene.evaluation import (
    WRONG_DEPTH_CLASSES,
    coverage_ceiling,
    dense_accuracy,
    load_ground_truth,
    registration_accuracy,
    sky_share,
)
from aerialmd.sample_scene.family import family_config
from aerialmd.sfm.registration import CONFIRMED_BY_NEIGHBOURS, CONFIRMED_BY_VIEWS
from aerialmd.stages.dense import DenseConf, cleaned, dense_scene
from aerialmd.stages.localization import LocalizationConf, localize
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth

# (seed, size, photo layout, appearance gap): 12 scenes, 8 with the gap, 6 with scattered photos, 2 larger.
SWEEP = [
    (1, "small", "spots", True), (2, "small", "scattered", True), (3, "small", "spots", True),
    (4, "small", "scattered", True), (5, "small", "spots", True), (6, "small", "scattered", True),
    (7, "small", "spots", False), (8, "small", "scattered", False), (9, "small", "spots", False),
    (10, "small", "scattered", False), (11, "large", "spots", True), (12, "large", "scattered", True),
]
# The registration issue's targets.
MIN_SCENE_RATE, MIN_MEDIAN_SCENE_RATE = 0.80, 0.95
MAX_POOLED_ROTATION_DEG, MAX_POOLED_POSITION = 0.3, 0.002
MAX_ROTATION_DEG, MAX_POSITION, MAX_SCALE_ERROR = 2.0, 0.01, 0.005
# The dense issue's targets (coverage: at least the lower of MIN_COVERAGE and CEILING_SHARE of the kind's ceiling) and
# the depth cleaning rule (depths on the sky, coverage it may take).
MIN_COVERAGE, CEILING_SHARE, MIN_WITHIN_2PCT, MAX_OFF_10PCT = 0.70, 0.90, 0.90, 0.03
MAX_SKY_SHARE, MAX_CLEANING_LOSS = 0.002, 0.02


def run_scene(root: Path, seed: int, size: str, layout: str, gap: bool, conf: LocalizationConf, dense: bool,
              measure_only: bool = False) -> dict:
    """Generate (or reuse) one scene, run stages 2-4a (and 4b when `dense`) on it, and measure them against its
    truth; with `measure_only`, measure the outputs an earlier run left instead of running 4a and 4b."""
    config = family_config(seed, size, layout, gap)
    folder = root / config.scene_id
    start = time.perf_counter()
    sample = generate_sample(folder, config)
    preprocess_ge(sample.root, sample.scene_list)
    processed = sample.root / "megadepth_processed"
    preprocess_megadepth(sample.megadepth_root, sample.scene_list, processed)
    prepared = time.perf_counter()
    out = sample.root / "data" / config.scene_id / LOCALIZATION_DIR / conf.output_name()
    if measure_only:
        code = 0 if (out / "registration.json").is_file() else 1
    else:
        code = localize(sample.root / "data", processed, sample.scene_list, conf=conf, overwrite=True)
    seconds = time.perf_counter() - prepared
    row = {"scene": config.scene_id, "layout": layout, "gap": gap, "photos": config.num_ground,
           "frames": config.num_frames, "prepare_s": prepared - start, "register_s": seconds}
    if code != 0:
        return {**row, "failed": True}
    accuracy = registration_accuracy(pycolmap.Reconstruction(str(out / "localized")),
                                     load_ground_truth(sample.ground_truth_dir))
    document = json.loads((out / "registration.json").read_text())
    rejected = {name: {k: photo.get(k) for k in ("reason", "num_correspondences", "num_inliers",
                                                 "rotation_vs_prediction_deg", "position_vs_prediction_m")}
                for name, photo in document["images"].items() if photo["status"] == "rejected"}
    confirmed_by = [photo.get("confirmed_by") for photo in document["images"].values()]
    row = {**row, "accuracy": accuracy, "rejected": rejected, "by_views": confirmed_by.count(CONFIRMED_BY_VIEWS),
           "by_neighbours": confirmed_by.count(CONFIRMED_BY_NEIGHBOURS)}
    if dense:
        row |= measure_dense(out, sample.root / "data" / config.scene_id, processed / config.scene_id / "0",
                             sample.ground_truth_dir, measure_only)
    return row


def measure_dense(sfm_dir: Path, scene_dir: Path, processed_dir: Path, truth_dir: Path, measure_only: bool) -> dict:
    """Stage 4b with the defaults but cleaning off (unless `measure_only`: its earlier output), then its figures per
    image kind before and after cleaning (the stage's own function) and the kind's coverage ceiling from the truth."""
    conf = DenseConf()
    dense_dir = sfm_dir / DENSE_DIR
    start = time.perf_counter()
    if measure_only:
        settings = json.loads((dense_dir / DENSE_REPORT).read_text())[SETTINGS_KEY]
        if settings["clean_sky"] or settings["flying_min_neighbours"] or settings.get("silhouette_trim"):
            raise SystemExit(f"{dense_dir}: made with depth cleaning on; run without --measure_only")
    else:
        dense_scene(sfm_dir, scene_dir, [processed_dir], conf.without_cleaning(), overwrite=True)
    seconds = time.perf_counter() - start
    raw = dense_accuracy(dense_dir, truth_dir)
    after = dense_accuracy(dense_dir, truth_dir, lambda name, depth: cleaned(depth, dense_dir / IMAGES_DIR / name, conf))
    figures = {kind: {**after[kind], "raw": raw[kind], "ceiling": coverage_ceiling(truth_dir, kind)} for kind in after}
    return {"dense": figures, "dense_s": seconds}


def coverage_target(figures: dict) -> float:
    return min(MIN_COVERAGE, CEILING_SHARE * figures["ceiling"])


def wrong_shares(figures: dict) -> str:
    """The depths off by more than 10 % split by pixel class (shares of them), and the share too near."""
    counts = figures["wrong_by_class"]
    total = max(sum(counts[name] for name in WRONG_DEPTH_CLASSES), 1)
    return "".join(f"{counts[name] / total:>7.2f}" for name in (*WRONG_DEPTH_CLASSES, "too_near"))


def print_dense_table(rows: list[dict]) -> None:
    print(f"\n{'scene':<11}{'kind':>7}{'maps':>5}{'coverage':>9}{'ceiling':>8}{'target':>7}{'within 2%':>10}"
          f"{'off >10%':>9}{'sky % raw':>10}{'sky %':>7}{'cov raw':>8}{'time s':>8}"
          f"  wrong: {'silh.':>6}{'graz.':>7}{'other':>7}{'near':>7}")
    for row in rows:
        for kind, f in row.get("dense", {}).items():
            print(f"{row['scene']:<11}{kind:>7}{f['images']:>5}{f['coverage']:>9.3f}{f['ceiling']:>8.3f}"
                  f"{coverage_target(f):>7.3f}{f['within_2pct']:>10.3f}{f['off_10pct']:>9.4f}"
                  f"{100 * sky_share(f['raw']):>10.2f}{100 * sky_share(f):>7.3f}{f['raw']['coverage']:>8.3f}"
                  f"{row['dense_s']:>8.0f}  {'':>6}{wrong_shares(f)}")


def pooled_dense(rows: list[dict], kind: str) -> dict:
    """One kind's figures over every scene's pixels together (coverage of all true-valid pixels, the shares of all
    depths produced there), with the wrong depths' classes summed."""
    figures = [r["dense"][kind] for r in rows if kind in r.get("dense", {})]
    covered = sum(f["covered"] for f in figures)
    return {"coverage": covered / max(sum(f["true_valid"] for f in figures), 1),
            "within_2pct": sum(f["within_2pct"] * f["covered"] for f in figures) / max(covered, 1),
            "off_10pct": sum(f["off_10pct"] * f["covered"] for f in figures) / max(covered, 1),
            "wrong_by_class": {name: sum(f["wrong_by_class"][name] for f in figures)
                               for name in (*WRONG_DEPTH_CLASSES, "too_near")}}


def print_pooled_dense(rows: list[dict]) -> None:
    print(f"\n{'pooled':<11}{'kind':>7}{'coverage':>9}{'within 2%':>10}{'off >10%':>9}"
          f"  wrong: {'silh.':>6}{'graz.':>7}{'other':>7}{'near':>7}")
    for kind in ("aerial", "ground"):
        f = pooled_dense(rows, kind)
        print(f"{'':<11}{kind:>7}{f['coverage']:>9.3f}{f['within_2pct']:>10.3f}{f['off_10pct']:>9.4f}  {'':>6}"
              f"{wrong_shares(f)}")


def dense_verdicts(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The dense issue's targets and the cleaning rule, per image kind over the sweep: (what, figure, met)."""
    out = []
    for kind in ("aerial", "ground"):
        kinds = [(r["scene"], r["dense"][kind]) for r in rows if kind in r.get("dense", {})]
        if not kinds:
            continue
        short = min(kinds, key=lambda k: k[1]["coverage"] - coverage_target(k[1]))
        within = min(kinds, key=lambda k: k[1]["within_2pct"])
        off = max(kinds, key=lambda k: k[1]["off_10pct"])
        sky = max(kinds, key=lambda k: sky_share(k[1]))
        loss = max(kinds, key=lambda k: k[1]["raw"]["coverage"] - k[1]["coverage"])
        loss_points = 100 * (loss[1]["raw"]["coverage"] - loss[1]["coverage"])
        out += [
            (f"{kind}: coverage >= min(0.70, 0.9 ceiling)", f"{short[0]} {short[1]['coverage']:.3f} "
             f"({coverage_target(short[1]):.3f})", short[1]["coverage"] >= coverage_target(short[1])),
            (f"{kind}: >= 90 % within 2 %", f"{within[0]} {within[1]['within_2pct']:.3f}",
             within[1]["within_2pct"] >= MIN_WITHIN_2PCT),
            (f"{kind}: < 3 % off by > 10 %", f"{off[0]} {off[1]['off_10pct']:.4f}",
             off[1]["off_10pct"] < MAX_OFF_10PCT),
            (f"{kind}: cleaning leaves < 0.2 % on sky", f"{sky[0]} {100 * sky_share(sky[1]):.3f} %",
             sky_share(sky[1]) < MAX_SKY_SHARE),
            (f"{kind}: cleaning costs < 2 coverage points", f"{loss[0]} {loss_points:.2f}",
             loss_points < 100 * MAX_CLEANING_LOSS),
        ]
    return out


def print_table(rows: list[dict]) -> None:
    header = (f"{'scene':<11}{'layout':>10}{'gap':>5}{'frames':>7}{'photos':>7}{'reg':>8}{'views':>6}{'nbrs':>5}"
              f"{'rate':>7}{'rot med':>9}{'rot max':>9}{'pos med%':>9}{'pos max%':>9}{'scale err%':>11}{'time s':>8}")
    print("\n" + header)
    for row in rows:
        gap = "on" if row["gap"] else "off"
        start = f"{row['scene']:<11}{row['layout']:>10}{gap:>5}{row['frames']:>7}{row['photos']:>7}"
        if row.get("failed"):
            print(start + "  FAILED")
            continue
        a = row["accuracy"]
        rate = a["registered"] / a["total"]
        print(start + f"{a['registered']:>4}/{a['total']:<3}{row['by_views']:>6}{row['by_neighbours']:>5}{rate:>7.2f}"
              f"{a.get('median_rotation_deg', np.nan):>9.3f}"
              f"{a.get('max_rotation_deg', np.nan):>9.3f}{100 * a.get('median_position_fraction', np.nan):>9.3f}"
              f"{100 * a.get('max_position_fraction', np.nan):>9.3f}{100 * abs(a.get('scale', np.nan) - 1):>11.3f}"
              f"{row['register_s']:>8.0f}")


def verdicts(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The registration issue's targets over the sweep: (what, figure, met)."""
    done = [r for r in rows if not r.get("failed")]
    rates = [r["accuracy"]["registered"] / r["accuracy"]["total"] for r in done] + [0.0] * (len(rows) - len(done))
    images = [e for r in done for e in r["accuracy"]["images"].values()]
    rotations = np.array([e["rotation_deg"] for e in images]) if images else np.array([np.inf])
    positions = np.array([e["position_fraction"] for e in images]) if images else np.array([np.inf])
    scale_errors = [abs(r["accuracy"].get("scale", np.inf) - 1) for r in done] or [np.inf]
    return [
        ("every scene registers >= 80 % of its photos", f"lowest {min(rates):.2f}", min(rates) >= MIN_SCENE_RATE),
        ("median scene registers >= 95 %", f"{np.median(rates):.2f}", np.median(rates) >= MIN_MEDIAN_SCENE_RATE),
        ("pooled median rotation <= 0.3 deg", f"{np.median(rotations):.3f} deg",
         np.median(rotations) <= MAX_POOLED_ROTATION_DEG),
        ("pooled median position <= 0.2 % of extent", f"{100 * np.median(positions):.3f} %",
         np.median(positions) <= MAX_POOLED_POSITION),
        ("no kept photo worse than 2 deg", f"worst {rotations.max():.3f} deg", rotations.max() <= MAX_ROTATION_DEG),
        ("no kept photo worse than 1 % of extent", f"worst {100 * positions.max():.3f} %",
         positions.max() <= MAX_POSITION),
        ("scale within 0.5 % in every scene", f"worst {100 * max(scale_errors):.3f} %",
         max(scale_errors) <= MAX_SCALE_ERROR),
        ("no scene failed", f"{len(rows) - len(done)} failed", len(done) == len(rows)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("sweep_data"), help="where the sweep's scenes live")
    parser.add_argument("--scenes", nargs="+", help="only these scene ids (e.g. small0001 large0011)")
    parser.add_argument("--features", default="sift", help="features of the registration (sift, aliked)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--dense", action="store_true", help="also run and measure the dense stage (stage 4b)")
    parser.add_argument("--measure_only", action="store_true",
                        help="measure the registration and (raw) depth maps an earlier run left under --root, without "
                             "running stages 4a and 4b: to try a change of the measuring or the depth cleaning")
    parser.add_argument("--clean", action="store_true", help="remove each scene's folder after measuring it")
    args = parser.parse_args()
    conf = LocalizationConf(features=args.features)
    rows = []
    for seed, size, layout, gap in SWEEP:
        scene_id = family_config(seed, size, layout, gap).scene_id
        if args.scenes and scene_id not in args.scenes:
            continue
        rows.append(run_scene(args.root, seed, size, layout, gap, conf, args.dense, args.measure_only))
        print_table(rows[-1:])
        if args.dense:
            print_dense_table(rows[-1:])
        if args.clean:
            shutil.rmtree(args.root / scene_id)
    print_table(rows)
    print()
    for what, figure, met in verdicts(rows):
        print(f"{what:<45}{figure:>20}  {'PASS' if met else 'FAIL'}")
    if args.dense:
        print_dense_table(rows)
        print_pooled_dense(rows)
        print()
        for what, figure, met in dense_verdicts(rows):
            print(f"{what:<45}{figure:>26}  {'PASS' if met else 'FAIL'}")
    for row in rows:
        for name, reason in row.get("rejected", {}).items():
            print(f"rejected {row['scene']} {name}: {reason}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
