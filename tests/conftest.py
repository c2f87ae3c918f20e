"""Shared fixtures: a tiny sample scene, its exact dense model, and one run of the whole pipeline on it that every test of
the later stages reads (plain helpers and constants are in tests/helpers.py).

The expensive runs are subprocesses started in the background at the start of the session, when a selected test needs
them, so that they use the second core while the fast tests run: first run_pipeline.py on the tiny sample
(`pipeline_run`, `localized`), then the dense stage with the accuracy tests' settings on its registration
(`dense_output`). Their fixtures wait for them. Tests marked `slow` (pytest.ini) run after the others, and those that
wait for the dense run come last.

Session fixtures are read-only (checked when the session ends): a test that changes outputs works on a copy in its
tmp_path (helpers.copy_localized, helpers.copy_registration).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from tests.helpers import (
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
    """Fast tests first, then the slow ones, then those waiting for the background dense run (stable order
    otherwise): fast failures show first, and the background runs have the other tests' time to finish."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is not None, "dense_output" in item.fixturenames))


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


# ---------------------------------------------------------------------------------------------- background runs


class Job:
    """A subprocess whose output goes to files (nobody reads a pipe while it runs)."""

    def __init__(self, command: list[str], folder: Path, name: str):
        self.command = command
        self.stdout, self.stderr = folder / f"{name}.stdout", folder / f"{name}.stderr"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(command, cwd=folder, env=PIPELINE_ENV, stdout=out, stderr=err)

    def result(self) -> subprocess.CompletedProcess:
        returncode = self.process.wait()
        return subprocess.CompletedProcess(self.command, returncode, self.stdout.read_text(), self.stderr.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def dense_command(sfm_dir: Path, scene_dir: Path, processed_dir: Path) -> list[str]:
    """stage 4b (dense_scene) with DENSE_CONF on one stage-4a output, in a subprocess; prints its summary line."""
    script = ("from pathlib import Path; from aerialmd.stages.dense import DenseConf, dense_scene; "
              f"print(dense_scene(Path({str(sfm_dir)!r}), Path({str(scene_dir)!r}), [Path({str(processed_dir)!r})], "
              f"DenseConf(**{DENSE_CONF.settings()!r}, device={DENSE_CONF.device!r})))")
    return [sys.executable, "-c", script]


class BackgroundRuns:
    """run_pipeline.py on the tiny sample (helpers.pipeline_command), then, when `dense` and it succeeded, the dense
    stage with DENSE_CONF on a copy of its registration in a data root of its own."""

    def __init__(self, folder: Path, dense: bool):
        self.folder = folder
        self.root = folder / "sample"  # the pipeline's sample root
        self.dense_root = folder / "dense" / "data"  # the dense run's data root
        self.pipeline = Job(pipeline_command(self.root), folder, "pipeline")
        self.dense: Job | None = None
        self.stopped = False
        self.lock = threading.Lock()
        self.chain = threading.Thread(target=self.start_dense, daemon=True) if dense else None
        if self.chain:
            self.chain.start()

    @property
    def scene_id(self) -> str:
        return json.loads((self.root / "sample_scene.json").read_text())["scene_id"]

    def sfm_dir(self) -> Path:
        from aerialmd.layout import LOCALIZATION_DIR

        return self.root / "data" / self.scene_id / LOCALIZATION_DIR / SFM_NAME

    def dense_sfm_dir(self) -> Path:
        from aerialmd.layout import LOCALIZATION_DIR

        return self.dense_root / self.scene_id / LOCALIZATION_DIR / SFM_NAME

    def start_dense(self) -> None:
        if self.pipeline.process.wait() != 0:
            return
        with self.lock:
            if self.stopped:
                return
            copy_registration(self.sfm_dir(), self.dense_sfm_dir())
            processed = self.root / "megadepth_processed" / self.scene_id / "0"
            self.dense = Job(dense_command(self.dense_sfm_dir(), self.root / "data" / self.scene_id, processed),
                             self.folder, "dense")

    def dense_result(self) -> subprocess.CompletedProcess | None:
        """The dense run, finished; None when it did not start (the pipeline run failed)."""
        self.chain.join()
        return None if self.dense is None else self.dense.result()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
        self.pipeline.stop()
        if self.chain:
            self.chain.join()
        if self.dense:
            self.dense.stop()


@pytest.fixture(scope="session", autouse=True)
def background_runs(request, tmp_path_factory):
    """Starts the background runs at the start of the session when a selected test needs them (None otherwise)."""
    needs = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    if "pipeline_run" not in needs:
        yield None
        return
    runs = BackgroundRuns(tmp_path_factory.mktemp("background"), dense="dense_output" in needs)
    yield runs
    runs.stop()


@pytest.fixture(scope="session")
def pipeline_run(background_runs):
    """run_pipeline.py on the tiny sample, uninterrupted (helpers.pipeline_command: one thread, small depth maps):
    (sample root, the finished process). Read-only."""
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
    from aerialmd.layout import DENSE_DIR
    from aerialmd.sample_scene.evaluation import dense_accuracy

    paths = localized[2]
    result = background_runs.dense_result()
    assert result is not None, "the dense run did not start"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed images" in result.stdout.splitlines()[-1]  # dense_scene's summary: it ran (None: found done)
    out = background_runs.dense_sfm_dir() / DENSE_DIR
    figures = dense_accuracy(out, paths.ground_truth_dir)
    print(f"\ndense accuracy vs ground truth: {figures}")
    data_root = background_runs.dense_root
    state = tree_state(data_root)
    yield DenseOutput(data_root, out, figures, json.loads((out / "dense.json").read_text()))
    assert_unchanged(data_root, state)
