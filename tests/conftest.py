"""Shared fixtures: a tiny sample scene, its exact dense model, and one run of the whole pipeline on it that the tests
of the later stages read (plain helpers and constants are in tests/helpers.py).

The expensive runs are subprocesses started in the background at the start of the session, when a selected test needs
them, so that they use the second core while the other tests run (BackgroundRuns): run_pipeline.py on a copy of the
tiny sample (`pipeline_run`, `localized`), and once its registration is there, the dense stage with the accuracy
tests' settings (`dense_output`) and the ALIKED registration (`aliked_localized`). Their fixtures wait for them. Tests
marked `slow` (pytest.ini) run after the others, and those reading the dense or ALIKED run come last.

Session fixtures are read-only (checked when the session ends): a test that changes outputs works on a copy in its
tmp_path (helpers.copy_localized, helpers.copy_registration).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    ALIKED_OPTIONS,
    DENSE_CONF,
    PIPELINE_ENV,
    SFM_NAME,
    assert_unchanged,
    copy_registration,
    ground_truth,
    pipeline_command,
    tree_state,
)

# One torch thread in this process: the background runs work on the other core, and on a loaded 2-core machine two
# spinning OpenMP threads made the dense stage up to 15x slower (the depths do not depend on the thread count:
# tests/test_mvs.py::test_depths_do_not_depend_on_the_thread_count).
torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast tests first, then the slow ones, then those reading a follow-up background run (stable order otherwise):
    fast failures show first, and the background runs have the other tests' time to finish."""
    def key(item: pytest.Item) -> tuple[bool, bool]:
        fixtures = getattr(item, "fixturenames", ())
        return item.get_closest_marker("slow") is not None, any(name in fixtures for name in FOLLOW_UPS)

    items.sort(key=key)


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """A tiny sample scene (generated once per test session), with its paths. Read-only."""
    from aerialmd.sample_scene import SampleConfig, generate_sample

    config = SampleConfig.tiny()
    paths = generate_sample(tmp_path_factory.mktemp("sample") / "root", config)
    state = tree_state(paths.root)
    yield paths, config
    assert_unchanged(paths.root, state)


@pytest.fixture(scope="session")
def sample_dense_model(tiny_sample, tmp_path_factory):
    """The tiny sample's exact dense model (aerialmd.sample_scene.fixtures) in a data root of its own: (data root,
    scene id, localized_dense_metric folder). Read-only."""
    from aerialmd.sample_scene.fixtures import write_sample_dense_model

    paths, _ = tiny_sample
    root = tmp_path_factory.mktemp("sample_dense_model") / "data"
    dense = write_sample_dense_model(paths, root / paths.scene_id)
    state = tree_state(root)
    yield root, paths.scene_id, dense
    assert_unchanged(root, state)


@pytest.fixture(scope="session")
def sample_truth(tiny_sample) -> dict:
    """The tiny sample's ground truth per image by its name in a dense model, each with its true `depth`."""
    from aerialmd.formats.depth import read_depth_exr
    from aerialmd.layout import PROCESSED_SUFFIX

    paths, _ = tiny_sample
    truth = {}
    for image in ground_truth(paths)["images"]:
        name = image["name"] if image["kind"] == "aerial" else image["name"] + PROCESSED_SUFFIX
        image["depth"] = read_depth_exr(paths.ground_truth_dir / "depth" / f"{image['name']}.exr")
        truth[name] = image
    return truth


@pytest.fixture(scope="session")
def sample_pairs_path(sample_dense_model, tmp_path_factory) -> Path:
    """make_pairs' pair file of the sample's exact dense model. Read-only."""
    from aerialmd.stages.make_pairs import PairsConf, make_pairs

    root, scene, _ = sample_dense_model
    path = tmp_path_factory.mktemp("pairs") / "pairs.npz"
    assert make_pairs(root, path, [scene], PairsConf(workers=2)) == 0
    return path


# ---------------------------------------------------------------------------------------------- background runs

NICE = 10  # the background runs other than the dense one, once it runs


class Job:
    """A subprocess (one thread: PIPELINE_ENV) whose output goes to files (nobody reads a pipe while it runs); `nice`
    lowers its priority."""

    def __init__(self, command: list[str], folder: Path, name: str, nice: int = 0):
        self.command = ["nice", "-n", str(nice), *command] if nice and shutil.which("nice") else command
        self.stdout, self.stderr = folder / f"{name}.stdout", folder / f"{name}.stderr"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(self.command, cwd=folder, env=PIPELINE_ENV, stdout=out, stderr=err)

    def lower_priority(self, nice: int) -> None:
        """Its niceness raised to `nice` (a running process's main thread, which does its work)."""
        try:
            os.setpriority(os.PRIO_PROCESS, self.process.pid, nice)
        except ProcessLookupError:  # it has ended
            pass

    def result(self) -> subprocess.CompletedProcess:
        returncode = self.process.wait()
        return subprocess.CompletedProcess(self.command, returncode, self.stdout.read_text(), self.stderr.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def python_job(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from pathlib import Path; {code}"]


class BackgroundRuns:
    """run_pipeline.py on a copy of the tiny sample (helpers.pipeline_command), and, once its registration (stage 4a)
    is there, side by side with the rest of it, the follow-up runs that the selected tests need, on copies:
    - "dense": stage 4b with DENSE_CONF on its registration, in a data root of its own;
    - "aliked": stage 4a with ALIKED + LightGlue (ALIKED_OPTIONS) on its stage-2 and stage-3 outputs.
    The dense run is the longest (about 4 minutes of one core): the others then run at a lower priority (NICE), so
    that it has a core of its own beside the test process; they take what the two leave."""

    def __init__(self, sample_root: Path, folder: Path, follow_ups: set[str]):
        self.folder = folder
        self.root = folder / "pipeline" / "sample"  # the pipeline run's sample root
        shutil.copytree(sample_root, self.root)  # its sample stage finds it made (the kill-and-resume test makes one)
        self.pipeline = Job(pipeline_command(self.root), self.root.parent, "run_pipeline")
        self.follow_ups: dict[str, Job] = {}
        self.error: Exception | None = None  # of start_follow_ups, raised by follow_up
        self.lock = threading.Lock()
        self.stopped = False
        self.chain = threading.Thread(target=self.start_follow_ups, args=(follow_ups,), daemon=True)
        self.chain.start()

    @staticmethod
    def scene_paths(root: Path) -> tuple[Path, Path, Path]:
        """(scene folder, its SIFT stage-4a output, its preprocessed MegaDepth photos) of a sample root."""
        from aerialmd.layout import LOCALIZATION_DIR
        from aerialmd.sample_scene import SampleConfig

        scene = SampleConfig.tiny().scene_id
        return (root / "data" / scene, root / "data" / scene / LOCALIZATION_DIR / SFM_NAME,
                root / "megadepth_processed" / scene / "0")

    @property
    def dense_sfm_dir(self) -> Path:
        """The dense run's stage-4a folder: <data root>/<scene>/sfm_output_localization/sfm_sift+nn-ratio."""
        return self.scene_paths(self.folder / "dense")[1]

    @property
    def aliked_root(self) -> Path:
        return self.folder / "aliked"

    def start_follow_ups(self, names: set[str]) -> None:
        try:
            self.start_when_registered(names)
        except Exception as error:  # noqa: BLE001 (the tests that read the follow-ups report it)
            self.error = error

    def start_when_registered(self, names: set[str]) -> None:
        from aerialmd.layout import LOCALIZATION_DIR

        scene_dir, sfm_dir, processed = self.scene_paths(self.root)
        while self.pipeline.process.poll() is None and not (sfm_dir / "registration.json").is_file():
            time.sleep(0.5)  # stage 4a writes its folder atomically: with registration.json it is complete
        if not (sfm_dir / "registration.json").is_file():
            return
        self.pipeline.lower_priority(NICE)  # its dense stage and report are left
        commands = {}
        if "dense" in names:
            copy_registration(sfm_dir, self.dense_sfm_dir)
            commands["dense"] = python_job(
                "from aerialmd.stages.dense import DenseConf, dense_scene; "
                f"print(dense_scene(Path({str(self.dense_sfm_dir)!r}), Path({str(scene_dir)!r}), "
                f"[Path({str(processed)!r})], DenseConf(**{DENSE_CONF.settings()!r}, device={DENSE_CONF.device!r})))")
        if "aliked" in names:  # stages 2 and 3 (stage 4 goes on writing into sfm_output_localization meanwhile)
            shutil.copytree(self.root / "data", self.aliked_root / "data", ignore=shutil.ignore_patterns(LOCALIZATION_DIR))
            shutil.copytree(self.root / "megadepth_processed", self.aliked_root / "megadepth_processed")
            shutil.copyfile(self.root / "megadepth_image_list.npz", self.aliked_root / "megadepth_image_list.npz")
            commands["aliked"] = python_job(
                "from aerialmd.stages.localization import LocalizationConf, localize; "
                f"sys.exit(localize(Path({str(self.aliked_root / 'data')!r}), "
                f"Path({str(self.aliked_root / 'megadepth_processed')!r}), "
                f"Path({str(self.aliked_root / 'megadepth_image_list.npz')!r}), conf=LocalizationConf(**{ALIKED_OPTIONS!r})))")
        with self.lock:
            for name, command in commands.items():
                if not self.stopped:
                    self.follow_ups[name] = Job(command, self.folder, name, nice=0 if name == "dense" else NICE)

    def follow_up(self, name: str) -> subprocess.CompletedProcess:
        """A follow-up run, finished (a failure when it did not start: the pipeline run failed before stage 4b)."""
        self.chain.join()
        if self.error is not None:
            raise self.error
        assert name in self.follow_ups, f"the background {name} run did not start: no registration of the pipeline run"
        return self.follow_ups[name].result()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
        self.pipeline.stop()
        self.chain.join()
        for job in self.follow_ups.values():
            job.stop()


FOLLOW_UPS = {"dense_output": "dense", "aliked_localized": "aliked"}  # fixture -> the background run it reads


@pytest.fixture(scope="session", autouse=True)
def background_runs(request, tmp_path_factory):
    """Starts the background runs at the start of the session when a selected test needs them (None otherwise)."""
    needs = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    if "pipeline_run" not in needs:
        yield None
        return
    paths, _ = request.getfixturevalue("tiny_sample")
    runs = BackgroundRuns(paths.root, tmp_path_factory.mktemp("background"),
                          {run for fixture, run in FOLLOW_UPS.items() if fixture in needs})
    yield runs
    runs.stop()


@pytest.fixture(scope="session")
def pipeline_run(background_runs):
    """run_pipeline.py on (a copy of) the tiny sample, uninterrupted (helpers.pipeline_command: one thread, small depth
    maps): (sample root, the finished process). Read-only."""
    result = background_runs.pipeline.result()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = background_runs.root
    state = tree_state(root)
    yield root, result
    assert_unchanged(root, state)


@pytest.fixture(scope="session")
def localized(pipeline_run):
    """Stages 2, 3 and 4a of the pipeline run (SIFT registration): (output folder, ground truth, sample paths,
    preprocessed MegaDepth folder). Read-only."""
    from aerialmd.layout import LOCALIZATION_DIR
    from aerialmd.sample_scene import SampleConfig, sample_paths

    root, _ = pipeline_run
    paths = sample_paths(root, SampleConfig.tiny())
    out = paths.root / "data" / paths.scene_id / LOCALIZATION_DIR / SFM_NAME
    return out, ground_truth(paths), paths, paths.root / "megadepth_processed"


@dataclasses.dataclass(frozen=True)
class DenseOutput:
    """The dense stage with DENSE_CONF on the pipeline run's registration, in a data root of its own."""

    data_root: Path  # holds <scene>/sfm_output_localization/sfm_sift+nn-ratio/{localized, registration.json, out}
    out: Path  # the localized_dense_metric folder
    figures: dict  # accuracy per image kind against the ground truth
    report: dict  # dense.json


@pytest.fixture(scope="session")
def dense_output(localized, background_runs):
    """Stage 4b with DENSE_CONF (the accuracy tests' settings), run once on a copy of the pipeline run's stage-4a
    output. Read-only."""
    from aerialmd.sample_scene.evaluation import dense_accuracy
    from aerialmd.stages.dense import DENSE_DIR

    paths = localized[2]
    result = background_runs.follow_up("dense")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed images" in result.stdout.splitlines()[-1]  # dense_scene's summary: it ran (None: found done)
    out = background_runs.dense_sfm_dir / DENSE_DIR
    figures = dense_accuracy(out, paths.ground_truth_dir)
    print(f"\ndense accuracy vs ground truth: {figures}")
    data_root = out.parents[3]
    state = tree_state(data_root)
    yield DenseOutput(data_root, out, figures, json.loads((out / "dense.json").read_text()))
    assert_unchanged(data_root, state)


@pytest.fixture(scope="session")
def aliked_localized(pipeline_run, background_runs):
    """Stage 4a with ALIKED + LightGlue (ALIKED_OPTIONS) run on a copy of the pipeline run's stage-2 and stage-3
    outputs: (the finished run, whose exit status the test checks; its output folder). Read-only."""
    from aerialmd.layout import LOCALIZATION_DIR

    result = background_runs.follow_up("aliked")
    out = background_runs.scene_paths(background_runs.aliked_root)[0] / LOCALIZATION_DIR / "sfm_aliked+lightglue"
    root = background_runs.aliked_root
    state = tree_state(root)
    yield result, out
    assert_unchanged(root, state)
