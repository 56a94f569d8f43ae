"""Get the bytes of one source URL into a local file: the one path every kind of source takes.

Kinds of URL:
  pkg://<package>/<path>   a file (or folder) shipped inside an installed Python package (found
                           without importing it)
  a local path, file://    relative paths are relative to the working directory (the repo root)
  http://, https://        streamed with retries, exponential backoff and HTTP Range resume
  anything else            handed to fsspec (s3://, gs://, ... once the user installs the backend)

`fetch()` streams into a temp file under a `.partial/` folder while hashing it. The caller checks the
hash and moves the file into place, so a file that looks finished is never half-written.
"""
from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from stylepipe.names import escape_name

log = logging.getLogger("stylepipe.download")

CHUNK = 1 << 20
USER_AGENT = "stylepipe (+https://github.com/stylepipe/stylepipe)"
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


class FetchError(Exception):
    """This source cannot be fetched (not found, refused, gave up after retries)."""


class TransientError(Exception):
    """A failure worth retrying: 5xx, connection reset or refused, a body cut short, a timeout."""


@dataclass(frozen=True)
class Location:
    """Where a source's bytes are: a local filesystem path, an http(s) URL, or an fsspec URL."""

    kind: Literal["local", "http", "fsspec"]
    where: str


def locate(url: str) -> Location:
    if url.startswith("pkg://"):
        return Location("local", str(package_path(url)))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file:// URL with a host ({parts.netloc!r}) is not a local file")
        return Location("local", url2pathname(parts.path))
    if scheme in ("http", "https"):
        return Location("http", url)
    if scheme == "" or len(scheme) == 1:  # a relative/absolute path, or a Windows drive letter
        return Location("local", url)
    return Location("fsspec", url)


def package_path(url: str) -> Path:
    """pkg://skimage/data/astronaut.png -> the installed file's path. The package is found, not
    imported (a package installed without its dependencies may fail to import); the path must stay
    inside it."""
    package, _, inner = url[len("pkg://"):].partition("/")
    if not package or not inner:
        raise FetchError("a pkg:// URL is pkg://<package>/<path inside the package>")
    folders = package_folders(package)
    for folder in folders:  # a namespace package may span several folders
        path = Path(folder, inner)
        if not path.resolve().is_relative_to(Path(folder).resolve()):
            raise FetchError(f"{inner!r} leads outside package {package!r}")
        if path.exists():
            return path
    raise FetchError(f"package {package!r} has no file {inner!r} (looked in {', '.join(folders)})")


def package_folders(package: str) -> list[str]:
    """The folders of an installed package, found without importing it (or its parents)."""
    top, *subpackages = package.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise FetchError(f"package {package!r} is not installed")
    if spec.submodule_search_locations is None:
        raise FetchError(f"{top!r} is a module, not a package: it ships no files of its own")
    folders = [os.path.join(folder, *subpackages) for folder in spec.submodule_search_locations]
    return [f for f in folders if os.path.isdir(f)] or folders


def basename(url: str) -> str:
    """The file name a URL points at: percent-decoded, without query string or trailing slash."""
    parts = urlsplit(url)
    if url.startswith("pkg://") or parts.scheme == "" or len(parts.scheme) == 1:
        path = url.removeprefix("pkg://")  # a plain path (or a Windows one): taken literally
    else:
        path = unquote(parts.path) or parts.netloc  # s3://bucket -> "bucket"
    name = PurePosixPath(path.replace("\\", "/").rstrip("/")).name
    return safe_filename(name) or "download"


def safe_filename(name: str) -> str:
    """A name that is one path component: no separators, no control characters, not '.' or '..'."""
    name = re.sub(r"[\x00-\x1f/\\]", "_", name).strip()
    return "" if name in ("", ".", "..") else name


def source_id(url: str) -> str:
    """<slug of basename>-<first 8 hex of sha256(url)>: readable and unique per URL (docs/architecture.md)."""
    slug = re.sub(r"[^a-z0-9]+", "-", basename(url).lower()).strip("-")[:40].strip("-") or "source"
    return f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


# --- folders ------------------------------------------------------------------------------------


def is_folder(location: Location) -> bool:
    if location.kind == "local":
        return os.path.isdir(location.where)
    if location.kind == "fsspec":
        fs, path = _fsspec(location.where)
        try:
            return fs.isdir(path)
        except (OSError, ValueError) as e:
            raise FetchError(f"cannot reach it: {e}") from None
    return False


@dataclass(frozen=True)
class TreeFile:
    relpath: str  # '/'-separated, relative to the folder, escaped (stylepipe.names)
    location: Location
    size: int


@dataclass(frozen=True)
class Skipped:
    relpath: str
    reason: str


def walk_folder(location: Location) -> Iterator[TreeFile | Skipped]:
    """Every regular file under a folder source, in sorted order. Links that lead outside the folder
    and special files (devices, sockets, FIFOs) are skipped, with the reason."""
    if location.kind == "fsspec":
        yield from _walk_fsspec(location.where)
        return
    root = os.path.realpath(location.where)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            full = os.path.join(dirpath, name)
            relpath = escape_name(PurePosixPath(*Path(rel_dir, name).parts).as_posix() if rel_dir != "." else name)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if os.path.commonpath([root, target]) != root:
                    yield Skipped(relpath, f"symlink points outside the folder (to {os.readlink(full)})")
                    continue
                if not os.path.isfile(target):
                    yield Skipped(relpath, "symlink to a folder or missing file: not followed")
                    continue
            elif not os.path.isfile(full):
                yield Skipped(relpath, "not a regular file (device, socket or FIFO)")
                continue
            yield TreeFile(relpath, Location("local", full), os.path.getsize(full))


def _walk_fsspec(url: str) -> Iterator[TreeFile | Skipped]:
    fs, root = _fsspec(url)
    root = root.rstrip("/")
    for path, info in sorted(fs.find(root, detail=True).items()):
        relpath = escape_name(path[len(root):].lstrip("/"))
        if info.get("type", "file") != "file" or not relpath:
            continue
        yield TreeFile(relpath, Location("fsspec", fs.unstrip_protocol(path)), int(info.get("size") or 0))


def _fsspec(url: str):
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise FetchError("URLs other than http(s), file and pkg need fsspec (pip install fsspec)") from None
    del fsspec
    try:
        return url_to_fs(url)
    except ImportError as e:  # fsspec's message names the package to install (s3fs, gcsfs, ...)
        raise FetchError(f"no filesystem for {url.split('://', 1)[0]}://: {e}") from None
    except ValueError as e:
        raise FetchError(str(e)) from None


# --- fetching one file --------------------------------------------------------------------------


class PartialFile:
    """The `.partial` file being written and the running sha256 of the bytes in it."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.is_file():
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    self.digest.update(chunk)
                    self.size += len(chunk)
        else:
            self.restart()
        self.resumed_from = self.size

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.digest = hashlib.sha256()
        self.size = 0

    def append_from(self, src: BinaryIO, bar: tqdm | None) -> int:
        """Copy src to the end of the file; returns the number of bytes copied. Bytes that arrived
        before an error are kept (and hashed), so the next attempt can resume after them."""
        copied = 0
        with open(self.path, "ab") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                self.digest.update(chunk)
                self.size += len(chunk)
                copied += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        return copied

    def sha256(self) -> str:
        return self.digest.hexdigest()


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str
    resumed: bool  # it continued bytes left by an earlier run or attempt


def fetch(location: Location, partial: Path, *, timeout_s: float, retries: int, backoff_s: float,
          label: str, pinned: bool) -> Fetched:
    """Stream a source into `partial`, retrying transient failures with exponential backoff
    (backoff_s, 2*backoff_s, ...). http(s) and fsspec downloads resume from what `partial` already
    holds (a partial left by a failed run stays for the next one) when that is safe: the source is
    pinned by a sha256 the caller checks, or the server confirms the file is unchanged (If-Range)."""
    if location.kind == "local":
        sink = PartialFile(partial, resume=False)
        try:
            with open(location.where, "rb") as src:
                sink.append_from(src, None)
        except OSError as e:
            partial.unlink(missing_ok=True)
            raise FetchError(f"cannot read {location.where}: {e.strerror or e}") from None
        return Fetched(sink.size, sink.sha256(), False)

    sink = PartialFile(partial, resume=True)
    attempt_once = _http_attempt if location.kind == "http" else _fsspec_attempt
    for attempt in range(retries + 1):
        try:
            with _progress(label) as bar:
                attempt_once(location.where, sink, timeout_s, bar, pinned)
            return Fetched(sink.size, sink.sha256(), sink.resumed_from > 0)
        except TransientError as e:
            if attempt == retries:
                raise FetchError(f"gave up after {attempt + 1} attempts: {e}") from None
            delay = backoff_s * 2**attempt
            log.warning("%s: %s; retry %d of %d in %.1f s", label, e, attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _progress(label: str) -> tqdm:
    # disable=None: a byte bar on a terminal, nothing in logs (the stage logs a summary instead).
    return tqdm(desc=label[-40:], unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                file=sys.stderr, disable=None, miniters=1, mininterval=0.5)


def _validator_path(sink: PartialFile) -> Path:
    return sink.path.with_name(sink.path.name + ".validator")


def _http_attempt(url: str, sink: PartialFile, timeout_s: float, bar: tqdm, pinned: bool) -> None:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    validator_file = _validator_path(sink)
    validator = validator_file.read_text() if validator_file.is_file() else ""
    # Resume only when a stale prefix would be caught: by the caller's sha256 check (pinned), or by
    # the server (If-Range with the ETag / Last-Modified it sent before: a changed file comes whole).
    if sink.size and (validator or pinned):
        headers["Range"] = f"bytes={sink.size}-"
        if validator:
            headers["If-Range"] = validator
    elif sink.size:
        sink.restart()
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout_s)
    except HTTPError as e:
        e.close()
        if e.code == 416 and sink.size:  # the range is past the end: the partial is stale
            sink.restart()
            raise TransientError("server refused to resume (HTTP 416); starting over") from None
        if e.code in RETRYABLE_HTTP:
            raise TransientError(f"HTTP {e.code} {e.reason}") from None
        raise FetchError(f"HTTP {e.code} {e.reason}") from None
    except URLError as e:
        raise TransientError(f"cannot connect: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise TransientError(f"{type(e).__name__}: {e}") from None

    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != sink.size:
                sink.restart()
                raise TransientError(f"server resumed at byte {start}, not {sink.size}; starting over")
        else:
            if sink.size:
                log.info("%s: server sent the whole file; starting over", url)
            sink.restart()
            total = None
        length = response.headers.get("Content-Length")
        end = sink.size + int(length) if length and length.isdigit() else total
        new_validator = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
        if response.status != 206:
            validator_file.write_text(new_validator)
        bar.reset(total=end)
        bar.update(sink.size)
        try:
            sink.append_from(response, bar)
        except (OSError, http.client.HTTPException) as e:
            raise TransientError(f"connection lost after {sink.size} bytes: {type(e).__name__}: {e}") from None
        # http.client returns a short body without complaint when the server closes early.
        if end is not None and sink.size < end:
            raise TransientError(f"connection closed after {sink.size} of {end} bytes")
    validator_file.unlink(missing_ok=True)


def _content_range(value: str) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    if not match:
        raise TransientError(f"bad Content-Range {value!r}")
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _fsspec_attempt(url: str, sink: PartialFile, timeout_s: float, bar: tqdm, pinned: bool) -> None:
    fs, path = _fsspec(url)
    try:
        size = fs.size(path)
        if sink.size and (not pinned or (size is not None and sink.size > size)):
            sink.restart()
        bar.reset(total=size)
        bar.update(sink.size)
        with fs.open(path, "rb") as src:
            if sink.size:
                src.seek(sink.size)
            sink.append_from(src, bar)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise FetchError(f"{type(e).__name__}: {e}") from None
    except (OSError, TimeoutError, ConnectionError) as e:
        raise TransientError(f"{type(e).__name__}: {e}") from None


def write_json_atomic(path: Path, data: object, tmp_dir: Path) -> None:
    """Write JSON through a temp file in tmp_dir (same filesystem), so readers never see half a file.
    The bytes are deterministic: unchanged data gives an unchanged file."""
    text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
