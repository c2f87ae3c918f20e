"""DUSt3R/MASt3R dataloader for the exported AerialMegaDepth data (the seed's misc/megadepth_aerial.py).

With dust3r importable, `MegaDepthAerial` is a `BaseStereoViewDataset` subclass: DUSt3R does the crop/resize,
pts3d and image normalisation, exactly as for its other datasets, e.g. in a training command
    --train_dataset "10_000 @ MegaDepthAerial(split='train', ROOT='data/aerialmd', split_file='train.npz',
                                              resolution=[(512, 384), (512, 336)], aug_crop=16)"
Without dust3r it is aerialmd.training.dataset.MegaDepthAerial, a plain torch Dataset yielding the same views. The logic
lives in aerialmd/training/dataset.py (install the aerialmd package, `pip install -e .`, where dust3r runs).

Quick look at a few items:  python misc/megadepth_aerial.py --root data/aerialmd --split_file val.npz
"""

from __future__ import annotations

import argparse
import sys

from aerialmd.training.dataset import MegaDepthAerialPairs

try:
    from dust3r.datasets.base.base_stereo_view_dataset import BaseStereoViewDataset
except ModuleNotFoundError as exc:  # only a missing dust3r means "stand-alone"; a broken install is an error
    if exc.name != "dust3r":
        raise
    BaseStereoViewDataset = None

if BaseStereoViewDataset is None:
    from aerialmd.training.dataset import MegaDepthAerial  # noqa: F401
else:
    class MegaDepthAerial(MegaDepthAerialPairs, BaseStereoViewDataset):
        """AerialMegaDepth pairs as a DUSt3R dataset; arguments in aerialmd.training.dataset.MegaDepthAerialPairs."""


def main(argv: list[str] | None = None) -> int:
    """Print the size of the dataset and a summary of its first items."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="export folder (ROOT)")
    parser.add_argument("--split_file", required=True, help="pair file, relative to --root or absolute")
    parser.add_argument("--split", choices=("train", "val"), default=None, help="default: every pair of the file")
    parser.add_argument("--resolution", type=int, nargs=2, default=(512, 384), metavar=("W", "H"))
    parser.add_argument("--aug_crop", type=int, default=0)
    parser.add_argument("--sky_mask_dir", default=None)
    parser.add_argument("--num", type=int, default=3, help="items to show")
    args = parser.parse_args(argv)
    try:
        dataset = MegaDepthAerial(split=args.split, ROOT=args.root, split_file=args.split_file,
                                  resolution=tuple(args.resolution), aug_crop=args.aug_crop, seed=0,
                                  sky_mask_dir=args.sky_mask_dir)
        print(f"{type(dataset).__module__}.{type(dataset).__name__}: {dataset.get_stats()}")
        for idx in range(min(args.num, len(dataset))):
            for view in dataset[idx]:
                print(f"  [{idx}] {view['label']}/{view['instance']}: {tuple(view['img'].shape)} "
                      f"valid {float(view['valid_mask'].mean()):.0%}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
