"""Stage 4: sparse aerial model from the known GES poses, the MegaDepth photos registered into it (metric), then
multi-view stereo depth for every image (localized_dense_metric/).

    python do_colmap_localization.py --root_dir <data_root>/data --megadepth_dir <processed MegaDepth> \\
        --megadepth_image_list datasets_preprocess/megadepth_image_list.npz [--scenes 0001] [--features sift]

Writes <root_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/ (see aerialmd/localization.py) and in it
localized_dense_metric/{images,depths,sparse-txt,dense.json} (see aerialmd/dense.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from aerialmd.stages.dense import add_mvs_arguments, dense_conf_from, densify, resolve_backend
from aerialmd.stages.localization import localize
from aerialmd.sfm.registration import POSE_PNP, POSE_PREDICTED
from aerialmd.run.scenes import SETUP_ERRORS, add_scene_arguments, exit_code_of
from aerialmd.layout import REPO_SCENE_LIST



def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root_dir", required=True, type=Path, help="<data_root>/data with the stage-2 scene folders")
    parser.add_argument("--megadepth_dir", required=True, type=Path, help="output of preprocess_megadepth.py")
    parser.add_argument("--megadepth_image_list", type=Path, default=REPO_SCENE_LIST, help="scene-list npz")
    add_scene_arguments(parser)
    parser.add_argument("--features", default="sift", help="local features: sift (CPU, default) or aliked")
    parser.add_argument("--matcher", default=None, help="nn-ratio (for sift) or lightglue (for aliked); "
                                                        "default: the natural matcher of --features")
    parser.add_argument("--max_keypoints", type=int, help="keypoints per image (default: 8192 sift, 4096 aliked)")
    parser.add_argument("--resize_max", type=int, help="downscale images to this long side before extraction")
    parser.add_argument("--registered_pose", default=POSE_PREDICTED, choices=(POSE_PREDICTED, POSE_PNP),
                        help="pose of a photo whose PnP pose confirms the scene Sim(3): its MegaDepth pose through "
                             "the refined Sim(3) (default; far less noisy) or its own PnP pose (when the MegaDepth "
                             "model is not rigid enough to trust)")
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
            code = localize(args.root_dir, args.megadepth_dir, args.megadepth_image_list, args.scenes, args.features,
                            args.matcher, args.overwrite, args.max_keypoints, args.resize_max, args.shard,
                            args.registered_pose)
        if not args.skip_mvs:
            code = max(code, densify(args.root_dir, args.megadepth_dir, args.megadepth_image_list, args.scenes,
                                     dense_conf_from(args), args.overwrite, args.shard))
        return code

    return exit_code_of(run, (*SETUP_ERRORS, RuntimeError))  # RuntimeError: the colmap backend without CUDA


if __name__ == "__main__":
    sys.exit(main())
