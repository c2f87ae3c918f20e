#!/usr/bin/env python3
"""Stage 2: extract Google Earth Studio frames and decode per-frame metric cameras, scene by scene.

The code is aerialmd/cli/preprocess_ge.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.preprocess_ge import main

if __name__ == "__main__":
    sys.exit(main())
