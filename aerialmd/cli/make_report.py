"""(Re)make the per-scene reports and the data root's index.html from the outputs on disk.

run_pipeline.py does this after the stages; run this after stages run by hand or on a cluster, or at any time to see
where the scenes are. Writes <data_root>/reports/<scene>/{report.json, *.png} and <data_root>/index.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aerialmd.cli.flags import (
    add_megadepth_processed_argument,
    add_scene_arguments,
    add_scene_list_argument,
    megadepth_processed,
    scene_list,
)
from aerialmd.run.scenes import exit_code_of
from aerialmd.stages.report import write_reports


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", type=Path, default=Path("sample_data"),
                        help="data root (holds downloaded_data/ and data/; default: the sample, ./sample_data)")
    add_megadepth_processed_argument(parser)
    add_scene_list_argument(parser)
    add_scene_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return exit_code_of(lambda: write_reports(args.data_root, megadepth_processed(args),
                                              scene_list(args, args.data_root), args.scenes, args.shard))


if __name__ == "__main__":
    sys.exit(main())
