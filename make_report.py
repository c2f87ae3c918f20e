#!/usr/bin/env python3
"""(Re)make the per-scene reports and the data root's index.html from the outputs on disk.

The code is aerialmd/cli/make_report.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.make_report import main

if __name__ == "__main__":
    sys.exit(main())
