"""Stage 4: sparse aerial model from the known GES poses, the MegaDepth photos registered into it (metric), then
multi-view stereo depth for every image (localized_dense_metric/).

    python do_colmap_localization.py --data_root <root> [--scenes 0001] [--features auto|sift|aliked]
    python do_colmap_localization.py --root_dir <root>/data --megadepth_dir <processed MegaDepth> \\
        --megadepth_image_list datasets_preprocess/megadepth_image_list.npz          # the original flags

Writes <root>/data/<scene>/sfm_output_localization/sfm_<features>+<matcher>/ (see aerialmd/stages/localization.py)
and in it localized_dense_metric/{images,depths,sparse-txt,dense.json} (see aerialmd/stages/dense.py).
"""

from __future__ import annotations

import argparse
import sys

from aerialmd.cli.flags import (
    add_localization_arguments,
    add_megadepth_processed_argument,
    add_mvs_arguments,
    add_scene_arguments,
    add_scene_list_argument,
    add_scenes_dir_arguments,
    data_root_of,
    dense_conf_from,
    localization_conf_from,
    megadepth_processed,
    scene_list,
    scenes_dir,
)
from aerialmd.mvs.backends import resolve_backend
from aerialmd.run.scenes import SETUP_ERRORS, exit_code_of
from aerialmd.stages.dense import densify
from aerialmd.stages.localization import localize


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scenes_dir_arguments(parser)
    add_megadepth_processed_argument(parser, "--megadepth_dir",
                                     note="; --megadepth_dir is the original script's name for it")
    add_scene_list_argument(parser)
    add_scene_arguments(parser)
    add_localization_arguments(parser.add_argument_group("registration"))
    parser.add_argument("--overwrite", action="store_true", help="redo scenes whose output exists")
    mvs = parser.add_argument_group("multi-view stereo (localized_dense_metric)")
    add_mvs_arguments(mvs)
    mvs.add_argument("--skip_mvs", action="store_true", help="stop after registration")
    mvs.add_argument("--mvs_only", action="store_true", help="only the MVS step (registration must exist)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)

    def run() -> int:
        code = 0
        if not args.skip_mvs:
            resolve_backend(args.mvs_backend)  # before hours of registration, not after
        if not args.mvs_only:
            code = localize(scenes_dir(args), megadepth_processed(args), scene_list(args, data_root_of(args)),
                            args.scenes, localization_conf_from(args), args.overwrite, args.shard)
        if not args.skip_mvs:
            code = max(code, densify(scenes_dir(args), megadepth_processed(args), scene_list(args, data_root_of(args)),
                                     args.scenes, dense_conf_from(args), args.overwrite, args.shard))
        return code

    return exit_code_of(run, (*SETUP_ERRORS, RuntimeError))  # RuntimeError: the colmap backend without CUDA


if __name__ == "__main__":
    sys.exit(main())
