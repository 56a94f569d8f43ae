"""Where the images to stylize come from, read in place: a folder tree, a zip, a tar (plain, gz, bz2,
xz), a single image file, or any of these behind an fsspec URL (s3://, gs://, memory://, ...).

A source is listed once (`scan`) and then read in listing order (`read`). Archives are never
extracted: zip members are read by index, members of an uncompressed tar straight from their
offset, members of a compressed tar by streaming the archive once. Every name goes through
tasks.data.archives.member_path, so a name that would escape the output folder never becomes an input.

`scan` yields one record per file: an `Entry` (an image to stylize) or a `Refused` (why not).
"""
from __future__ import annotations

import gzip
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from stylepipe.names import escape_name
from tasks.data.archives import archive_suffix, member_path
from tasks.data.images import IMAGE_SUFFIXES
from tasks.data.reasons import reason

# Inside the output folder this name holds the ledger and temporary files; no input may claim it.
RESERVED_NAME = ".stylepipe"
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


class SourceError(Exception):
    """The source as a whole cannot be listed or read (missing, not an archive, unreadable)."""


@dataclass(frozen=True, slots=True)
class Entry:
    relpath: str      # '/'-separated, safe (no '..', not absolute, not under RESERVED_NAME), escaped (stylepipe.names)
    size: int
    stamp: str        # changes whenever the file does (size + mtime, or size + CRC for zips)
    ref: str | int    # how `read` finds it: a path or URL (folders), an index (zip), an offset (tar)


@dataclass(frozen=True, slots=True)
class Refused:
    relpath: str      # the name as found, escaped (stylepipe.names) and printable (control characters too)
    status: Literal["failed", "ignored"]  # failed: a bad input; ignored: not an image at all
    reason: str       # `code: detail` (tasks/data/reasons.py)
    size: int = 0
    stamp: str = ""


@dataclass(frozen=True, slots=True)
class Locator:
    """A payload the worker reads itself (a local path or an fsspec URL), so reading is parallel."""

    where: str
    fsspec: bool


@dataclass(frozen=True, slots=True)
class ReadError:
    """The member could not be read; recorded as a failed input instead of being decoded."""

    reason: str


@dataclass(frozen=True, slots=True)
class Seed:
    """Not a file: one sample for a generator to draw (a "sample" family's input)."""

    seed: int
    label: int   # -1: unconditional


Payload = bytes | Locator | ReadError | Seed


def printable(name: str) -> str:
    """A name as text to show and store: escaped (stylepipe.names), control characters as \\n etc."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in escape_name(name))


def classify(raw_name: str, size: int, stamp: str, ref: str | int, max_bytes: int) -> Entry | Refused:
    """The one rule for every kind of source: is this file an input, and under which name?"""
    shown = printable(raw_name)
    try:
        relpath = member_path(raw_name)
    except ValueError as e:
        return Refused(shown, "failed", reason("unsafe-name", str(e)), size, stamp)
    parts = relpath.split("/")
    if parts[0] == RESERVED_NAME:
        return Refused(shown, "failed", reason("unsafe-name", f"{RESERVED_NAME}/ is reserved for stylepipe"),
                       size, stamp)
    if "__MACOSX" in parts or parts[-1].startswith("._"):
        return Refused(relpath, "ignored", reason("hidden", "macOS resource fork, not an image"), size, stamp)
    if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
        return Refused(relpath, "ignored", reason("not-an-image-name"), size, stamp)
    if size > max_bytes:
        return Refused(relpath, "failed", too_large(max_bytes, size), size, stamp)
    return Entry(relpath, size, stamp, ref)


def too_large(max_bytes: int, size: int | None = None) -> str:
    what = f"{size} bytes is" if size is not None else "it is"
    return reason("too-large", f"{what} over the {max_bytes}-byte limit (max_input_bytes)")


class Source:
    label: str

    def scan(self) -> Iterator[Entry | Refused]:
        raise NotImplementedError

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        """Payloads in the order given, which must be listing order (a streamed tar needs it)."""
        raise NotImplementedError


class TooLarge(ValueError):
    """More bytes than the cap: the stream was cut there, never read to its end."""


READ_CHUNK = 1 << 20


def read_limited(f: BinaryIO, max_bytes: int) -> bytes:
    """At most max_bytes, read (and decompressed) in chunks: a member that claims little and
    inflates to gigabytes costs max_bytes, not its size."""
    data = bytearray()
    while chunk := f.read(min(READ_CHUNK, max_bytes + 1 - len(data))):
        data += chunk
        if len(data) > max_bytes:
            raise TooLarge(too_large(max_bytes))
    return bytes(data)


# --- folders ------------------------------------------------------------------------------------


class FolderSource(Source):
    """A local folder tree. Symlinks are followed only to files inside the tree; special files are
    refused. `exclude` (the output folder, when it lies inside the source) is never listed."""

    def __init__(self, root: Path, max_bytes: int, exclude: Path | None = None):
        self.root = Path(os.path.realpath(root))
        self.label = str(root)
        self.max_bytes = max_bytes
        self.exclude = os.path.realpath(exclude) if exclude else None

    def scan(self) -> Iterator[Entry | Refused]:
        yield from self._scan_dir(str(self.root), "")

    def _scan_dir(self, path: str, prefix: str) -> Iterator[Entry | Refused]:
        try:
            children = sorted(os.scandir(path), key=lambda d: d.name)
        except OSError as e:
            yield Refused(printable(prefix.rstrip("/") or "."), "failed",
                          reason("unreadable", f"folder: {e.strerror or e}"))
            return
        for child in children:
            relpath = prefix + child.name
            if child.is_dir(follow_symlinks=False):
                if child.path != self.exclude and not (prefix == "" and child.name == RESERVED_NAME):
                    yield from self._scan_dir(child.path, relpath + "/")
                continue
            try:
                st = self._regular_file_stat(child)
            except ValueError as e:
                yield Refused(printable(relpath), "ignored", str(e))  # coded by _regular_file_stat
                continue
            yield classify(relpath, st.st_size, f"{st.st_size}:{st.st_mtime_ns}", child.path, self.max_bytes)

    def _regular_file_stat(self, child: os.DirEntry) -> os.stat_result:
        if child.is_symlink():
            target = os.path.realpath(child.path)
            if os.path.commonpath([str(self.root), target]) != str(self.root):
                raise ValueError(reason("link", "symlink points outside the source folder: not followed"))
            if not os.path.isfile(target):
                raise ValueError(reason("link", "symlink to a folder or a missing file: not followed"))
            return os.stat(target)
        st = child.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(reason("special-file", "not a regular file (device, socket or FIFO)"))
        return st

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        for entry in entries:
            yield entry, Locator(str(entry.ref), fsspec=False)


class FsspecFolderSource(Source):
    """A folder behind an fsspec URL; workers fetch the files themselves, in parallel."""

    def __init__(self, url: str, fs, root: str, max_bytes: int):
        self.label, self.fs, self.root, self.max_bytes = url, fs, root.rstrip("/"), max_bytes

    def scan(self) -> Iterator[Entry | Refused]:
        try:
            found = self.fs.find(self.root, detail=True)
        except (OSError, ValueError) as e:
            raise SourceError(f"{self.label}: cannot list it: {e}") from None
        for path, info in sorted(found.items()):
            relpath = path[len(self.root):].lstrip("/")
            if info.get("type", "file") != "file" or not relpath:
                continue
            size = int(info.get("size") or 0)
            version = next((str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified", "updated", "created")
                            if info.get(k) is not None), "")
            yield classify(relpath, size, f"{size}:{version}", self.fs.unstrip_protocol(path), self.max_bytes)

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        # memory:// exists only in this process: read it here. Real stores are read by the workers.
        in_process = "memory" in self.fs.protocol
        for entry in entries:
            if not in_process:
                yield entry, Locator(str(entry.ref), fsspec=True)
                continue
            try:
                with self.fs.open(str(entry.ref), "rb") as f:
                    yield entry, read_limited(f, self.max_bytes)
            except (OSError, ValueError) as e:
                yield entry, _unreadable(e)


class SingleFileSource(Source):
    def __init__(self, path: str, size: int, stamp: str, locator: Locator, max_bytes: int):
        self.label, self.size, self.stamp, self.locator, self.max_bytes = path, size, stamp, locator, max_bytes

    def scan(self) -> Iterator[Entry | Refused]:
        name = self.label.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        yield classify(name, self.size, self.stamp, self.locator.where, self.max_bytes)

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        for entry in entries:
            yield entry, self.locator


# --- archives -----------------------------------------------------------------------------------


Opener = Callable[[], BinaryIO]


class ZipSource(Source):
    def __init__(self, label: str, opener: Opener, max_bytes: int):
        self.label, self.opener, self.max_bytes = label, opener, max_bytes

    def scan(self) -> Iterator[Entry | Refused]:
        with self.opener() as f, _zip(f, self.label) as zf:
            infos = zf.infolist()
        last_index = {info.filename: i for i, info in enumerate(infos)}
        for i, info in enumerate(infos):
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir() or file_type == stat.S_IFDIR:
                continue
            stamp = f"{info.file_size}:{info.CRC:08x}"
            if file_type == stat.S_IFLNK:
                yield Refused(printable(info.filename), "ignored", LINK, 0, stamp)
            elif file_type not in (0, stat.S_IFREG):
                yield Refused(printable(info.filename), "ignored", SPECIAL, 0, stamp)
            elif info.flag_bits & 0x1:
                yield Refused(printable(info.filename), "failed", reason("encrypted"), info.file_size, stamp)
            elif last_index[info.filename] != i:
                yield Refused(printable(info.filename) + f" (member {i})", "ignored", DUPLICATE, info.file_size,
                              stamp)
            else:
                yield classify(info.filename, info.file_size, stamp, i, self.max_bytes)

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        with self.opener() as f, _zip(f, self.label) as zf:
            infos = zf.infolist()
            for entry in entries:
                try:
                    with zf.open(infos[int(entry.ref)]) as member:
                        yield entry, read_limited(member, self.max_bytes)
                except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as e:
                    yield entry, _unreadable(e)


def _zip(f: BinaryIO, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SourceError(f"{label}: not a readable zip archive: {e}") from None


class TarSource(Source):
    """A tar archive. Uncompressed and seekable: members are read from their offsets (a shard jumps
    straight to its members). Compressed: the archive is streamed once per `read` call, members in
    order; members not asked for are skipped over."""

    def __init__(self, label: str, opener: Opener, max_bytes: int):
        self.label, self.opener, self.max_bytes = label, opener, max_bytes
        with opener() as f:
            head = f.read(6)
        self.compressed = head.startswith(COMPRESSED_MAGIC)

    def _open(self, f: BinaryIO) -> tarfile.TarFile:
        try:
            return tarfile.open(fileobj=f, mode="r|*" if self.compressed else "r:")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise SourceError(f"{self.label}: not a readable tar archive: {e}") from None

    def scan(self) -> Iterator[Entry | Refused]:
        members = []
        with self.opener() as f, self._open(f) as tf:
            try:
                for m in tf:
                    members.append((m.name, m.type, m.size, int(m.mtime), m.offset_data))
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                yield Refused(printable(f"{self.label} (after member {len(members)})"), "failed",
                              reason("corrupt", f"the archive is damaged from here on: {type(e).__name__}: {e}"))
        last_index = {name: i for i, (name, *_rest) in enumerate(members)}
        for i, (name, kind, size, mtime, offset) in enumerate(members):
            stamp = f"{size}:{mtime}"
            if kind == tarfile.DIRTYPE:
                continue
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                yield Refused(printable(name), "ignored", LINK, 0, stamp)
            elif kind not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                yield Refused(printable(name), "ignored", SPECIAL, 0, stamp)
            elif last_index[name] != i:
                yield Refused(printable(name) + f" (member {i})", "ignored", DUPLICATE, size, stamp)
            else:
                # compressed: the member's position in the stream; plain: its data offset
                yield classify(name, size, stamp, i if self.compressed else offset, self.max_bytes)

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        if self.compressed:
            yield from self._stream(entries)
            return
        with self.opener() as f:
            for entry in entries:
                try:
                    f.seek(int(entry.ref))
                    data = f.read(entry.size)
                    if len(data) != entry.size:
                        raise EOFError(f"archive ends {entry.size - len(data)} bytes into this member")
                    yield entry, data
                except (OSError, EOFError) as e:
                    yield entry, _unreadable(e)

    def _stream(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        wanted = iter(entries)
        entry = next(wanted, None)
        with self.opener() as f, self._open(f) as tf:
            index = 0
            try:
                for member in tf:
                    if entry is None:
                        break
                    if index == int(entry.ref):
                        yield entry, self._member(tf, member)
                        entry = next(wanted, None)
                    index += 1
            except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
                error = e
            else:
                error = None
        while entry is not None:  # the stream ended (or broke) before these members
            yield entry, _unreadable(error or EOFError("member not found in the archive"))
            entry = next(wanted, None)


    def _member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> Payload:
        src = tf.extractfile(member)
        try:
            return read_limited(src, self.max_bytes) if src else _unreadable(None)
        except TooLarge as e:  # this member only: the stream goes on past it
            return ReadError(str(e))


LINK = reason("link", "links are not followed")
SPECIAL = reason("special-file", "device, FIFO or socket")
DUPLICATE = reason("duplicate", "the member name appears again later: the last one is used")
# A damaged archive stays damaged: its members fail for good (the stamp changes if it is replaced).
# Any other OSError may pass (a network store, a full page cache): the next run tries again.
CORRUPT_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile,
                  NotImplementedError)


def _unreadable(e: BaseException | None) -> ReadError:
    if e is None:
        return ReadError(reason("special-file", "not a regular file"))
    if isinstance(e, TooLarge):
        return ReadError(str(e))
    code = "corrupt" if isinstance(e, CORRUPT_ERRORS) else "unreadable"
    return ReadError(reason(code, f"{type(e).__name__}: {e}"))


# --- seeds (generation) --------------------------------------------------------------------------

SEEDS_SCHEME = "seeds:"


def seeds_spec(count: int, first: int = 0, labels: list[int] | None = None) -> str:
    """The source string of a sampling job: `seeds:FIRST+COUNT[:L1,L2,...]`."""
    spec = f"{SEEDS_SCHEME}{first}+{count}"
    return spec + (":" + ",".join(map(str, labels)) if labels else "")


class SeedSource(Source):
    """Seeds FIRST .. FIRST+COUNT-1, one sample each, named `<seed>` or `<label>/<seed>` (labels are
    dealt round-robin, so every label gets COUNT/len(labels) samples). Listed lazily: nothing
    exists until a sample is drawn, and (model, seed, label) is the ledger's identity."""

    def __init__(self, spec: str):
        self.label = spec
        body = spec.removeprefix(SEEDS_SCHEME)
        span, _, labels = body.partition(":")
        try:
            first, _, count = span.partition("+")
            self.first, self.count = int(first), int(count)
            self.labels = [int(x) for x in labels.split(",")] if labels else []
        except ValueError:
            raise SourceError(f"{spec}: expected seeds:FIRST+COUNT[:LABEL,LABEL,...]") from None
        if self.first < 0 or self.count < 0 or any(x < 0 for x in self.labels):
            raise SourceError(f"{spec}: seeds, counts and labels are whole numbers >= 0")

    def entry(self, i: int) -> Entry:
        seed = self.first + i
        if not self.labels:
            return Entry(f"{seed:09d}", 0, "seed", f"{seed}:-1")
        label = self.labels[i % len(self.labels)]
        return Entry(f"{label}/{seed:09d}", 0, "seed", f"{seed}:{label}")

    def scan(self) -> Iterator[Entry | Refused]:
        return (self.entry(i) for i in range(self.count))

    def read(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Payload]]:
        for e in entries:
            seed, label = map(int, str(e.ref).split(":"))
            yield e, Seed(seed, label)


# --- opening a source ---------------------------------------------------------------------------


def open_source(spec: str, *, max_bytes: int, exclude: Path | None = None) -> Source:
    """SOURCE as the user wrote it: a path, a file:// URL, another fsspec URL, or seeds:..."""
    if spec.startswith(SEEDS_SCHEME):
        return SeedSource(spec)
    if "://" in spec and not spec.startswith("file://"):
        return _open_fsspec(spec, max_bytes)
    path = Path(spec.removeprefix("file://"))
    if path.is_dir():
        return FolderSource(path, max_bytes, exclude)
    if not path.is_file():
        raise SourceError(f"{spec}: no such file or folder")
    opener = lambda: open(path, "rb")  # noqa: E731
    kind = _archive_kind(spec, opener)
    if kind == "zip":
        return ZipSource(spec, opener, max_bytes)
    if kind == "tar":
        return TarSource(spec, opener, max_bytes)
    st = path.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    return SingleFileSource(spec, st.st_size, stamp, Locator(str(path), False), max_bytes)


def _open_fsspec(url: str, max_bytes: int) -> Source:
    try:
        from fsspec.core import url_to_fs
        fs, path = url_to_fs(url)
    except ImportError as e:
        raise SourceError(f"{url}: no filesystem for this URL ({e})") from None
    except ValueError as e:
        raise SourceError(f"{url}: {e}") from None
    try:
        if fs.isdir(path):
            return FsspecFolderSource(url, fs, path, max_bytes)
        info = fs.info(path)
    except FileNotFoundError:
        raise SourceError(f"{url}: no such file or folder") from None
    except (OSError, ValueError) as e:
        raise SourceError(f"{url}: cannot reach it: {e}") from None
    opener = lambda: fs.open(path, "rb")  # noqa: E731
    kind = _archive_kind(url, opener)
    if kind == "zip":
        return ZipSource(url, opener, max_bytes)
    if kind == "tar":
        return TarSource(url, opener, max_bytes)
    size = int(info.get("size") or 0)
    return SingleFileSource(url, size, f"{size}:{info.get('mtime', '')}", Locator(url, True), max_bytes)


def _archive_kind(name: str, opener: Opener) -> str | None:
    """By content when possible (a zip named .tar is still a zip), else by name."""
    with opener() as f:
        head = f.read(265)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[257:262] == b"ustar" or head.startswith(COMPRESSED_MAGIC):
        return "tar"
    suffix = archive_suffix(name)
    if suffix == ".zip":
        return "zip"
    if suffix is not None:
        return "tar"
    return None
