"""Export AerialMegaDepth training data: per image of a pair file, RGB (.jpg), metric depth (.exr) and camera (.npz).

Usage: python datasets_preprocess/preprocess_aerialmegadepth.py --data_root <root>  (or --megadepth_aerial_dir <root>/data) \
           --precomputed_pairs aerial_megadepth_train.npz --output_dir <aerial_megadepth_processed> [--scenes 0001] \
           [--format dust3r megadepth_scene_info covisibility]

Reads `<megadepth_aerial_dir>/<scene>/sfm_output_localization/sfm_*/localized_dense_metric/` and writes
`<output_dir>/<scene>/<image>.{jpg,exr,npz}`, and with --format the scene files of other trainers (see
aerialmd/stages/export.py and export_formats.py). Names of the pair file without data are listed at
the end. Exit status: 0 when every scene exported, 1 when a scene failed, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aerialmd.cli.flags import add_scene_arguments, add_scenes_dir_arguments, scenes_dir
from aerialmd.run.scenes import exit_code_of
from aerialmd.stages.export import DEFAULT_MAX_DEPTH, export_aerialmegadepth
from aerialmd.stages.export_formats import FORMATS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scenes_dir_arguments(parser)
    parser.add_argument("--precomputed_pairs", required=True, type=Path,
                        help="pair file npz (published aerial_megadepth_*.npz or make_pairs.py output)")
    parser.add_argument("--output_dir", required=True, type=Path, help="the export folder: <output_dir>/<scene>/...")
    add_scene_arguments(parser)
    parser.add_argument("--sfm_name", help="sfm_* folder to read (default: the only one of each scene)")
    parser.add_argument("--max_depth", type=float, default=DEFAULT_MAX_DEPTH,
                        help="depths beyond this many metres become invalid (0) (default: %(default)s; inf: no cut)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (1: work in this process) (default: %(default)s)")
    parser.add_argument("--format", nargs="+", default=["dust3r"], choices=FORMATS, dest="formats",
                        help="what to write (dust3r's files are always written): dust3r (DUSt3R/MASt3R), "
                             "megadepth_scene_info (LoFTR, glue-factory, RoMa, DKM), covisibility (MapAnything, VGGT, "
                             "MASt3R-SfM) (default: dust3r)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not args.max_depth > 0:
        parser.error("--max_depth must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_code_of(lambda: export_aerialmegadepth(scenes_dir(args), args.precomputed_pairs,
                                                       args.output_dir, args.scenes, args.max_depth, args.workers,
                                                       args.overwrite, args.shard, args.sfm_name, args.formats))


if __name__ == "__main__":
    sys.exit(main())
