"""Command-line options shared by the scripts, with one name and one meaning each, and the stage settings they make.

Path flags (every script that takes the folder uses the same flag; the original repository's names are kept as
aliases where they differed):
    --data_root ROOT            holds downloaded_data/ (GES renders), data/<scene>/ (scene folders), megadepth_processed/
    --scenes_dir ROOT/data      the scene folders alone (aliases: --root_dir, --megadepth_aerial_dir); default
                                <data_root>/data
    --megadepth_dir DIR         MegaDepth as downloaded (MegaDepth_v1_SfM/, phoenix/)
    --megadepth_processed DIR   stage 3's output (alias --output_dir in preprocess_megadepth.py); default
                                <data_root>/megadepth_processed. In do_colmap_localization.py the original
                                --megadepth_dir means this folder, as in the original repository.
    --scene_list NPZ            the scene list (alias --megadepth_image_list)
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from aerialmd.layout import MEGADEPTH_PROCESSED_DIR, REPO_SCENE_LIST, SCENES_DIR, DataRoot
from aerialmd.mvs.backends import BACKENDS
from aerialmd.run.scenes import parse_shard, shard_from_environment
from aerialmd.sfm.registration import POSE_PNP, POSE_PREDICTED
from aerialmd.stages.dense import DenseConf
from aerialmd.stages.localization import LocalizationConf

ArgumentTarget = argparse.ArgumentParser | argparse._ArgumentGroup


def add_scene_arguments(parser: ArgumentTarget) -> None:
    """--scenes and --shard, the same for every stage script."""
    parser.add_argument("--scenes", nargs="+", metavar="ID", help="only these scene ids (default: the whole list)")
    parser.add_argument("--shard", type=parse_shard, default=shard_from_environment(), metavar="K/N",
                        help="process part K (0-based) of N of the scenes, round robin over the sorted list; "
                             "default from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set")


def add_scene_list_argument(parser: ArgumentTarget) -> None:
    """--scene_list (alias --megadepth_image_list)."""
    parser.add_argument("--scene_list", "--megadepth_image_list", dest="scene_list", type=Path, default=None,
                        help="scene-list npz: (scene, subscene) -> MegaDepth image names (default: "
                             "<data_root>/megadepth_image_list.npz when there, else the repository's "
                             "datasets_preprocess/megadepth_image_list.npz)")


def add_scenes_dir_arguments(parser: ArgumentTarget, required: bool = True) -> None:
    """--data_root, or --scenes_dir (aliases --root_dir, --megadepth_aerial_dir) for the scene folders alone."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--data_root", type=Path, help="the data root (its scene folders are <data_root>/data)")
    group.add_argument("--scenes_dir", "--root_dir", "--megadepth_aerial_dir", dest="scenes_dir", type=Path,
                       help="the folder of the scene folders, <data_root>/data (the original scripts' --root_dir "
                            "and --megadepth_aerial_dir)")


def add_megadepth_processed_argument(parser: ArgumentTarget, *aliases: str, note: str = "",
                                     required: bool = False) -> None:
    """--megadepth_processed (and this script's aliases for it)."""
    default = "" if required else f" (default: <data_root>/{MEGADEPTH_PROCESSED_DIR})"
    parser.add_argument("--megadepth_processed", *aliases, type=Path, default=None,
                        required=required, help=f"stage 3's output, preprocess_megadepth.py's{default}{note}")


def scenes_dir(args: argparse.Namespace) -> Path:
    """The scene folders: --scenes_dir, else <--data_root>/data."""
    return args.scenes_dir if args.scenes_dir is not None else args.data_root / SCENES_DIR


def data_root_of(args: argparse.Namespace) -> Path:
    """The data root: --data_root, else the parent of --scenes_dir."""
    return args.data_root if getattr(args, "data_root", None) is not None else args.scenes_dir.parent


def megadepth_processed(args: argparse.Namespace) -> Path:
    """Stage 3's output: --megadepth_processed, else <data root>/megadepth_processed."""
    return args.megadepth_processed or data_root_of(args) / MEGADEPTH_PROCESSED_DIR


def scene_list(args: argparse.Namespace, data_root: Path | None = None) -> Path:
    """--scene_list, else the data root's own list when it has one (the sample does), else the repository's."""
    if args.scene_list is not None:
        return args.scene_list
    own = DataRoot(data_root).scene_list if data_root is not None else None
    return own if own is not None and own.is_file() else REPO_SCENE_LIST


def add_localization_arguments(parser: ArgumentTarget) -> None:
    """Stage 4a's options (do_colmap_localization.py and run_pipeline.py); read by localization_conf_from."""
    defaults = LocalizationConf()
    parser.add_argument("--features", default=defaults.features,
                        help="local features: auto (default: aliked + LightGlue when --features_device resolves to "
                             "CUDA, else sift), sift or aliked")
    parser.add_argument("--matcher", default=None, help="nn-ratio (for sift) or lightglue (for aliked); "
                                                        "default: the natural matcher of --features")
    parser.add_argument("--max_keypoints", type=int, help="keypoints per image (default: 8192 sift, 4096 aliked)")
    parser.add_argument("--resize_max", type=int, help="downscale images to this long side before extraction")
    parser.add_argument("--features_device", default=defaults.device,
                        help="device of ALIKED and LightGlue: auto (CUDA when there), cpu, cuda, cuda:1 ...")
    parser.add_argument("--registered_pose", default=POSE_PREDICTED, choices=(POSE_PREDICTED, POSE_PNP),
                        help="pose of a photo whose PnP pose confirms the scene Sim(3): its MegaDepth pose through "
                             "the refined Sim(3) (default; far less noisy) or its own PnP pose (when the MegaDepth "
                             "model is not rigid enough to trust)")


def localization_conf_from(args: argparse.Namespace) -> LocalizationConf:
    """The LocalizationConf of add_localization_arguments' options."""
    defaults = LocalizationConf()
    return LocalizationConf(features=args.features, matcher=args.matcher, max_keypoints=args.max_keypoints,
                            resize_max=args.resize_max, device=args.features_device,
                            registration=dataclasses.replace(defaults.registration,
                                                             registered_pose=args.registered_pose))


def add_mvs_arguments(parser: ArgumentTarget, default_size_note: str = "") -> None:
    """The MVS stage's options (--mvs_*) of do_colmap_localization.py and run_pipeline.py; read by dense_conf_from."""
    defaults = DenseConf()
    parser.add_argument("--mvs_backend", default=defaults.backend, choices=BACKENDS,
                        help="colmap: pycolmap PatchMatch (needs CUDA); torch: plane sweep on CPU/CUDA; auto: colmap "
                             "when pycolmap has CUDA")
    parser.add_argument("--mvs_max_image_size", type=int, default=None,
                        help=f"long side of the undistorted images and depth maps (default: {defaults.max_image_size}"
                             f"{default_size_note})")
    parser.add_argument("--mvs_num_sources", type=int, default=defaults.num_sources, help="source views per image")
    parser.add_argument("--mvs_horizontal_planes", action=argparse.BooleanOptionalAction,
                        default=defaults.horizontal_planes,
                        help="torch backend: also sweep horizontal planes (ground, roofs; twice the time; default: on)")
    parser.add_argument("--mvs_vertical_planes", action=argparse.BooleanOptionalAction, default=True,
                        help="torch backend: also sweep vertical planes turned 45 degrees either way from facing the "
                             "camera (facades seen obliquely; about 1.3x the sweep's time; default: on)")
    parser.add_argument("--mvs_megadepth", action=argparse.BooleanOptionalAction,
                        default=defaults.rank_by_megadepth and defaults.megadepth_vote,
                        help="torch backend: rank a ground photo's stereo partners over its MegaDepth depth and count "
                             "that depth as one confirming view in the consistency filter (default: on)")
    parser.add_argument("--mvs_fill_rounds", type=int, default=defaults.fill_rounds,
                        help="rounds closing enclosed planar holes of the depth maps (0 = keep only confirmed depths)")
    parser.add_argument("--mvs_clean_sky", action=argparse.BooleanOptionalAction, default=defaults.clean_sky,
                        help="remove depths on the sky: low-contrast regions at the top of an image without depth, "
                             "and the band the matching spreads over them (default: on)")
    parser.add_argument("--mvs_flying_min_neighbours", type=int, default=defaults.flying_min_neighbours,
                        help="keep a depth only where this many of its 8 neighbours agree within 2 %% (flying pixels "
                             "at depth edges; 0 = off; default: %(default)s)")
    parser.add_argument("--mvs_silhouette_trim", type=float, default=defaults.silhouette_trim,
                        help="remove the depths within this fraction of the long side of a depth jump, on its near "
                             "side: the foreground's depth the matching window spreads past its silhouette (0 = off; "
                             "default: %(default).5f, 2 px at 640 px)")
    parser.add_argument("--mvs_device", default=defaults.device,
                        help="torch backend device: auto, cpu, cuda, cuda:1 ...")


def dense_conf_from(args: argparse.Namespace, default_size: int = DenseConf.max_image_size) -> DenseConf:
    """The DenseConf of add_mvs_arguments' options (`default_size` when --mvs_max_image_size is not given)."""
    return DenseConf(backend=args.mvs_backend, max_image_size=args.mvs_max_image_size or default_size,
                     num_sources=args.mvs_num_sources, horizontal_planes=args.mvs_horizontal_planes,
                     vertical_plane_azimuths=DenseConf.vertical_plane_azimuths if args.mvs_vertical_planes else (),
                     rank_by_megadepth=args.mvs_megadepth, megadepth_vote=args.mvs_megadepth,
                     fill_rounds=args.mvs_fill_rounds, clean_sky=args.mvs_clean_sky,
                     flying_min_neighbours=args.mvs_flying_min_neighbours,
                     silhouette_trim=args.mvs_silhouette_trim, device=args.mvs_device)
