"""Scene lists and per-scene run bookkeeping shared by every stage script."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

SceneImages = dict[str, dict[str, list[str]]]  # scene id -> subscene id -> MegaDepth image names


def load_scene_list(path: Path | str) -> SceneImages:
    """Read a scene-list npz: `data` holds a dict (scene_id, subscene_id) -> [image names]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scene list not found")
    try:
        raw = np.load(path, allow_pickle=True)["data"].item()
    except Exception as exc:  # np.load raises many types for a bad file
        raise ValueError(f"{path}: not a scene-list npz with a 'data' dict ({exc})") from exc
    scenes: SceneImages = defaultdict(dict)
    for (scene, subscene), names in raw.items():
        scenes[str(scene)][str(subscene)] = [str(n) for n in names]
    return dict(sorted(scenes.items()))


def save_scene_list(path: Path | str, scenes: SceneImages) -> None:
    """Write a scene-list npz in the published format."""
    data = {(scene, sub): list(names) for scene, subs in scenes.items() for sub, names in subs.items()}
    np.savez(path, data=np.array(data, dtype=object))


def select_scenes(available: Iterable[str], requested: Iterable[str] | None) -> list[str]:
    """The requested scene ids (all when None), in sorted order; unknown ids are an error."""
    available = sorted(set(available))
    if not requested:
        return available
    requested = list(dict.fromkeys(requested))
    unknown = [s for s in requested if s not in available]
    if unknown:
        raise ValueError(f"scenes not in the scene list: {', '.join(unknown)}")
    return sorted(requested)


@dataclasses.dataclass
class SceneResult:
    scene: str
    ok: bool
    message: str
    seconds: float


@dataclasses.dataclass
class RunReport:
    """Collects one line per scene and prints the end-of-run summary."""

    stage: str
    results: list[SceneResult] = dataclasses.field(default_factory=list)

    def add(self, scene: str, ok: bool, message: str, seconds: float) -> None:
        result = SceneResult(scene, ok, message, seconds)
        self.results.append(result)
        status = "ok" if ok else "FAILED"
        print(f"[{self.stage}] scene {scene}: {status} ({seconds:.1f} s) {message}", flush=True)

    @property
    def failed(self) -> list[SceneResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        n_ok = len(self.results) - len(self.failed)
        lines = [f"[{self.stage}] {n_ok}/{len(self.results)} scenes succeeded"]
        lines += [f"  failed {r.scene}: {r.message}" for r in self.failed]
        return "\n".join(lines)

    def exit_code(self) -> int:
        return 1 if self.failed else 0


class Stopwatch:
    """Seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def run_per_scene(stage: str, scenes: Iterable[str], process: Callable[[str], str | None]) -> RunReport:
    """Run `process` on each scene: its return is the success message (None: nothing to do, not reported);
    an exception fails that scene only, with its message, and the run goes on."""
    report = RunReport(stage)
    for scene in scenes:
        watch = Stopwatch()
        try:
            message = process(scene)
        except Exception as exc:  # one scene's failure must not stop the others
            report.add(scene, False, f"{type(exc).__name__}: {exc}", watch.seconds())
            continue
        if message is not None:
            report.add(scene, True, message, watch.seconds())
    return report
