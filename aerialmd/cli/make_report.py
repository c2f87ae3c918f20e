"""(Re)make the per-scene reports and the data root's index.html from the outputs on disk.

run_pipeline.py does this after the stages; run this after stages run by hand or on a cluster, or at any time to see
where the scenes are. Writes <data_root>/reports/<scene>/{report.json, *.png} and <data_root>/index.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from aerialmd.stages.report import write_reports
from aerialmd.run.scenes import add_scene_arguments, exit_code_of
from aerialmd.layout import REPO_SCENE_LIST



def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", type=Path, default=Path("sample_data"),
                        help="data root (holds downloaded_data/ and data/; default: the sample, ./sample_data)")
    parser.add_argument("--megadepth_processed", type=Path, default=None,
                        help="preprocessed MegaDepth folder (default: <data_root>/megadepth_processed)")
    parser.add_argument("--scene_list", type=Path, default=None,
                        help="scene-list npz (default: <data_root>/megadepth_image_list.npz when there, as in the "
                             "sample, else the repository's list)")
    add_scene_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    local_list = args.data_root / "megadepth_image_list.npz"
    scene_list = args.scene_list or (local_list if local_list.is_file() else REPO_SCENE_LIST)
    return exit_code_of(lambda: write_reports(args.data_root, args.megadepth_processed or args.data_root /
                                              "megadepth_processed", scene_list, args.scenes, args.shard))


if __name__ == "__main__":
    sys.exit(main())
