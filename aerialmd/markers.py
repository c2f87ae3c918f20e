"""Settings markers: every finished scene output records the settings that made it, so a rerun with other settings
is detected (and refused without --overwrite) instead of silently skipped or mixed with the old outputs.

Where a stage keeps them: stage 2 in `data/<scene>/ge_cameras.json`, stage 4a in `registration.json`, stage 4b in
`localized_dense_metric/dense.json`, each under the key `settings`. Those files are written inside the stage's
atomic output folder, so a marker exists only for a finished output. The export, which is resumable per file, keeps
its settings in `<export>/<scene>/settings.json` (check_folder_settings, record_folder_settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic

SETTINGS_KEY = "settings"
FOLDER_SETTINGS = "settings.json"  # check_folder_settings' marker


def recorded_settings(marker: Path) -> dict[str, Any] | None:
    """The settings a finished output recorded (an empty dict when it recorded none), or None when unfinished."""
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get(SETTINGS_KEY, {})


def refuse_other_settings(marker: Path, recorded: dict[str, Any], settings: dict[str, Any]) -> None:
    """A ValueError naming the output of `marker` and the settings that differ, when `recorded` are not `settings`."""
    settings = json.loads(json.dumps(settings))  # as it reads back from JSON (tuples become lists)
    if recorded != settings:
        changed = sorted(k for k in {*recorded, *settings} if recorded.get(k, "absent") != settings.get(k, "absent"))
        details = ", ".join(f"{k}: {recorded.get(k, 'absent')} -> {settings.get(k, 'absent')}" for k in changed)
        raise ValueError(f"{marker.parent} was made with other settings ({details}); use --overwrite to redo it")


def is_finished(marker: Path, settings: dict[str, Any]) -> bool:
    """True when the output of `marker` is finished with these settings (skip it), False when it is not finished;
    a ValueError naming the output and the settings that differ when it was made with others."""
    recorded = recorded_settings(marker)
    if recorded is not None:
        refuse_other_settings(marker, recorded, settings)
    return recorded is not None


def check_folder_settings(folder: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """For stages that fill a folder file by file (resumable per file, e.g. the export): a ValueError when the files
    already there were made with other settings (as record_folder_settings recorded them), unless overwrite (which
    redoes every file)."""
    recorded = recorded_settings(folder / FOLDER_SETTINGS)
    if not overwrite and recorded is not None:
        refuse_other_settings(folder / FOLDER_SETTINGS, recorded, settings)


def record_folder_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Record the settings of a folder filled file by file; called before its first file is written."""
    write_text_atomic(folder / FOLDER_SETTINGS, json.dumps({SETTINGS_KEY: settings}, indent=1))
