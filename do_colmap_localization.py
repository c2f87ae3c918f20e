#!/usr/bin/env python3
"""Stage 4a: sparse aerial model from the known GES poses, then the MegaDepth photos registered into it (metric).

    python do_colmap_localization.py --root_dir <data_root>/data --megadepth_dir <processed MegaDepth> \\
        --megadepth_image_list datasets_preprocess/megadepth_image_list.npz [--scenes 0001] [--features sift]

Writes <root_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/ (see aerialmd/localization.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aerialmd.localization import localize  # noqa: E402
from aerialmd.scenes import add_scene_arguments  # noqa: E402

DEFAULT_SCENE_LIST = Path(__file__).resolve().parent / "datasets_preprocess" / "megadepth_image_list.npz"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root_dir", required=True, type=Path, help="<data_root>/data with the stage-2 scene folders")
    parser.add_argument("--megadepth_dir", required=True, type=Path, help="output of preprocess_megadepth.py")
    parser.add_argument("--megadepth_image_list", type=Path, default=DEFAULT_SCENE_LIST, help="scene-list npz")
    add_scene_arguments(parser)
    parser.add_argument("--features", default="sift", help="local features: sift (CPU, default) or aliked")
    parser.add_argument("--matcher", default=None, help="nn-ratio (for sift) or lightglue (for aliked); "
                                                        "default: the natural matcher of --features")
    parser.add_argument("--max_keypoints", type=int, help="keypoints per image (default: 8192 sift, 4096 aliked)")
    parser.add_argument("--resize_max", type=int, help="downscale images to this long side before extraction")
    parser.add_argument("--overwrite", action="store_true", help="redo scenes whose output exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return localize(args.root_dir, args.megadepth_dir, args.megadepth_image_list, args.scenes, args.features,
                        args.matcher, args.overwrite, args.max_keypoints, args.resize_max, args.shard)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
