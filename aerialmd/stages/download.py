"""Download stage: fetch the AerialMegaDepth archives and unpack them safely.

Two sources:
  * links (Google Drive share links or plain http(s) URLs), fetched with gdown, which resumes partial
    downloads (its `<name>XXXXXXXX.part` files) and skips files that are already complete;
  * the Hugging Face dataset repository, fetched with huggingface_hub.snapshot_download.

Every archive is verified (zip CRCs, tar headers and data, gzip CRC) and its members are checked to stay
inside the output folder before anything is written. Extraction goes to a hidden temporary folder next to
the destination and is then moved into place, so a failure never leaves a half-extracted folder and never
touches what was there before. Every expected failure is raised as DownloadError, whose text is one line
naming the link or file and the problem.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import lzma
import os
import posixpath
import shutil
import socket
import stat
import sys
import tarfile
import urllib.parse
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, Sequence

import gdown
import requests
from gdown.exceptions import DownloadError as GdownError
from gdown.exceptions import FileURLRetrievalError
from gdown.parse_url import is_google_drive_url, parse_url

from aerialmd.atomic import remove_path, replace_path, temporary_sibling

DEFAULT_HF_REPO_ID = "kvuong2711/aerialmegadepth"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
NETWORK_TIMEOUT = 60.0  # seconds without a byte from the server before a link fails
_CHUNK = 1 << 20
# What the archive modules raise for a truncated, corrupt or unsupported archive.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    EOFError,
    gzip.BadGzipFile,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
)


class DownloadError(Exception):
    """An expected failure of one link, dataset or archive; str() is the one-line message for the user."""


class CorruptArchiveError(DownloadError):
    """The file is not a readable archive (corrupt, truncated, or something else such as an HTML page)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """What to do with each fetched archive, and how hard to retry the network."""

    unzip: bool = False
    remove_zip: bool = False
    create_subdirs: bool = False
    retries: int = 3


@dataclasses.dataclass(frozen=True)
class Result:
    """Outcome of one link, dataset or archive, for the final summary."""

    source: str
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when this item succeeded."""
        return self.error is None


# ---------------------------------------------------------------- links


def read_links_file(path: Path | str) -> list[str]:
    """Links from a text file: one per line; blank lines and `#` comments are skipped.

    The original project's `name: link` lines are accepted too (the label is dropped).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read links file ({_os_problem(exc)})") from exc
    links = []
    for line in lines:
        text = line.split(" #", 1)[0].strip()
        if text and not text.startswith("#"):
            links.append(text.rsplit(": ", 1)[-1].strip())
    if not links:
        raise DownloadError(f"{path}: no links in file")
    return links


def check_link(link: str) -> str:
    """Return the stripped link if it is an http(s) URL and, for Google Drive, names a file."""
    link = link.strip()
    parsed = urllib.parse.urlparse(link)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DownloadError(f"{link}: not a Google Drive link or http(s) URL")
    if is_google_drive_url(link) and parse_url(link)[0] is None:
        raise DownloadError(
            f"{link}: not a Google Drive file link (expected .../file/d/<id>/view, open?id=<id> or uc?id=<id>)"
        )
    return link


def fetch_url(link: str, folder: Path, *, retries: int = 3) -> tuple[Path, bool]:
    """Download one link into `folder` with gdown (resuming a partial download, skipping a complete one).

    Returns the file and whether bytes were transferred now (False when gdown found the file complete).
    """
    link = check_link(link)
    transferred = False

    def note_progress(done: int, total: int | None) -> None:
        nonlocal transferred
        transferred = True

    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = gdown.download(
            link,
            output=_gdown_output(link, folder),
            quiet=False,
            resume=True,
            retries=retries,
            timeout=NETWORK_TIMEOUT,
            progress=note_progress,
        )
    except (requests.RequestException, GdownError, OSError) as exc:
        raise DownloadError(f"{link}: {_fetch_problem(exc)}") from exc
    return Path(path), transferred


def _gdown_output(link: str, folder: Path) -> str:
    """gdown's `output` for a link: the folder for Drive (the server names the file), else the URL's file name.

    Given only a folder, gdown would name a plain URL's file after the whole URL tail, query string included.
    """
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(link).path)).name
    return str(folder / name) if name and not is_google_drive_url(link) else f"{folder}{os.sep}"


def _fetch_problem(exc: Exception) -> str:
    """One-line reason for a failed gdown download."""
    if isinstance(exc, FileURLRetrievalError):
        return (
            "Google Drive gave no download URL (file not shared with 'Anyone with the link', "
            "or its download quota is exceeded)"
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason} (bad or expired link?)"
    network = _network_problem(exc)
    if network:
        return f"network unreachable ({network})"
    if isinstance(exc, OSError):
        return _os_problem(exc)
    return _one_line(str(exc))


def download_links(links: Sequence[str], output: Path | str, options: Options = Options()) -> list[Result]:
    """Fetch (and with options.unzip, unpack) every link into `output`; a failed link does not stop the rest."""
    output = Path(output)
    results = []
    for number, link in enumerate(links, 1):
        print(f"[{number}/{len(links)}] {link}", flush=True)
        results.append(_attempt(link, lambda: _process_link(link, output, options)))
    return results


def _process_link(link: str, output: Path, options: Options) -> str:
    """Fetch one link and unpack it; an unusable file fetched just now is deleted so a rerun fetches it again."""
    archive, fresh = fetch_url(link, output, retries=options.retries)
    if not options.unzip:
        return str(archive)
    try:
        return _unpack(archive, options)
    except CorruptArchiveError as exc:
        if fresh:
            archive.unlink()
            raise CorruptArchiveError(f"{exc} [download deleted; run again to fetch it again]") from exc
        raise CorruptArchiveError(f"{exc} [existing file kept; delete it to download it again]") from exc


# ---------------------------------------------------------------- Hugging Face


def fetch_hf(repo_id: str, folder: Path | str, *, allow_patterns: Sequence[str] | None = None) -> list[Path]:
    """Download the files of a Hugging Face dataset repository matching `allow_patterns` into `folder`.

    A dry run first lists the files (and fails cleanly when the Hub cannot be reached, where
    snapshot_download would silently return a non-empty local folder) and checks the free space.
    """
    from huggingface_hub import snapshot_download  # imported here: only this source needs it

    folder = Path(folder)
    patterns = list(allow_patterns) if allow_patterns else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        plan = snapshot_download(
            repo_id, repo_type="dataset", local_dir=folder, allow_patterns=patterns, dry_run=True
        )
        if not plan:
            raise DownloadError(f"{repo_id}: no file of the dataset matches allow_patterns {patterns}")
        needed = sum(item.file_size or 0 for item in plan if item.will_download)
        print(f"{repo_id}: {len(plan)} files, {_format_size(needed)} to download into {folder}", flush=True)
        require_free_space(folder, needed, repo_id)
        snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=plan[0].commit_hash,
            local_dir=folder,
            allow_patterns=patterns,
        )
    except (OSError, ValueError) as exc:
        raise DownloadError(f"{repo_id}: {_hf_problem(exc)}") from exc
    return [Path(item.local_path) for item in plan]


def _hf_problem(exc: Exception) -> str:
    """One-line reason for a failed Hugging Face download."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    # The dry run wraps the Hub's error in a generic DryRunError, so look through the whole chain.
    for cause in _causes(exc):
        if isinstance(cause, GatedRepoError):
            return "gated dataset: accept its terms on the Hub, then log in with `hf auth login`"
        if isinstance(cause, RepositoryNotFoundError):
            return "dataset not found on the Hub (wrong --hf_repo_id, or private and not logged in)"
        if isinstance(cause, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE is set; unset it to download"
        if isinstance(cause, HfHubHTTPError):
            return _one_line(str(cause).splitlines()[0])
    network = _network_problem(exc)
    if network:
        return f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({network})"
    if isinstance(exc, OSError):
        return _os_problem(exc)
    return _one_line(str(exc))


def download_hf(
    repo_id: str,
    output: Path | str,
    *,
    allow_patterns: Sequence[str] | None = None,
    options: Options = Options(),
) -> list[Result]:
    """Fetch a Hugging Face dataset into `output`; with options.unzip, unpack each archive among its files."""
    print(f"Hugging Face dataset {repo_id}", flush=True)
    fetched: list[Path] = []

    def fetch() -> str:
        fetched.extend(fetch_hf(repo_id, output, allow_patterns=allow_patterns))
        return f"{len(fetched)} files in {output}"

    results = [_attempt(repo_id, fetch)]
    if options.unzip:
        results += [_attempt(str(archive), lambda: _unpack(archive, options)) for archive in filter(is_archive, fetched)]
    return results


# ---------------------------------------------------------------- archives


@dataclasses.dataclass(frozen=True)
class _Member:
    """One archive entry: its path, its uncompressed size and, for a link, the root-relative path it points to."""

    name: str
    size: int
    link: str | None = None


def archive_suffix(path: Path) -> str | None:
    """The supported archive suffix `path` ends with (case-insensitive), or None."""
    name = path.name.lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if name.endswith(suffix)), None)


def is_archive(path: Path) -> bool:
    """True when `path` has a supported archive suffix."""
    return archive_suffix(path) is not None


def archive_stem(path: Path) -> str:
    """The archive name without its archive suffix (`scene.tar.gz` -> `scene`)."""
    suffix = archive_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def verify_archive(path: Path) -> int:
    """Read the whole archive, checking its integrity and that no member escapes; returns the unpacked size."""
    suffix = archive_suffix(path)
    if suffix is None:
        raise DownloadError(f"{path}: unsupported archive type (expected {', '.join(ARCHIVE_SUFFIXES)})")
    kind = "zip" if suffix == ".zip" else "tar"
    try:
        _refuse_html(path, kind)
        members = _zip_members(path) if kind == "zip" else _tar_members(path)
    except _ARCHIVE_ERRORS as exc:
        raise CorruptArchiveError(f"{path}: corrupt or truncated {kind} archive ({_one_line(str(exc))})") from exc
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read archive ({_os_problem(exc)})") from exc
    for member in members:
        _check_member(path, member)
    return sum(member.size for member in members)


def _refuse_html(path: Path, kind: str) -> None:
    """Name the usual culprit: a web page (Drive warning, login or error page) saved under the archive's name."""
    with path.open("rb") as handle:
        start = handle.read(512).lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        raise CorruptArchiveError(
            f"{path}: an HTML page, not a {kind} archive (link not public, Drive quota exceeded, or wrong URL?)"
        )


def _zip_members(path: Path) -> list[_Member]:
    """Zip entries, after checking every member's CRC."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"CRC mismatch in member {bad!r}")
        return [_zip_member(archive, info) for info in archive.infolist()]


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    """Describe one zip entry; a symlink entry stores its target as its data."""
    if not stat.S_ISLNK(info.external_attr >> 16):
        return _Member(info.filename, info.file_size)
    return _Member(info.filename, info.file_size, _link_path(info.filename, archive.read(info).decode(errors="replace")))


def _tar_members(path: Path) -> list[_Member]:
    """Tar entries, after reading every member's data and the rest of the stream (tar/gzip checks fire on read)."""
    members = []
    with tarfile.open(path) as archive:
        for entry in archive:
            if entry.isreg():
                _drain(archive.extractfile(entry))
            members.append(_tar_member(entry))
        _drain(archive.fileobj)
    return members


def _tar_member(entry: tarfile.TarInfo) -> _Member:
    """Describe one tar entry; symlink targets are relative to the link's folder, hard links to the root."""
    if entry.issym():
        return _Member(entry.name, 0, _link_path(entry.name, entry.linkname))
    if entry.islnk():
        return _Member(entry.name, 0, entry.linkname)
    return _Member(entry.name, entry.size if entry.isreg() else 0)


def _link_path(name: str, target: str) -> str:
    """Archive-root-relative path a symlink member points to (absolute if its target is absolute)."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(name), target))


def _drain(stream: IO[bytes]) -> None:
    """Read a binary stream to its end."""
    while stream.read(_CHUNK):
        pass


def _escapes(name: str) -> bool:
    """True when an archive path is absolute or climbs with `..` (it could land outside the output folder)."""
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def _check_member(archive: Path, member: _Member) -> None:
    """Refuse a member whose path, or link target, lies outside the extraction folder."""
    if _escapes(member.name):
        raise DownloadError(f"{archive}: unsafe member {member.name!r} would be written outside the output folder")
    if member.link is not None and _escapes(member.link):
        raise DownloadError(f"{archive}: unsafe link {member.name!r} points outside the output folder")


def require_free_space(folder: Path, needed: int, subject: str | Path) -> None:
    """Fail early, naming `subject`, when `folder`'s file system has less than `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"{subject}: not enough disk space in {folder} (needs {_format_size(needed)}, {_format_size(free)} free)"
        )


def _unpack(archive: Path, options: Options) -> str:
    """Unpack one fetched archive as the options say; returns where its content went."""
    return str(unpack_archive(archive, create_subdirs=options.create_subdirs, remove_archive=options.remove_zip))


def unpack_archive(archive: Path, *, create_subdirs: bool = False, remove_archive: bool = False) -> Path:
    """Verify and extract an archive next to itself (into a subfolder named after it with create_subdirs).

    Members are extracted to a hidden temporary folder, then moved into place: folders merge with existing
    ones and files replace same-named files, everything else already there is kept. The archive is removed
    (remove_archive) only after a successful extraction. Returns the folder that received the content.
    """
    archive = Path(archive)
    size = verify_archive(archive)
    parent = archive.parent
    require_free_space(parent, size, archive)
    print(f"Extracting {archive} ({_format_size(size)})", flush=True)
    staging = temporary_sibling(parent / archive_stem(archive))
    root = staging / archive_stem(archive) if create_subdirs else staging
    try:
        root.mkdir(parents=True)
        _extract(archive, root)
        _move_into(staging, parent)
        if remove_archive:
            archive.unlink()
    except tarfile.FilterError as exc:
        raise DownloadError(f"{archive}: unsafe member refused ({_one_line(str(exc))})") from exc
    except OSError as exc:
        raise DownloadError(f"{archive}: {_os_problem(exc)}") from exc
    finally:
        remove_path(staging)
    return parent / archive_stem(archive) if create_subdirs else parent


def _extract(archive: Path, folder: Path) -> None:
    """Extract every member of an already verified archive into `folder`."""
    if archive_suffix(archive) == ".zip":
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(folder)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(folder, filter="data")  # second guard: refuses links and paths leaving `folder`


def _move_into(source: Path, destination: Path) -> None:
    """Move the entries of `source` into `destination`, merging folders and replacing anything else in the way."""
    for entry in source.iterdir():
        target = destination / entry.name
        if _is_real_dir(entry) and _is_real_dir(target):
            _move_into(entry, target)
        else:
            replace_path(entry, target)


def _is_real_dir(path: Path) -> bool:
    """A folder that is not a symlink to one."""
    return path.is_dir() and not path.is_symlink()


# ---------------------------------------------------------------- errors and reporting


def _attempt(source: str, action: Callable[[], str]) -> Result:
    """Run one item, turning a DownloadError into a failed Result (printed as an `error:` line)."""
    try:
        return Result(source, detail=action())
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return Result(source, error=str(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _network_problem(exc: BaseException) -> str | None:
    """Why the server could not be reached (refused, DNS, timeout...), or None if that is not the failure."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return "host name could not be resolved"
        if isinstance(cause, (TimeoutError, requests.Timeout)):
            return "timed out"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network is unreachable"
        if isinstance(cause, ConnectionError) and cause.strerror:
            return cause.strerror.lower()
    return None


def _os_problem(exc: OSError) -> str:
    """One-line reason for a file-system error, with a plain message for a full disk."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device" + (f" while writing {exc.filename}" if exc.filename else "")
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return _one_line(str(exc))


def _one_line(text: str) -> str:
    """Collapse whitespace and newlines so a message fits on one line."""
    return " ".join(text.split())


def _format_size(size: float) -> str:
    """Human-readable byte count."""
    units = ("B", "KB", "MB", "GB", "TB")
    index = 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:.1f} {units[index]}"


def format_summary(results: Sequence[Result]) -> str:
    """Final report: counts, then one line per item."""
    failed = sum(not result.ok for result in results)
    lines = [f"Summary: {len(results) - failed} succeeded, {failed} failed"]
    for result in results:
        lines.append(f"  ok      {result.source} -> {result.detail}" if result.ok else f"  FAILED  {result.error}")
    return "\n".join(lines)
