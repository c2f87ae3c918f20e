"""Preprocess MegaDepth scenes: undistorted intrinsics, cam2world poses and downscaled photos/depths per image.

Usage: python datasets_preprocess/preprocess_megadepth.py --megadepth_dir /data/megadepth --output_dir /data/md_processed
"""

from __future__ import annotations

import argparse
import os
import sys

from aerialmd.cli.flags import (
    add_megadepth_processed_argument,
    add_scene_arguments,
    add_scene_list_argument,
    scene_list,
)
from aerialmd.run.scenes import exit_code_of
from aerialmd.stages.preprocess_megadepth import preprocess_megadepth


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megadepth_dir", required=True,
                        help="MegaDepth as downloaded: its root (MegaDepth_v1_SfM/, phoenix/) or its MegaDepth_v1_SfM")
    add_megadepth_processed_argument(parser, "--output_dir", required=True,
                                     note="; written here (--output_dir is the original script's name for it)")
    add_scene_list_argument(parser)
    add_scene_arguments(parser)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image threads (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_code_of(lambda: preprocess_megadepth(args.megadepth_dir, scene_list(args), args.megadepth_processed,
                                                     args.scenes, args.workers, args.overwrite, args.shard))


if __name__ == "__main__":
    sys.exit(main())
