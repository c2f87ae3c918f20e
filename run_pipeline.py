#!/usr/bin/env python3
"""Run every stage of the pipeline, in order, for one data root.

The code is aerialmd/cli/run_pipeline.py (installed as a console script too); `--help` lists the flags."""

import sys

from aerialmd.cli.run_pipeline import main

if __name__ == "__main__":
    sys.exit(main())
