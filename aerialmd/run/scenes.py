"""Scene lists and per-scene run bookkeeping shared by every stage script."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

SceneImages = dict[str, dict[str, list[str]]]  # scene id -> subscene id -> MegaDepth image names
SETUP_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, ValueError)  # missing inputs, bad arguments


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


@dataclasses.dataclass(frozen=True)
class Shard:
    """Part `index` (0-based) of `count` equal round-robin parts of the sorted scene list."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= K < N")

    def take(self, scenes: list[str]) -> list[str]:
        return scenes[self.index::self.count]


def parse_shard(text: str) -> Shard:
    """`K/N` as given on the command line."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"--shard expects K/N (0 <= K < N), got {text!r}") from exc
    return Shard(index, count)


def shard_from_environment(environ: dict[str, str] | None = None) -> Shard | None:
    """The shard of a SLURM job-array task (task id relative to the array's first id), or None outside arrays."""
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    return Shard(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]))


def select_scenes(available: Iterable[str], requested: Iterable[str] | None, shard: Shard | None = None) -> list[str]:
    """The requested scene ids (all when None), sorted, then this shard's part; unknown ids are an error."""
    available = sorted(set(available))
    requested = list(dict.fromkeys(requested or []))
    unknown = [s for s in requested if s not in available]
    if unknown:
        raise ValueError(f"scenes not in the scene list: {', '.join(unknown)}")
    selected = sorted(requested) if requested else available
    return shard.take(selected) if shard else selected


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


class Timer:
    """Seconds spent per named step (a step may be entered several times), and the peak resident memory of the process
    during each step in MB (Linux: the kernel's high-water mark, reset when a step starts; steps may nest)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self._open: list[str] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._credit_peak(self._open)
        self._open.append(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self._credit_peak(self._open)
            self._open.pop()

    def _credit_peak(self, names: list[str]) -> None:
        """Credit the peak since the last reset to the open steps `names`, then reset it."""
        peak = peak_rss_mb_since_reset()
        if peak is None:
            return
        for name in names:
            self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), peak)
        reset_peak_rss()


def peak_rss_mb_since_reset() -> float | None:
    """The process's peak resident memory (VmHWM) in MB since start or the last `reset_peak_rss`; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def reset_peak_rss() -> None:
    """Reset the kernel's peak-memory mark of this process to its current resident memory (Linux 4.0+; else nothing)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")


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


def exit_code_of(run: Callable[[], int], errors: tuple[type[Exception], ...] = SETUP_ERRORS) -> int:
    """A stage script's exit status: run's own (0 ok, 1 some scene failed), or 2 after a one-line `error: ...` on
    stderr when run raises a setup error (before or between scenes: scene failures are reported by the stage)."""
    try:
        return run()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
