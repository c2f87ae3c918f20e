"""Settings markers: every finished scene output records the settings that made it, so a rerun with other settings
is detected (and refused without --overwrite) instead of silently skipped or mixed with the old outputs.

Where a stage keeps them: stage 2 in `data/<scene>/ge_cameras.json`, stage 4a in `registration.json`, stage 4b in
`localized_dense_metric/dense.json`, each under the key `settings`. Those files are written inside the stage's
atomic output folder, so a marker exists only for a finished output. The export, which is resumable per file, keeps
its settings in `<export>/<scene>/settings.json` (check_folder_settings, record_folder_settings).

Markers also record, under `made_from`, a fingerprint of the upstream marker their output was made from (stage 4a:
ge_cameras.json, and stage 3's photos per subscene, aerialmd.stages.preprocess_megadepth.outputs_fingerprint; the
export: dense.json), so that an output made from an upstream stage that has been redone since is refused (without
--overwrite) instead of silently reused or, for the export, mixed with files made from the new one. Stage 4b needs no
fingerprint: its outputs live inside stage 4a's folder and are replaced with it. An upstream
marker that cannot be read now (the published data has no dense.json; an output deleted after use) is not compared,
nor is an output made before fingerprints were recorded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aerialmd.atomic import write_text_atomic
from aerialmd.layout import CAMERAS_FILE, FOLDER_SETTINGS

SETTINGS_KEY = "settings"
MADE_FROM_KEY = "made_from"


def input_fingerprints(*markers: Path, root: Path | None = None) -> dict[str, str]:
    """Per upstream marker that exists, by file name (path relative to `root` when given), a hash of its bytes (a
    redone stage rewrites its marker: new settings, figures or timings)."""
    return {marker.name if root is None else marker.relative_to(root).as_posix():
            hashlib.sha256(marker.read_bytes()).hexdigest()[:16] for marker in markers if marker.is_file()}


def is_preprocessed(scene_dir: Path) -> bool:
    """Stage 2 finished for the scene: its marker, moved in last, is there."""
    return (scene_dir / CAMERAS_FILE).is_file()


def cameras_fingerprint(scene_dir: Path) -> dict[str, str]:
    """What later stages record as made from stage 2 (input_fingerprints of its marker)."""
    return input_fingerprints(scene_dir / CAMERAS_FILE)


def as_recorded(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as they read back from a marker's JSON (tuples become lists), to compare with recorded ones."""
    return json.loads(json.dumps(settings))


def refuse_other_settings(marker: Path, recorded: dict[str, Any], settings: dict[str, Any]) -> None:
    """A ValueError naming the output of `marker` and the settings that differ, when `recorded` are not `settings`."""
    settings = as_recorded(settings)
    if recorded != settings:
        changed = sorted(k for k in {*recorded, *settings} if recorded.get(k, "absent") != settings.get(k, "absent"))
        details = ", ".join(f"{k}: {recorded.get(k, 'absent')} -> {settings.get(k, 'absent')}" for k in changed)
        raise ValueError(f"{marker.parent} was made with other settings ({details}); use --overwrite to redo it")


def changed_inputs(recorded: dict[str, str], inputs: dict[str, str]) -> list[str]:
    """The upstream markers whose fingerprint now differs from the recorded one (only those known both then and now
    are compared)."""
    return sorted(name for name in recorded.keys() & inputs.keys() if recorded[name] != inputs[name])


def refuse_changed_inputs(marker: Path, recorded: dict[str, str], inputs: dict[str, str]) -> None:
    """A ValueError naming the output of `marker` when an upstream marker it recorded has changed since."""
    changed = changed_inputs(recorded, inputs)
    if changed:
        raise ValueError(f"{marker.parent} was made from an earlier {', '.join(changed)} (that stage was redone "
                         f"since); use --overwrite to redo it")


def is_finished(marker: Path, settings: dict[str, Any], inputs: dict[str, str] | None = None,
                added: dict[str, Any] | None = None) -> bool:
    """True when the output of `marker` is finished with these settings (skip it), False when it is not finished;
    a ValueError naming the output and the settings that differ when it was made with others, or the upstream
    marker (`inputs`, see input_fingerprints) that changed since it was made. `added`: settings recorded only
    since a later version, with the value outputs made before then were made with (an output without them counts
    as made with these)."""
    if not marker.is_file():
        return False
    document = json.loads(marker.read_text())
    refuse_other_settings(marker, {**(added or {}), **document.get(SETTINGS_KEY, {})}, settings)
    refuse_changed_inputs(marker, document.get(MADE_FROM_KEY, {}), inputs or {})
    return True


def check_folder_settings(folder: Path, settings: dict[str, Any], overwrite: bool,
                          inputs: dict[str, str] | None = None) -> None:
    """For stages that fill a folder file by file (resumable per file, e.g. the export): a ValueError when the files
    already there were made with other settings or from an upstream output that changed since (as
    record_folder_settings recorded them), unless overwrite (which redoes every file)."""
    if not overwrite:
        is_finished(folder / FOLDER_SETTINGS, settings, inputs)


def record_folder_settings(folder: Path, settings: dict[str, Any], inputs: dict[str, str] | None = None) -> None:
    """Record the settings (and upstream fingerprints) of a folder filled file by file; called before its first file
    is written."""
    document = {SETTINGS_KEY: settings, MADE_FROM_KEY: inputs or {}}
    write_text_atomic(folder / FOLDER_SETTINGS, json.dumps(document, indent=1))
