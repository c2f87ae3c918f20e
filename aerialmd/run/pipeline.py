"""run_pipeline.py's engine: the stages in order over one data root, timed, with a summary of what each produced."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from aerialmd.formats.pair_file import load_pair_file
from aerialmd.layout import (
    DENSE_DIR,
    DEPTHS_DIR,
    FOOTAGE_DIR,
    LOCALIZATION_DIR,
    PAIRS_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    DataRoot,
)
from aerialmd.run.scenes import Shard, Stopwatch, load_scene_list, select_scenes
from aerialmd.sample_scene import SampleConfig, generate_sample, sample_paths
from aerialmd.stages.dense import DenseConf, densify
from aerialmd.stages.export import DEFAULT_MAX_DEPTH, export_aerialmegadepth
from aerialmd.stages.export_formats import FORMATS
from aerialmd.stages.localization import LocalizationConf, localize
from aerialmd.stages.make_pairs import PairsConf, kind_counts, make_pairs, merge_pair_file_paths, pair_kind
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth
from aerialmd.stages.report import write_reports
from aerialmd.training.check import check_training_data

TRAINING_DATA_STAGE = "training_data"  # the run-level last stage (final_stages): merged pair file and loader check


@dataclasses.dataclass(frozen=True)
class PipelinePaths:
    """Inputs and outputs of a run: the layout of the sample scene and of a user's data root alike."""

    data_root: Path  # holds downloaded_data/ (GES renders); data/<scene>/ is written here
    megadepth_dir: Path  # MegaDepth root (MegaDepth_v1_SfM/, phoenix/)
    scene_list: Path
    megadepth_processed: Path


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[], int]
    outputs: Path
    pattern: str  # glob (below outputs) of the files that count as this stage's products
    always: bool = False  # runs even after an earlier stage failed (the report: it shows where a scene stopped)


@dataclasses.dataclass(frozen=True)
class StageResult:
    name: str
    exit_code: int
    seconds: float
    produced: int
    outputs: Path
    pattern: str


def sample_pipeline(root: Path, config: SampleConfig) -> tuple[PipelinePaths, Stage]:
    """The sample scene's layout as pipeline inputs, and the stage that creates it (a no-op when it exists)."""
    sample = sample_paths(root, config)

    def create() -> int:
        generate_sample(root, config)
        return 0

    paths = PipelinePaths(sample.root, sample.megadepth_root, sample.scene_list, sample.data_root.megadepth_processed)
    return paths, Stage("sample_scene", create, sample.ground_truth_dir.parent, "*/depth/*.exr")


@dataclasses.dataclass(frozen=True)
class PipelineConf:
    """The settings of the stages that have any beyond their paths (each recorded in its stage's marker)."""

    localization: LocalizationConf = LocalizationConf()
    dense: DenseConf = DenseConf()
    pairs: PairsConf = PairsConf()
    max_depth: float = DEFAULT_MAX_DEPTH  # the export's far cut (metres)
    export_formats: tuple[str, ...] = FORMATS  # every format of the export (aerialmd.stages.export_formats)


def scenes_with_depth(paths: PipelinePaths, scenes: list[str] | None, shard: Shard | None, sfm_name: str) -> list[str]:
    """The selected scenes whose registration `sfm_name` has a finished dense model (the stages before pass over
    scenes without a download)."""
    root = DataRoot(paths.data_root)
    selected = select_scenes(load_scene_list(paths.scene_list), scenes, shard)
    return [scene for scene in selected if root.scene(scene).sfm(sfm_name).dense.report.is_file()]


def make_scene_pairs(paths: PipelinePaths, scenes: list[str] | None, shard: Shard | None, conf: PipelineConf) -> int:
    """make_pairs of each scene with depth into its own pair file (pairs/<scene>.npz): scenes are independent, and a
    per-scene task (Ray) writes only its scene's file."""
    root, sfm_name = DataRoot(paths.data_root), conf.localization.output_name()
    codes = [make_pairs(root.scenes, root.scene_pairs(scene), [scene], conf.pairs, sfm_name=sfm_name)
             for scene in scenes_with_depth(paths, scenes, shard, sfm_name)]
    return max(codes, default=0)


def export_scenes(paths: PipelinePaths, scenes: list[str] | None, shard: Shard | None, conf: PipelineConf,
                  workers: int, overwrite: bool) -> int:
    """The export of each scene's pair file (preprocess_aerialmegadepth.py) into the data root's export folder."""
    root, sfm_name = DataRoot(paths.data_root), conf.localization.output_name()
    codes = [export_aerialmegadepth(root.scenes, root.scene_pairs(scene), root.export, [scene], conf.max_depth,
                                    workers, overwrite, sfm_name=sfm_name, formats=conf.export_formats)
             for scene in scenes_with_depth(paths, scenes, shard, sfm_name) if root.scene_pairs(scene).is_file()]
    return max(codes, default=0)


def finish_training_data(paths: PipelinePaths) -> int:
    """The run-level last step: every scene's pair file (of the scene list) merged into the data root's pair file,
    and a few pairs of each kind loaded through the dataloader (aerialmd.training.check). With shards, the merged
    file holds the scenes finished when this one ends (`make_pairs.py --merge pairs/*.npz` remakes it)."""
    root = DataRoot(paths.data_root)
    files = [root.scene_pairs(scene) for scene in load_scene_list(paths.scene_list)
             if root.scene_pairs(scene).is_file()]
    if not files:
        print(f"[training_data] FAILED: no scene pair file in {root.pairs_dir}", flush=True)
        return 1
    merge_pair_file_paths(files, root.pairs_file)
    loaded = check_training_data(root.export, root.pairs_file)
    print(f"[training_data] loader check passed: {', '.join(f'{k} {n}' for k, n in loaded.items())} pairs loaded",
          flush=True)
    return 0


def training_data_summary(paths: PipelinePaths, results: list[StageResult]) -> str:
    """Where the training data is and how many pairs of each kind it has (for the end of a run); when this run did
    not make it, which stages failed (a pair file left by an earlier run is not this run's product)."""
    root = DataRoot(paths.data_root)
    if not any(r.name == TRAINING_DATA_STAGE and r.exit_code == 0 for r in results):
        failed = ", ".join(r.name for r in results if r.exit_code) or "every scene"
        return f"training data: not made by this run (failed: {failed})"
    pair_file = load_pair_file(root.pairs_file)
    counts = kind_counts(pair_kind(pair_file.images[i], pair_file.images[j], pair_file.scenes[s])
                         for s, i, j in zip(pair_file.scene_id, pair_file.im1_id, pair_file.im2_id))
    return (f"training data: pair file {root.pairs_file} ({', '.join(f'{k} {n}' for k, n in counts.items())} pairs), "
            f"images, depths and cameras in {root.export}")


def build_stages(paths: PipelinePaths, scenes: list[str] | None, workers: int | None, overwrite: bool,
                 shard: Shard | None = None, conf: PipelineConf = PipelineConf()) -> list[Stage]:
    """The per-scene stages run_pipeline.py runs, in the order users run them by hand: preprocess_ge,
    preprocess_megadepth, localization, dense, make_pairs, export, report (final_stages follow)."""
    workers = workers or os.cpu_count() or 1
    root = DataRoot(paths.data_root)
    return [
        Stage("preprocess_ge",
              lambda: preprocess_ge(paths.data_root, paths.scene_list, scenes, overwrite=overwrite, workers=workers,
                                    shard=shard),
              root.scenes, f"*/{FOOTAGE_DIR}/*.jpeg"),
        Stage("preprocess_megadepth",
              lambda: preprocess_megadepth(paths.megadepth_dir, paths.scene_list, paths.megadepth_processed, scenes,
                                           workers, overwrite, shard),
              paths.megadepth_processed, "*/*/*.npz"),
        Stage("localization",
              lambda: localize(root.scenes, paths.megadepth_processed, paths.scene_list, scenes,
                               conf.localization, overwrite, shard),
              root.scenes, f"*/{LOCALIZATION_DIR}/*/{REGISTRATION_FILE}"),
        Stage("dense",
              lambda: densify(root.scenes, paths.megadepth_processed, paths.scene_list, scenes, conf.dense, overwrite,
                              shard),
              root.scenes, f"*/{LOCALIZATION_DIR}/*/{DENSE_DIR}/{DEPTHS_DIR}/*.h5"),
        Stage("make_pairs", lambda: make_scene_pairs(paths, scenes, shard, conf), root.pairs_dir, "*.npz"),
        Stage("export", lambda: export_scenes(paths, scenes, shard, conf, workers, overwrite), root.export, "*/*.exr"),
        Stage("report",
              lambda: write_reports(paths.data_root, paths.megadepth_processed, paths.scene_list, scenes, shard),
              root.reports, f"*/{REPORT_FILE}", always=True),
    ]


def final_stages(paths: PipelinePaths) -> list[Stage]:
    """The run-level stages after every scene's: the merged pair file and the loader check."""
    root = DataRoot(paths.data_root)
    return [Stage(TRAINING_DATA_STAGE, lambda: finish_training_data(paths), root.path, PAIRS_FILE)]


def run_stages(stages: list[Stage], stop_on_failure: bool = True) -> list[StageResult]:
    """Run stages in order; after a failing stage only the `always` stages run, unless told otherwise (later stages
    need its outputs)."""
    results: list[StageResult] = []
    for stage in stages:
        if stop_on_failure and any(r.exit_code for r in results) and not stage.always:
            continue
        print(f"=== {stage.name} ===", flush=True)
        watch = Stopwatch()
        code = stage.run()
        produced = len(list(stage.outputs.glob(stage.pattern))) if stage.outputs.exists() else 0
        results.append(StageResult(stage.name, code, watch.seconds(), produced, stage.outputs, stage.pattern))
    return results


def format_summary(results: list[StageResult]) -> str:
    """A table: stage, status, seconds, number of products, where they are."""
    lines = [f"{'stage':<22} {'status':<7} {'seconds':>8}  products"]
    for r in results:
        status = "ok" if r.exit_code == 0 else "FAILED"
        lines.append(f"{r.name:<22} {status:<7} {r.seconds:8.1f}  {r.produced} x {r.pattern} in {r.outputs}")
    return "\n".join(lines)
