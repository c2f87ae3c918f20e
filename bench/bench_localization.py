"""Benchmark: the registration stage (do_colmap_localization) on the default sample scene, 2 cores.

    python bench/bench_localization.py [--sample_root sample_data_full] [--features sift [aliked ...]]
                                       [--registered_pose pnp predicted]

Creates the default sample and runs stages 2-3 if needed, then runs stage 4a from scratch for each feature type and
each choice of the registered photos' pose (the last one stays on disk) and prints seconds per step (extraction,
matching, triangulation, registration), pairs matched, peak memory (this process and its children, RSS) and the
accuracy against the sample's ground truth, side by side.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pycolmap

from aerialmd.formats.hloc_h5 import read_pairs
from aerialmd.layout import LOCALIZATION_DIR
from aerialmd.sample_scene import SAMPLE_ROOTS, SampleConfig, generate_sample
from aerialmd.sample_scene.evaluation import load_ground_truth, registration_accuracy
from aerialmd.sfm.matching import resolve_configs
from aerialmd.sfm.registration import POSE_PNP, POSE_PREDICTED, RegistrationConf
from aerialmd.stages.localization import LocalizationConf, localize
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth

BUDGET_SECONDS = 300  # the whole stage for the default sample with sift


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its waited-for children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run(features: str, registered_pose: str, sample, config: SampleConfig) -> dict:
    """Stage 4a from scratch with one feature type and pose choice; its timings, pair counts and accuracy."""
    feature_conf, matcher_conf = resolve_configs(features)
    start = time.perf_counter()
    code = localize(sample.root / "data", sample.root / "megadepth_processed", sample.scene_list, conf=LocalizationConf(
        features=features, registration=RegistrationConf(registered_pose=registered_pose)), overwrite=True)
    seconds = time.perf_counter() - start
    out = sample.root / "data" / config.scene_id / LOCALIZATION_DIR / f"sfm_{feature_conf.name}+{matcher_conf.name}"
    label = f"{features}/{registered_pose}"
    if code != 0:
        return {"features": features, "label": label, "failed": True, "seconds": seconds}
    timings = json.loads((out / "timings.json").read_text())
    accuracy = registration_accuracy(pycolmap.Reconstruction(str(out / "localized")),
                                     load_ground_truth(sample.ground_truth_dir))
    pairs = len(read_pairs(out / "pairs-aerial.txt")) + len(read_pairs(out / "pairs-ground.txt"))
    return {"features": features, "label": label, "seconds": seconds, "timings": timings, "pairs": pairs,
            "accuracy": accuracy, "peak_rss_mb": peak_rss_mb()}


def report(results: list[dict]) -> None:
    steps = ("pairs", "extraction", "matching", "database", "verification", "triangulation", "registration",
             "aerial views")
    print(f"\n{'':<28}" + "".join(f"{r['label']:>18}" for r in results))
    for step in steps:
        print(f"{step + ' (s)':<28}" + "".join(f"{r.get('timings', {}).get(step, float('nan')):>18.1f}" for r in results))
    rows = [("total (s)", lambda r: f"{r['seconds']:.1f}"),
            ("pairs matched", lambda r: f"{r.get('pairs', 0)}"),
            ("peak RSS (MB)", lambda r: f"{r.get('peak_rss_mb', float('nan')):.0f}"),
            ("registered", lambda r: f"{r['accuracy']['registered']}/{r['accuracy']['total']}"),
            ("median rotation (deg)", lambda r: f"{r['accuracy'].get('median_rotation_deg', float('nan')):.3f}"),
            ("max rotation (deg)", lambda r: f"{r['accuracy'].get('max_rotation_deg', float('nan')):.3f}"),
            ("median position (% extent)", lambda r: f"{100 * r['accuracy'].get('median_position_fraction', float('nan')):.3f}"),
            ("max position (% extent)", lambda r: f"{100 * r['accuracy'].get('max_position_fraction', float('nan')):.3f}"),
            ("Sim(3) scale vs truth", lambda r: f"{r['accuracy'].get('scale', float('nan')):.5f}")]
    for label, value in rows:
        print(f"{label:<28}" + "".join(f"{value(r) if not r.get('failed') else 'FAILED':>18}" for r in results))
    sift = next((r for r in results if r["features"] == "sift" and not r.get("failed")), None)
    if sift:
        verdict = "PASS" if sift["seconds"] <= BUDGET_SECONDS else "FAIL"
        print(f"\nsift stage time {sift['seconds']:.0f} s (target <= {BUDGET_SECONDS} s) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample_root", type=Path, default=SAMPLE_ROOTS["full"])
    parser.add_argument("--features", nargs="+", default=["sift"], help="feature types to run (sift, aliked)")
    parser.add_argument("--registered_pose", nargs="+", default=[POSE_PNP, POSE_PREDICTED],
                        choices=(POSE_PNP, POSE_PREDICTED), help="pose choices to run (the last one stays on disk)")
    args = parser.parse_args()
    config = SampleConfig()
    sample = generate_sample(args.sample_root, config)
    preprocess_ge(sample.root, sample.scene_list)
    preprocess_megadepth(sample.megadepth_root, sample.scene_list, sample.root / "megadepth_processed")
    report([run(features, pose, sample, config) for features in args.features for pose in args.registered_pose])


if __name__ == "__main__":
    main()
