#!/usr/bin/env python3
"""Export AerialMegaDepth training data: per image of a pair file, RGB (.jpg), metric depth (.exr) and camera (.npz).

The code is aerialmd/cli/preprocess_aerialmegadepth.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.preprocess_aerialmegadepth import main

if __name__ == "__main__":
    sys.exit(main())
