#!/usr/bin/env python3
"""Preprocess MegaDepth scenes: undistorted intrinsics, cam2world poses and downscaled photos/depths per image.

The code is aerialmd/cli/preprocess_megadepth.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.preprocess_megadepth import main

if __name__ == "__main__":
    sys.exit(main())
