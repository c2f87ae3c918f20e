"""Make the AerialMegaDepth pair file: co-visible image pairs scored by dense depth overlap, balanced by kind.

Usage: python datasets_preprocess/make_pairs.py --data_root <root> --output_path aerial_megadepth.npz \
           [--scenes 0001 0002] [--split_val 0015,0022] [--shard K/N]     (--megadepth_aerial_dir <root>/data works too)
       python datasets_preprocess/make_pairs.py --merge part_0.npz part_1.npz ... --output_path aerial_megadepth.npz

Scores every pair of images sharing sparse points by reprojecting each one's depth into the other
(aerialmd/stages/make_pairs.py), keeps pairs with min_score <= score <= max_score, balances aerial-aerial,
aerial-ground and ground-ground pairs (and score bins) up to --pairs_per_scene per scene, and writes the npz that
preprocess_aerialmegadepth.py reads. With
--split_val the listed scenes go to `<stem>_val.npz`, the others to `<stem>_train.npz`. Exit status: 0 when every scene
succeeded, 1 when a scene failed (the file holds the others), 2 on a setup error.
With --shard K/N (default from a SLURM array) only part K of the scenes is scored, into the --output_path given; --merge
then joins the shards' files into the file an unsharded run writes (use one --split_val for every shard, then merge
the _train and the _val files separately).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aerialmd.cli.flags import add_scene_arguments, add_scenes_dir_arguments, scenes_dir
from aerialmd.run.scenes import exit_code_of
from aerialmd.stages.make_pairs import PairsConf, make_pairs, merge_pair_file_paths

DEFAULTS = PairsConf()


def scene_ids(text: str) -> list[str]:
    """Comma-separated scene ids."""
    ids = [s.strip() for s in text.split(",") if s.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected comma-separated scene ids, e.g. 0015,0022")
    return ids


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scenes_dir_arguments(parser, required=False)
    parser.add_argument("--output_path", required=True, type=Path, help="pair file to write (.npz)")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="FILE",
                        help="instead of scoring: merge these pair files (e.g. of the shards) into --output_path")
    add_scene_arguments(parser)
    parser.add_argument("--sfm_name", help="sfm_* folder to read (default: the only one of each scene)")
    parser.add_argument("--min_score", type=float, default=DEFAULTS.min_score, help="(default: %(default)s)")
    parser.add_argument("--max_score", type=float, default=DEFAULTS.max_score, help="(default: %(default)s)")
    parser.add_argument("--split_val", type=scene_ids, metavar="ID,ID",
                        help="write <stem>_train.npz and <stem>_val.npz, these scenes in val (published: 0015,0022)")
    parser.add_argument("--pairs_per_scene", type=int, default=DEFAULTS.pairs_per_scene,
                        help="pairs kept per scene, balanced over kinds and score bins; 0 keeps all in the window "
                             "(default: %(default)s)")
    parser.add_argument("--max_side", type=int, default=DEFAULTS.max_side,
                        help="depth maps are subsampled by an integer stride to at most this long side for scoring "
                             "(default: %(default)s)")
    parser.add_argument("--rel_tol", type=float, default=DEFAULTS.rel_tol,
                        help="relative depth agreement tolerance (default: %(default)s)")
    parser.add_argument("--combine", choices=("min", "mean"), default=DEFAULTS.combine,
                        help="symmetric score from the two directions (default: %(default)s)")
    parser.add_argument("--min_shared_points", type=int, default=DEFAULTS.min_shared_points,
                        help="sparse points two images must share to be scored (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="selection seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers,
                        help="scoring threads over source images; worth it on machines with more cores than the BLAS "
                             "already uses (default: %(default)s)")
    args = parser.parse_args(argv)
    if (args.merge is None) == (args.data_root is None and args.scenes_dir is None):
        parser.error("give either --data_root / --megadepth_aerial_dir (score pairs) or --merge (join pair files)")
    if not 0 <= args.min_score <= args.max_score:
        parser.error("need 0 <= --min_score <= --max_score")
    if args.max_side < 1 or args.workers < 1 or args.min_shared_points < 1 or not args.rel_tol > 0:
        parser.error("--max_side, --workers and --min_shared_points must be at least 1, --rel_tol positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conf = PairsConf(min_score=args.min_score, max_score=args.max_score, pairs_per_scene=args.pairs_per_scene,
                     max_side=args.max_side, rel_tol=args.rel_tol, combine=args.combine,
                     min_shared_points=args.min_shared_points, seed=args.seed, workers=args.workers)

    def merge() -> int:
        merge_pair_file_paths(args.merge, args.output_path)
        return 0

    if args.merge:
        return exit_code_of(merge)
    return exit_code_of(lambda: make_pairs(scenes_dir(args), args.output_path, args.scenes, conf,
                                           args.split_val, args.sfm_name, args.shard))


if __name__ == "__main__":
    sys.exit(main())
