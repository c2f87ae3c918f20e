#!/usr/bin/env python3
"""Make the AerialMegaDepth pair file: co-visible image pairs scored by dense depth overlap, balanced by kind.

The code is aerialmd/cli/make_pairs.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.make_pairs import main

if __name__ == "__main__":
    sys.exit(main())
