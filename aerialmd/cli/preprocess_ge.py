"""Stage 2: extract Google Earth Studio frames and decode per-frame metric cameras, scene by scene.

    python datasets_preprocess/preprocess_ge.py --data_root <root> --scene_list datasets_preprocess/megadepth_image_list.npz

Reads <root>/downloaded_data/<scene>.{mp4,json}; writes <root>/data/<scene>/ (see aerialmd/stages/preprocess_ge.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aerialmd.cli.flags import add_scene_arguments, add_scene_list_argument, scene_list
from aerialmd.geometry.geodesy import SpherePoint
from aerialmd.run.scenes import exit_code_of
from aerialmd.stages.preprocess_ge import preprocess_ge


def parse_origin(text: str) -> SpherePoint:
    """`lat,lon,alt` (degrees, degrees, metres on the GES sphere)."""
    try:
        lat, lon, alt = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--origin expects lat,lon,alt, got {text!r}") from exc
    return SpherePoint(lat, lon, alt)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", required=True, type=Path, help="holds downloaded_data/; data/ is written here")
    add_scene_list_argument(parser)
    add_scene_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, help="JPEG encoding threads (default: CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="redo scenes whose output exists")
    parser.add_argument("--origin", type=parse_origin, default=None,
                        help="ENU origin lat,lon,alt on the GES sphere (default: first track point; for Local exports "
                             "the export's origin, without which poses stay in its ECEF-parallel axes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return exit_code_of(lambda: preprocess_ge(args.data_root, scene_list(args, args.data_root), args.scenes, args.origin,
                                              args.overwrite, args.workers, args.shard))


if __name__ == "__main__":
    sys.exit(main())
