"""Download stage, end to end: the real gdown client against a local HTTP server serving real archives."""

from __future__ import annotations

import functools
import http.server
import io
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import types
import urllib.parse
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

import download_data  # importable from the repository root (pytest.ini's pythonpath)
from aerialmd.stages.download import (
    DownloadError,
    Options,
    check_link,
    download_links,
    read_links_file,
    unpack_archive,
)
from tests.helpers import REPO_ROOT

_rng = random.Random(0)
GOOD_FILES = {
    "scene/0001/images/a.jpg": _rng.randbytes(300_000),
    "scene/0001/depths/a.exr": _rng.randbytes(5_000),
    "scene/readme.txt": b"aerial megadepth sample\n",
}
STORED_PAYLOAD = b"payload-" * 2_000
NO_RETRY = Options(unzip=True, retries=0)


# ---------------------------------------------------------------- archive makers


def zip_bytes(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip holding `files` (name -> content), names written exactly as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A gzipped tar holding `files` plus `symlinks` (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def flipped(data: bytes, at: int) -> bytes:
    """`data` with the byte at `at` inverted."""
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@functools.cache
def served_files() -> dict[str, bytes]:
    """Every file the test server offers (built once: archives embed timestamps)."""
    good_zip = zip_bytes(GOOD_FILES)
    stored = zip_bytes({"scene/blob.bin": STORED_PAYLOAD}, zipfile.ZIP_STORED)
    good_tar = tar_gz_bytes(GOOD_FILES)
    return {
        "good.zip": good_zip,
        "good.tar.gz": good_tar,
        "flipped.zip": flipped(stored, stored.find(STORED_PAYLOAD) + 100),
        "truncated.zip": good_zip[: len(good_zip) // 2],
        "truncated.tar.gz": good_tar[: len(good_tar) // 2],
        "badcrc.tar.gz": flipped(good_tar, len(good_tar) - 6),  # gzip trailer CRC32
        "evil.zip": zip_bytes({"ok.txt": b"fine", "../evil.txt": b"x", "/abs.txt": b"y"}),
        "evil_link.tar.gz": tar_gz_bytes({"ok.txt": b"fine"}, {"scene/link": "../../outside"}),
        "page.zip": b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head></html>\n",
    }


# ---------------------------------------------------------------- server


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the server's `files` dict, honouring `Range: bytes=N-` (and logging the offsets asked for)."""

    def do_GET(self) -> None:
        data = self.server.files.get(urllib.parse.urlsplit(self.path).path.lstrip("/"))  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404, "Not Found")
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match[1]) if match else 0
        if match:
            self.server.ranges.append(start)  # type: ignore[attr-defined]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        try:
            self.wfile.write(data[start:])
        except (BrokenPipeError, ConnectionResetError):  # gdown drops the first response when it resumes
            pass

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    """A local HTTP server on a random port, serving the archives above."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files = served_files()  # type: ignore[attr-defined]
    httpd.ranges = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def url(server: http.server.ThreadingHTTPServer) -> Callable[[str], str]:
    """url(name) -> the server's address for `name`; also clears the Range log."""
    server.ranges.clear()  # type: ignore[attr-defined]
    return lambda name: f"http://127.0.0.1:{server.server_address[1]}/{name}"


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- helpers


def leftovers(folder: Path) -> list[str]:
    """Temporary folders or partial downloads left anywhere under `folder`."""
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name or p.name.endswith(".part")]


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_one(link: str, out: Path, options: Options = NO_RETRY) -> str:
    """Download one link; returns its error message (asserting that it failed)."""
    (result,) = download_links([link], out, options)
    assert not result.ok
    assert "\n" not in result.error
    return result.error


# ---------------------------------------------------------------- good paths


def test_good_zip_extracts_exact_content(url, tmp_path):
    (result,) = download_links([url("good.zip")], tmp_path, NO_RETRY)
    assert result.ok, result.error
    assert tree(tmp_path) == {**GOOD_FILES, "good.zip": served_files()["good.zip"]}
    assert leftovers(tmp_path) == []


def test_good_tar_gz_extracts_exact_content(url, tmp_path):
    (result,) = download_links([url("good.tar.gz")], tmp_path, Options(unzip=True, remove_zip=True, retries=0))
    assert result.ok, result.error
    assert tree(tmp_path) == GOOD_FILES


@pytest.mark.parametrize("query", ["", "?download=true"])
def test_without_unzip_only_downloads(url, tmp_path, query):
    (result,) = download_links([url("good.zip") + query], tmp_path, Options(retries=0))
    assert result.ok
    assert result.detail == str(tmp_path / "good.zip")
    assert tree(tmp_path) == {"good.zip": served_files()["good.zip"]}


def test_remove_zip_deletes_archive_after_extraction(url, tmp_path):
    (result,) = download_links([url("good.zip")], tmp_path, Options(unzip=True, remove_zip=True, retries=0))
    assert result.ok
    assert tree(tmp_path) == GOOD_FILES


def test_create_subdirs_extracts_into_folder_named_after_archive(url, tmp_path):
    options = Options(unzip=True, remove_zip=True, create_subdirs=True, retries=0)
    (result,) = download_links([url("good.tar.gz")], tmp_path, options)
    assert result.ok
    assert result.detail == str(tmp_path / "good")
    assert tree(tmp_path) == {f"good/{name}": data for name, data in GOOD_FILES.items()}


def test_extraction_merges_with_existing_content(url, tmp_path):
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "keep.txt").write_bytes(b"mine")
    (tmp_path / "scene" / "readme.txt").write_bytes(b"old version")
    (result,) = download_links([url("good.zip")], tmp_path, Options(unzip=True, remove_zip=True, retries=0))
    assert result.ok
    assert tree(tmp_path) == {**GOOD_FILES, "scene/keep.txt": b"mine"}


def test_resumes_partial_download_with_range_request(server, url, tmp_path):
    data = served_files()["good.zip"]
    half = len(data) // 2
    (tmp_path / "good.zipABCDEFGH.part").write_bytes(data[:half])  # gdown's partial-file name: <name><8 chars>.part
    (result,) = download_links([url("good.zip")], tmp_path, Options(retries=0))
    assert result.ok, result.error
    assert server.ranges == [half]
    assert (tmp_path / "good.zip").read_bytes() == data
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- failures


def assert_untouched(folder: Path, before: dict[str, bytes]) -> None:
    """Nothing was extracted, nothing left behind, existing files unchanged."""
    assert tree(folder) == before
    assert leftovers(folder) == []


@pytest.fixture
def existing(tmp_path) -> dict[str, bytes]:
    """Pre-existing data in the output folder, which failures must not touch."""
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "readme.txt").write_bytes(b"old version")
    return tree(tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("flipped.zip", r"corrupt or truncated zip archive \(CRC mismatch in member 'scene/blob.bin'\)"),
        ("truncated.zip", r"corrupt or truncated zip archive"),
        ("truncated.tar.gz", r"corrupt or truncated tar archive"),
        ("badcrc.tar.gz", r"corrupt or truncated tar archive \(CRC check failed"),
        ("page.zip", r"an HTML page, not a zip archive"),
    ],
)
def test_unusable_archive_is_reported_and_deleted(url, tmp_path, existing, name, expected):
    message = run_one(url(name), tmp_path, Options(unzip=True, remove_zip=True, retries=0))
    assert re.search(rf"{re.escape(name)}: {expected}", message), message
    assert "download deleted" in message
    assert_untouched(tmp_path, existing)


def test_existing_corrupt_archive_is_kept(url, tmp_path):
    truncated = served_files()["truncated.zip"]
    (tmp_path / "good.zip").write_bytes(truncated)  # complete-looking file: gdown skips the download
    message = run_one(url("good.zip"), tmp_path)
    assert "corrupt or truncated zip archive" in message and "existing file kept" in message
    assert tree(tmp_path) == {"good.zip": truncated}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("evil.zip", "unsafe member '../evil.txt' would be written outside the output folder"),
        ("evil_link.tar.gz", "unsafe link 'scene/link' points outside the output folder"),
    ],
)
def test_escaping_members_are_refused(url, tmp_path, existing, name, expected):
    message = run_one(url(name), tmp_path)
    assert f"{name}: {expected}" in message
    assert_untouched(tmp_path, {**existing, name: served_files()[name]})
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path.parent / "outside").exists()


def test_absolute_member_is_refused(tmp_path):
    archive = tmp_path / "abs.zip"
    archive.write_bytes(zip_bytes({"/abs.txt": b"y"}))
    with pytest.raises(DownloadError, match=r"abs.zip: unsafe member '/abs.txt'"):
        unpack_archive(archive)
    assert tree(tmp_path) == {"abs.zip": archive.read_bytes()}


def test_http_404_is_reported(url, tmp_path):
    message = run_one(url("missing.zip"), tmp_path)
    assert message == f"{url('missing.zip')}: HTTP 404 Not Found (bad or expired link?)"
    assert list(tmp_path.iterdir()) == []


def test_output_path_that_is_a_file_is_reported(url, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    message = run_one(url("good.zip"), tmp_path / "out")
    assert message == f"{url('good.zip')}: File exists: {tmp_path / 'out'}"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_during_download_is_reported(url, tmp_path):
    """A real ENOSPC: gdown resumes into a partial file that is a link to /dev/full."""
    (tmp_path / "good.zipABCDEFGH.part").symlink_to("/dev/full")
    message = run_one(url("good.zip"), tmp_path)
    assert message.startswith(f"{url('good.zip')}: no space left on device"), message
    assert not (tmp_path / "good.zip").exists()


def test_connection_refused_is_reported(closed_port, tmp_path):
    link = f"http://127.0.0.1:{closed_port}/good.zip"
    assert run_one(link, tmp_path) == f"{link}: network unreachable (connection refused)"
    assert list(tmp_path.iterdir()) == []


def test_not_enough_space_keeps_archive_and_output(url, tmp_path, existing, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**6, used=10**6, free=1000))
    message = run_one(url("good.zip"), tmp_path, Options(unzip=True, remove_zip=True, retries=0))
    needed_kb = sum(map(len, GOOD_FILES.values())) / 1024
    assert message == f"{tmp_path / 'good.zip'}: not enough disk space in {tmp_path} (needs {needed_kb:.1f} KB, 1000.0 B free)"
    assert_untouched(tmp_path, {**existing, "good.zip": served_files()["good.zip"]})


# ---------------------------------------------------------------- links


@pytest.mark.parametrize(
    "link",
    [
        "https://drive.google.com/open?id=1o8KGGicgMwp3ZK5FR5pRZIbHTwfndyiS",
        "https://drive.google.com/file/d/1o8KGGicgMwp3ZK5FR5pRZIbHTwfndyiS/view?usp=sharing",
        "https://drive.google.com/uc?id=1o8KGGicgMwp3ZK5FR5pRZIbHTwfndyiS",
        "http://127.0.0.1:8000/data.zip",
    ],
)
def test_accepted_link_forms(link):
    assert check_link(f"  {link} ") == link


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://drive.google.com/drive/folders/1o8KGGicgMwp3ZK5FR5pRZIbHTwfndyiS", "not a Google Drive file link"),
        ("1o8KGGicgMwp3ZK5FR5pRZIbHTwfndyiS", "not a Google Drive link or http(s) URL"),
        ("ftp://example.org/data.zip", "not a Google Drive link or http(s) URL"),
    ],
)
def test_bad_links_are_reported_without_network(tmp_path, link, expected):
    assert run_one(link, tmp_path).startswith(f"{link}: {expected}")


def test_read_links_file_skips_comments_and_labels(tmp_path):
    links = tmp_path / "links.txt"
    links.write_text(
        "# AerialMegaDepth\n\n0001: https://drive.google.com/open?id=abc\nhttp://host/b.zip  # second\n   \n"
    )
    assert read_links_file(links) == ["https://drive.google.com/open?id=abc", "http://host/b.zip"]
    links.write_text("# nothing here\n")
    with pytest.raises(DownloadError, match="no links in file"):
        read_links_file(links)


def test_cli_links_file_continues_after_failure(url, tmp_path, capsys):
    links = tmp_path / "links.txt"
    links.write_text(f"# parts\nbroken: {url('missing.zip')}\n{url('good.zip')}\n")
    out = tmp_path / "out"
    status = download_data.main(
        ["--output_path", str(out), "--gdrive_links_file", str(links), "--unzip", "--remove_zip", "--retries", "0"]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert tree(out) == GOOD_FILES
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {url('missing.zip')}: HTTP 404 Not Found (bad or expired link?)"]
    assert "Summary: 1 succeeded, 1 failed" in captured.out
    assert f"ok      {url('good.zip')} -> {out}" in captured.out


def test_cli_single_link_success(url, tmp_path):
    assert download_data.main(["--output_path", str(tmp_path), "--gdrive_link", url("good.zip"), "--unzip"]) == 0
    assert tree(tmp_path) == {**GOOD_FILES, "good.zip": served_files()["good.zip"]}


def test_cli_rejects_conflicting_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        download_data.main(["--output_path", str(tmp_path), "--source", "hf", "--gdrive_link", "http://x/a.zip"])
    assert exit_info.value.code == 2
    assert "cannot be used with --source hf" in capsys.readouterr().err


# ---------------------------------------------------------------- Hugging Face


def test_cli_hf_unreachable_endpoint(tmp_path, closed_port):
    """Runs the script as a user would (from another folder), against a Hub address where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port}",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="2",
        HF_HUB_DOWNLOAD_TIMEOUT="2",
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "download_data.py"), "--output_path", str(out), "--allow_patterns", "*.zip"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: kvuong2711/aerialmegadepth: cannot reach the Hugging Face Hub at "
        f"http://127.0.0.1:{closed_port} (connection refused)"
    ]
    assert "Summary: 0 succeeded, 1 failed" in proc.stdout
    assert list(out.iterdir()) == []
