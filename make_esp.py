#!/usr/bin/env python3
"""Write a Google Earth Studio project (.esp) with orbits around a point, ready to render in GES.

The code is aerialmd/cli/make_esp.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.make_esp import main

if __name__ == "__main__":
    sys.exit(main())
