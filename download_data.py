#!/usr/bin/env python3
"""Download AerialMegaDepth data from Google Drive links or the Hugging Face dataset, and unpack it.

The code is aerialmd/cli/download_data.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.download_data import main

if __name__ == "__main__":
    sys.exit(main())
