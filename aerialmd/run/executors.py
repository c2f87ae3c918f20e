"""How run_pipeline.py runs the stages: `local` (stage by stage over all scenes, in this process) or `ray` (one Ray
task per scene, all its stages, on a Ray cluster or on a local Ray instance).

Running one scene's stages on their own is safe: every stage skips finished scenes, writes atomically, and two scenes
never write the same files. Ray is imported only by `run_ray`, so the local executor does not need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import logging
import math
import os
import sys
from typing import Any, Iterable, Sequence, TextIO

from tqdm import tqdm

from aerialmd.layout import PACKAGE_DIR, DataRoot
from aerialmd.mvs.plane_sweep import torch_threads
from aerialmd.run.pipeline import (
    PipelineConf,
    PipelinePaths,
    Stage,
    StageResult,
    build_stages,
    final_stages,
    format_summary,
    run_stages,
    training_data_summary,
)
from aerialmd.run.scenes import Shard, Stopwatch, load_scene_list, select_scenes
from aerialmd.stages.dense import DenseConf
from aerialmd.stages.report import write_index

EXECUTORS = ("local", "ray")
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 ** 2  # tasks exchange only paths and short logs: a small store is plenty
LOG_LINES = 200  # lines of a scene's output kept in its outcome (the end: where failures are reported)


def run_local(paths: PipelinePaths, scenes: list[str] | None, workers: int | None, overwrite: bool,
              shard: Shard | None = None, conf: PipelineConf = PipelineConf(), first: Sequence[Stage] = ()) -> int:
    """The stages in this process, each over every selected scene in turn; prints the summary, returns the exit code.

    `first`: stages that prepare the inputs (e.g. creating the sample scene), run before the others. A data root with
    no scene to do is an error (exit code 2), not a run that makes nothing."""
    results = run_stages(list(first))
    if not any(r.exit_code for r in results):
        if not scenes_with_input(paths, scenes, shard):
            return nothing_to_do(paths)
        results += run_stages([*build_stages(paths, scenes, workers, overwrite, shard, conf), *final_stages(paths)])
    print("\n" + format_summary(results) + "\n" + training_data_summary(paths, results))
    return max((r.exit_code for r in results), default=0)


def nothing_to_do(paths: PipelinePaths) -> int:
    """The error of a run whose data root has no scene of the scene list to work on: exit code 2."""
    print(f"error: no scene of {paths.scene_list} has a Google Earth Studio download in "
          f"{DataRoot(paths.data_root).downloads}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------------------------- ray


@dataclasses.dataclass(frozen=True)
class SceneOutcome:
    """What one scene's task reports back: its stages' results, or the error that ended the task."""

    scene: str
    results: list[StageResult]
    seconds: float
    log: str  # the scene's output (stage messages, progress bars in their final state), last LOG_LINES lines
    error: str | None = None  # the task itself failed (e.g. its worker died); no stage results then

    @property
    def failed_stage(self) -> str | None:
        return next((r.name for r in self.results if r.exit_code != 0), None)

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed_stage is None

    def line(self) -> str:
        """One line: scene, ok or where it failed, seconds."""
        if self.error is not None:
            return f"scene {self.scene}: FAILED ({self.seconds:.1f} s) task error: {self.error}"
        if self.failed_stage is not None:
            return f"scene {self.scene}: FAILED at {self.failed_stage} ({self.seconds:.1f} s)"
        return f"scene {self.scene}: ok ({self.seconds:.1f} s)"


def scenes_with_input(paths: PipelinePaths, scenes: list[str] | None, shard: Shard | None = None) -> list[str]:
    """The scenes a run covers: requested ones as given (a missing input then fails that scene with the
    stage's own message); otherwise those of the scene list (this shard's part) with a Google Earth Studio download,
    found as preprocess_ge finds them. Scenes with an incomplete download stay in, so their task reports why."""
    selected = select_scenes(load_scene_list(paths.scene_list), scenes, shard)
    if scenes:
        return selected
    return [scene for scene in selected if DataRoot(paths.data_root).has_download(scene)]


def scene_stage(stage: Stage, scene: str) -> Stage:
    """The stage restricted to one scene: exceptions become a failed exit code (with the message printed), and its
    products are counted for this scene only (a pattern's leading `*` stands for the scene id: `*/...`, `*.npz`)."""
    def run() -> int:
        try:
            return stage.run()
        except Exception as exc:  # a stage raises on setup problems; the scene fails, the other tasks go on
            print(f"[{stage.name}] scene {scene}: FAILED {type(exc).__name__}: {exc}", flush=True)
            return 1

    pattern = glob.escape(scene) + stage.pattern[1:] if stage.pattern.startswith("*") else stage.pattern
    return dataclasses.replace(stage, run=run, pattern=pattern)


class _Tee:
    """A text stream writing to two streams (the worker's own output, which Ray keeps in its logs, and a buffer)."""

    def __init__(self, stream: TextIO, copy: io.StringIO) -> None:
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def compact_log(text: str, max_lines: int = LOG_LINES) -> str:
    """Output as a terminal shows it: a bar redrawn with carriage returns keeps its last state; no blank lines."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return "\n".join([line for line in lines if line][-max_lines:])


def process_scene(paths: PipelinePaths, scene: str, workers: int, overwrite: bool, conf: PipelineConf) -> SceneOutcome:
    """Every stage for one scene, in order (the body of a Ray task), with `workers` torch threads; its output is also
    kept in the outcome. The threads are set here because Ray's OMP_NUM_THREADS (the task's CPUs) reaches torch only
    in the task that first imports it in a worker process: later tasks in that worker keep its thread count."""
    watch = Stopwatch()
    copy = io.StringIO()
    with torch_threads(workers), contextlib.redirect_stdout(_Tee(sys.stdout, copy)), \
            contextlib.redirect_stderr(_Tee(sys.stderr, copy)):
        stages = [scene_stage(s, scene) for s in build_stages(paths, [scene], workers, overwrite, None, conf)]
        results = run_stages(stages)
    return SceneOutcome(scene, results, watch.seconds(), compact_log(copy.getvalue()))


def import_ray() -> Any:
    """The ray module, or a RuntimeError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--executor ray needs Ray: pip install 'ray>=2.9' (driver and every node)") from exc
    return ray


def connect(ray: Any, address: str | None, num_cpus: int | None = None) -> None:
    """Connect to the cluster at `address` (else at RAY_ADDRESS, as `ray job submit` sets it), or start a local Ray
    instance (without dashboard or usage statistics, a small object store, `num_cpus` CPUs: default all), stopped by
    ray.shutdown(). Task output stays in Ray's worker logs; the outcomes carry what the driver prints.

    The driver's copy of this package is shipped to the workers (runtime_env py_modules), so nodes need the
    dependencies but not the code; the data must be on storage every node sees at the same path."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=False,
                                   runtime_env={"py_modules": [str(PACKAGE_DIR)]})
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry from an instance the user did not set up
        options.update(address="local", num_cpus=num_cpus, include_dashboard=False,
                       object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    else:
        options.update(address=address)
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise RuntimeError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc


def task_dense_conf(dense: DenseConf, gpus_per_scene: float) -> DenseConf:
    """The MVS settings of a task: without a GPU of its own, the torch backend runs on the CPU (Ray leaves the node's
    GPUs visible to tasks that requested none); the colmap backend needs a GPU."""
    if gpus_per_scene > 0:
        return dense
    if dense.backend == "colmap":
        raise ValueError("--mvs_backend colmap runs on a GPU: give each scene one (--ray_gpus_per_scene 1)")
    return dataclasses.replace(dense, device="cpu") if dense.device == "auto" else dense


def task_conf(conf: PipelineConf, gpus_per_scene: float) -> PipelineConf:
    """The settings of a task: the dense stage's as task_dense_conf says; without a GPU of its own, ALIKED and
    LightGlue run on the CPU too (their device 'auto' would take a GPU the task did not reserve)."""
    localization = conf.localization
    if gpus_per_scene <= 0 and localization.device == "auto":
        localization = dataclasses.replace(localization, device="cpu")
    return PipelineConf(localization, task_dense_conf(conf.dense, gpus_per_scene))


def gather(ray: Any, refs: dict[Any, str]) -> Iterable[SceneOutcome]:
    """Outcomes in the order the tasks finish; a task that failed as a whole (e.g. its worker was killed) gives an
    outcome with its error."""
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            yield ray.get(done[0])
        except ray.exceptions.RayError as exc:
            message = str(exc).strip().splitlines()
            yield SceneOutcome(refs[done[0]], [], 0.0, "", f"{type(exc).__name__}: {message[0] if message else ''}")


def run_ray(paths: PipelinePaths, scenes: list[str] | None, workers: int | None, overwrite: bool,
            shard: Shard | None = None, conf: PipelineConf = PipelineConf(), first: Sequence[Stage] = (), *,
            address: str | None = None, cpus_per_scene: float = 2, gpus_per_scene: float = 0,
            num_cpus: int | None = None) -> int:
    """Run `first` here, then one Ray task per scene (all its stages, `cpus_per_scene` CPUs and `gpus_per_scene`
    GPUs reserved: the GPU serves the MVS stage's colmap backend or torch backend); prints a line per scene as it
    ends and returns 1 if any scene failed.

    `workers`: threads per scene (default: its CPUs); `num_cpus`: CPUs of a local Ray instance (default: all)."""
    if first:
        results = run_stages(list(first))
        if any(r.exit_code for r in results):
            print("\n" + format_summary(results))
            return max(r.exit_code for r in results)
    selected = scenes_with_input(paths, scenes, shard)
    if not selected:
        return nothing_to_do(paths)
    task = task_conf(conf, gpus_per_scene)
    workers = workers or max(1, math.ceil(cpus_per_scene))
    ray = import_ray()
    connect(ray, address, num_cpus)
    try:
        remote = ray.remote(num_cpus=cpus_per_scene, num_gpus=gpus_per_scene)(process_scene)
        refs = {remote.remote(paths, scene, workers, overwrite, task): scene for scene in selected}
        outcomes = report_outcomes(gather(ray, refs), len(refs))
    finally:
        ray.shutdown()
    print(f"index of all scenes: {write_index(paths.data_root)}")  # tasks finishing together may each miss another
    final = run_stages(final_stages(paths)) if any(o.ok for o in outcomes) else []
    print("\n" + format_summary(final) + "\n" + training_data_summary(paths, final))
    return 0 if all(o.ok for o in outcomes) and not any(r.exit_code for r in final) else 1


def report_outcomes(outcomes: Iterable[SceneOutcome], total: int) -> list[SceneOutcome]:
    """Print each scene's output and line as it arrives (under a progress bar), then the count; returns them all."""
    watch = Stopwatch()
    collected = []
    with tqdm(total=total, desc="scenes", unit="scene") as bar:
        for outcome in outcomes:
            collected.append(outcome)
            if outcome.log:
                bar.write("\n".join(f"  | {line}" for line in outcome.log.splitlines()))
            bar.write(outcome.line())
            bar.update()
    failed = [o for o in collected if not o.ok]
    print(f"\n{total - len(failed)}/{total} scenes ok in {watch.seconds():.1f} s", flush=True)
    for outcome in sorted(failed, key=lambda o: o.scene):
        print(f"  {outcome.line()}")
    return collected
