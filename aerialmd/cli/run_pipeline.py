"""Run every stage of the pipeline, in order, for one data root.

With no arguments: creates the built-in sample scene (the tiny one: a few minutes on a laptop CPU) under
./sample_data (if not there yet) and runs all stages on it; --sample_size full: the larger sample the benchmarks
measure, under ./sample_data_full.
With --data_root and --megadepth_dir (and --scene_list): runs the stages on your own data (the flags mean what they
mean in the stage scripts; registration and MVS take the same options as do_colmap_localization.py).
With --executor ray: one Ray task per scene (all its stages) on a Ray cluster (--ray_address) or a local Ray instance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aerialmd.cli.flags import (
    add_localization_arguments,
    add_megadepth_processed_argument,
    add_mvs_arguments,
    add_scene_arguments,
    add_scene_list_argument,
    dense_conf_from,
    localization_conf_from,
    megadepth_processed,
    scene_list,
)
from aerialmd.run.executors import EXECUTORS, run_local, run_ray
from aerialmd.run.pipeline import PipelineConf, PipelinePaths, Stage, sample_pipeline
from aerialmd.run.scenes import SETUP_ERRORS, exit_code_of
from aerialmd.sample_scene import SAMPLE_ROOTS, SAMPLE_SIZES
from aerialmd.stages.dense import DenseConf

SAMPLE_MVS_SIZE = 320  # the sample's depth maps: keeps the whole run within a few minutes on a laptop CPU


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample_root", type=Path, default=None,
                        help="where the sample scene lives (default: ./sample_data, with --sample_size full "
                             "./sample_data_full)")
    parser.add_argument("--sample_size", choices=sorted(SAMPLE_SIZES), default="tiny",
                        help="tiny: 18 aerial frames and 5 photos, the whole run in a few minutes on a laptop CPU; "
                             "full: 48 frames and 16 photos from popular spots, with street and wall grain "
                             "(docs/sample_scene.md)")
    parser.add_argument("--data_root", type=Path,
                        help="your data root (holds downloaded_data/; data/ is written there); skips the sample")
    parser.add_argument("--megadepth_dir", type=Path,
                        help="MegaDepth as downloaded (MegaDepth_v1_SfM/, phoenix/; with --data_root)")
    add_megadepth_processed_argument(parser)
    add_scene_list_argument(parser)
    add_scene_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, help="parallel workers per stage (default: CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished work")
    add_localization_arguments(parser.add_argument_group("registration (as do_colmap_localization.py)"))
    add_mvs_arguments(parser.add_argument_group("multi-view stereo (as do_colmap_localization.py)"),
                      f"; {SAMPLE_MVS_SIZE} for the sample")
    add_executor_arguments(parser)
    return parser


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """--executor and the Ray executor's settings."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: the stages in turn over all scenes, in this process; ray: one Ray task per scene")
    parser.add_argument("--ray_address", default=None,
                        help="Ray cluster to use (e.g. auto, <head>:6379, ray://<head>:10001; default: RAY_ADDRESS "
                             "when set, else a local Ray instance on this machine)")
    parser.add_argument("--ray_cpus_per_scene", type=float, default=2,
                        help="CPUs reserved per scene task (also its worker threads unless --workers)")
    parser.add_argument("--ray_gpus_per_scene", type=float, default=0,
                        help="GPUs reserved per scene task, used by the MVS stage (colmap backend, or torch on CUDA); "
                             "fractions share a GPU")


def pipeline_conf(args: argparse.Namespace) -> PipelineConf:
    """The stages' settings from the flags; the depth maps' default size is smaller for the sample."""
    dense = dense_conf_from(args, DenseConf.max_image_size if args.data_root else SAMPLE_MVS_SIZE)
    return PipelineConf(localization_conf_from(args), dense)


def resolve_paths(args: argparse.Namespace) -> tuple[PipelinePaths, list[Stage]]:
    """The user's data, or the sample scene (whose creation is then the first stage)."""
    if args.data_root is not None:
        if args.megadepth_dir is None:
            raise ValueError("--data_root needs --megadepth_dir")
        return PipelinePaths(args.data_root, args.megadepth_dir, scene_list(args, args.data_root),
                             megadepth_processed(args)), []
    root = args.sample_root or SAMPLE_ROOTS[args.sample_size]
    paths, stage = sample_pipeline(root, SAMPLE_SIZES[args.sample_size])
    return paths, [stage]


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)

    def run() -> int:
        paths, first = resolve_paths(args)
        common = (paths, args.scenes, args.workers, args.overwrite, args.shard, pipeline_conf(args), first)
        if args.executor == "ray":
            return run_ray(*common, address=args.ray_address, cpus_per_scene=args.ray_cpus_per_scene,
                           gpus_per_scene=args.ray_gpus_per_scene)
        return run_local(*common)

    return exit_code_of(run, (*SETUP_ERRORS, FileExistsError, RuntimeError))  # FileExistsError: a foreign sample root


if __name__ == "__main__":
    sys.exit(main())
