#!/usr/bin/env python3
"""Run every stage of the pipeline, in order, for one data root.

With no arguments: creates the built-in sample scene under ./sample_data (if not there yet) and runs all stages on it.
With --data_root (and --megadepth_dir, --scene_list): runs the stages on your own data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aerialmd.pipeline import PipelinePaths, Stage, build_stages, format_summary, run_stages, sample_pipeline  # noqa: E402
from aerialmd.sample_scene import SampleConfig  # noqa: E402
from aerialmd.scenes import add_scene_arguments  # noqa: E402

SAMPLE_SIZES = {"default": SampleConfig(), "tiny": SampleConfig.tiny()}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample_root", type=Path, default=Path("sample_data"), help="where the sample scene lives")
    parser.add_argument("--sample_size", choices=sorted(SAMPLE_SIZES), default="default")
    parser.add_argument("--data_root", type=Path, help="your data root (holds downloaded_data/); skips the sample")
    parser.add_argument("--megadepth_dir", type=Path, help="MegaDepth root (with --data_root)")
    parser.add_argument("--scene_list", type=Path, default=Path(__file__).resolve().parent / "datasets_preprocess" /
                        "megadepth_image_list.npz", help="scene-list npz (with --data_root)")
    add_scene_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, help="parallel workers per stage (default: CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished work")
    return parser


def resolve_paths(args: argparse.Namespace) -> tuple[PipelinePaths, list[Stage]]:
    """The user's data, or the sample scene (whose creation is then the first stage)."""
    if args.data_root is not None:
        if args.megadepth_dir is None:
            raise ValueError("--data_root needs --megadepth_dir")
        return PipelinePaths(args.data_root, args.megadepth_dir, args.scene_list, args.data_root / "megadepth_processed"), []
    paths, stage = sample_pipeline(args.sample_root, SAMPLE_SIZES[args.sample_size])
    return paths, [stage]


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        paths, first = resolve_paths(args)
        results = run_stages(first + build_stages(paths, args.scenes, args.workers, args.overwrite, args.shard))
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_summary(results))
    return max((r.exit_code for r in results), default=0)


if __name__ == "__main__":
    sys.exit(main())
