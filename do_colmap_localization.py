#!/usr/bin/env python3
"""Stage 4: sparse aerial model from the known GES poses, the MegaDepth photos registered into it (metric), then

The code is aerialmd/cli/do_colmap_localization.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.do_colmap_localization import main

if __name__ == "__main__":
    sys.exit(main())
