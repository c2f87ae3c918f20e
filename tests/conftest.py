"""Shared fixtures: the real reference files in ../shared (skipped where absent) and a tiny sample scene."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("AERIALMD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or a skip (with the reason) where the shared folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared reference data not found: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """A tiny sample scene (generated once per test session), with its paths."""
    from aerialmd.sample_scene import SampleConfig, generate_sample

    config = SampleConfig.tiny()
    return generate_sample(tmp_path_factory.mktemp("sample") / "root", config), config
