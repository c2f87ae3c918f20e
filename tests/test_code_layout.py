"""The code's structure, as the README's code map states it: every module imports, the import graph has no cycle,
pyflakes is clean, the dense stage runs without PyAV, and no module but aerialmd/layout.py spells a data-root name."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aerialmd import layout

PACKAGE = Path(layout.__file__).resolve().parent
# Modules that must import where PyAV is missing (a GPU machine without it): everything after stage 2 that never
# decodes a video.
WITHOUT_PYAV = ("aerialmd.stages.dense", "aerialmd.stages.localization", "aerialmd.stages.make_pairs",
                "aerialmd.stages.export", "aerialmd.stages.report", "aerialmd.training.dataset")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules a module imports when it runs (at any depth, `if TYPE_CHECKING:` blocks excepted): for
    `from a.b import c`, a.b.c where that is a module, else a.b."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if is_type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as the list of its modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(package_modules())
    code = ("import importlib, json, sys\nbad = {}\n"
            f"for name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as exc:\n        bad[name] = repr(exc)\n"
            "print(json.dumps(bad))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout.splitlines()[-1]) == {}


def test_import_graph_has_no_cycle():
    modules = package_modules()
    known = set(modules)
    graph = {name: imported_modules(path, known) - {name} for name, path in modules.items()}
    # a package's __init__ may import its own modules; a module's own package is imported before it by Python
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_pyflakes_is_clean():
    run = subprocess.run([sys.executable, "-m", "pyflakes", str(PACKAGE)], capture_output=True, text=True)
    assert run.stdout == "" and run.returncode == 0, run.stdout


@pytest.mark.parametrize("module", WITHOUT_PYAV)
def test_imports_without_pyav(module):
    code = f"import sys; sys.modules['av'] = None; import {module}"  # None: `import av` raises ImportError
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr.splitlines()[-1:]


def distinctive_names() -> set[str]:
    """The data-root names layout.py defines that cannot be mistaken for ordinary words (they hold `_`, `.` or
    `-`): `localized_dense_metric`, `ge_cameras.json`, `pairs-aerial.txt`, ..."""
    values = {value for name, value in vars(layout).items() if name.isupper() and isinstance(value, str)}
    return {v for v in values if any(c in v for c in "_.-") and len(v) > 4}


def test_only_layout_spells_data_root_names():
    names = distinctive_names()
    assert {"localized_dense_metric", "ge_cameras.json", "sfm_output_localization", "downloaded_data"} <= names
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: name -> 'module:function'."""
    with open(PACKAGE.parent / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


SCRIPTS = ("run_pipeline.py", "download_data.py", "make_report.py", "make_esp.py", "do_colmap_localization.py",
           "datasets_preprocess/preprocess_ge.py", "datasets_preprocess/preprocess_megadepth.py",
           "datasets_preprocess/make_pairs.py", "datasets_preprocess/preprocess_aerialmegadepth.py",
           "misc/megadepth_aerial.py")


def test_console_scripts_are_installed():
    """Each console script of pyproject.toml is installed (requirements.txt installs the package), names a cli
    module's main, and one of them runs (each starts the same way)."""
    scripts = console_scripts()
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name in scripts}
    if not installed:
        pytest.skip("the package is not installed (pip install -e . or -r requirements.txt)")
    assert installed == scripts
    assert all(target.startswith("aerialmd.cli.") and target.endswith(":main") for target in scripts.values())
    executable = shutil.which("aerialmd-localize") or str(Path(sys.executable).parent / "aerialmd-localize")
    run = subprocess.run([executable, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--data_root" in run.stdout, run.stderr[-300:]


def test_scripts_are_thin_shims():
    """The scripts users type keep their names and hold no sys.path edits and no logic: each calls its cli module's
    main; two of them (one per folder) run from another working directory."""
    for script in SCRIPTS:
        source = (PACKAGE.parent / script).read_text()
        assert "sys.path" not in source, script
        if not script.startswith("misc/"):
            assert len(ast.parse(source).body) <= 5, f"{script} holds more than a shim"
    for script in ("do_colmap_localization.py", "datasets_preprocess/make_pairs.py"):
        run = subprocess.run([sys.executable, str(PACKAGE.parent / script), "--help"], capture_output=True, text=True,
                             cwd="/")
        assert run.returncode == 0 and "--data_root" in run.stdout, run.stderr[-300:]
