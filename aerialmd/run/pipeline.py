"""run_pipeline.py's engine: the stages in order over one data root, timed, with a summary of what each produced."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from aerialmd.layout import (
    DENSE_DIR,
    DEPTHS_DIR,
    FOOTAGE_DIR,
    LOCALIZATION_DIR,
    MEGADEPTH_PROCESSED_DIR,
    REGISTRATION_FILE,
    REPORT_FILE,
    REPORTS_DIR,
    SCENES_DIR,
)
from aerialmd.run.scenes import Shard, Stopwatch
from aerialmd.sample_scene import SampleConfig, generate_sample, sample_paths
from aerialmd.stages.dense import DenseConf, densify
from aerialmd.stages.localization import LocalizationConf, localize
from aerialmd.stages.preprocess_ge import preprocess_ge
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth
from aerialmd.stages.report import write_reports


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

    paths = PipelinePaths(sample.root, sample.megadepth_root, sample.scene_list, sample.root / MEGADEPTH_PROCESSED_DIR)
    return paths, Stage("sample_scene", create, sample.root / "ground_truth", "*/depth/*.exr")


@dataclasses.dataclass(frozen=True)
class PipelineConf:
    """The settings of the stages that have any beyond their paths (each recorded in its stage's marker)."""

    localization: LocalizationConf = LocalizationConf()
    dense: DenseConf = DenseConf()


def build_stages(paths: PipelinePaths, scenes: list[str] | None, workers: int | None, overwrite: bool,
                 shard: Shard | None = None, conf: PipelineConf = PipelineConf()) -> list[Stage]:
    """The stages run_pipeline.py runs, in the order users run them by hand: preprocess_ge, preprocess_megadepth,
    localization, dense, report."""
    workers = workers or os.cpu_count() or 1
    return [
        Stage("preprocess_ge",
              lambda: preprocess_ge(paths.data_root, paths.scene_list, scenes, overwrite=overwrite, workers=workers,
                                    shard=shard),
              paths.data_root / SCENES_DIR, f"*/{FOOTAGE_DIR}/*.jpeg"),
        Stage("preprocess_megadepth",
              lambda: preprocess_megadepth(paths.megadepth_dir, paths.scene_list, paths.megadepth_processed, scenes,
                                           workers, overwrite, shard),
              paths.megadepth_processed, "*/*/*.npz"),
        Stage("localization",
              lambda: localize(paths.data_root / SCENES_DIR, paths.megadepth_processed, paths.scene_list, scenes,
                               conf.localization, overwrite, shard),
              paths.data_root / SCENES_DIR, f"*/{LOCALIZATION_DIR}/*/{REGISTRATION_FILE}"),
        Stage("dense",
              lambda: densify(paths.data_root / SCENES_DIR, paths.megadepth_processed, paths.scene_list, scenes,
                              conf.dense, overwrite, shard),
              paths.data_root / SCENES_DIR, f"*/{LOCALIZATION_DIR}/*/{DENSE_DIR}/{DEPTHS_DIR}/*.h5"),
        Stage("report",
              lambda: write_reports(paths.data_root, paths.megadepth_processed, paths.scene_list, scenes, shard),
              paths.data_root / REPORTS_DIR, f"*/{REPORT_FILE}", always=True),
    ]


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
