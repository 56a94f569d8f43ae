"""Safe extraction of zip and tar (plain, gz, bz2, xz) archives, nested archives included.

Nothing from an archive decides where bytes land or what kind of file is created: each member is
read as a stream and written by us as a regular file under the destination, so
  - names with '..', absolute names, drive letters and NUL bytes are refused;
  - symlinks and hardlinks are never created: a link to another member of the archive becomes a copy
    of that member, a link that leads anywhere else (/etc, ../..) is refused;
  - devices, FIFOs and other special members are refused; modes and owners are not applied;
  - each member's bytes are capped (a member over it is refused, the rest go on), and so are the
    total extracted bytes and file count (zip bombs), counting the bytes actually written while
    streaming, not the sizes the archive claims;
  - names that are not UTF-8 are written escaped (stylepipe.names), so manifests can hold them.
A refused member is reported with its reason and extraction goes on; an archive that cannot be read
at all, or that breaks a total cap, raises ExtractError.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from stylepipe.names import escape_name
from tasks.data.reasons import reason

CHUNK = 1 << 20
MAX_NESTING = 3  # archives inside archives are extracted this many levels deep
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


class ExtractError(Exception):
    """The archive as a whole cannot be extracted (unreadable, or over a cap)."""


def archive_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), None)


@dataclass
class Budget:
    """Caps shared by an archive and every archive nested in it."""

    max_bytes: int
    max_files: int
    max_member_bytes: int | None = None  # None: only the total cap
    bytes: int = 0
    files: int = 0

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise ExtractError(f"more than {self.max_files} files (download.max_extract_files); "
                               "raise the cap if this archive is trusted")

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise ExtractError(f"more than {self.max_bytes} bytes extracted (download.max_extract_bytes); "
                               "raise the cap if this archive is trusted")

    def check_member(self, size: int) -> None:
        """ValueError (the member is refused) when one member holds more than max_member_bytes."""
        if self.max_member_bytes is not None and size > self.max_member_bytes:
            raise ValueError(reason("too-large", f"over {self.max_member_bytes} bytes decompressed "
                                                 "(download.max_member_bytes)"))


@dataclass
class Extracted:
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # relpath -> (size, sha256)
    refused: list[tuple[str, str]] = field(default_factory=list)     # (member name, reason)


def extract(archive: Path, dest: Path, budget: Budget, *, name: str | None = None, depth: int = 0) -> Extracted:
    """Extract `archive` (its kind from `name`, default its file name) into the folder `dest`."""
    kind = archive_suffix(name or archive.name)
    dest.mkdir(parents=True, exist_ok=True)
    result = Extracted()
    try:
        if kind == ".zip":
            _extract_zip(archive, dest, budget, result)
        elif kind is not None:
            _extract_tar(archive, dest, budget, result)
        else:
            raise ExtractError(f"{name or archive.name}: not a zip or tar archive name")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        # zlib/lzma/bz2 errors and short reads surface as one of these
        raise ExtractError(f"cannot read the archive: {type(e).__name__}: {e}") from None
    _extract_nested(dest, budget, result, depth)
    return result


def _extract_nested(dest: Path, budget: Budget, result: Extracted, depth: int) -> None:
    for relpath in sorted(result.files):
        if archive_suffix(relpath) is None or depth + 1 > MAX_NESTING:
            continue
        inner = dest / relpath
        target = _nested_target(dest, relpath)
        try:
            nested = extract(inner, dest / target, budget, depth=depth + 1)
        except ExtractError as e:
            if "download.max_extract" in str(e):
                raise
            shutil.rmtree(dest / target, ignore_errors=True)
            result.refused.append((relpath, f"nested archive: {e}"))
            nested = None
        inner.unlink()
        del result.files[relpath]
        if nested is not None:
            result.files.update({f"{target}/{p}": v for p, v in nested.files.items()})
            result.refused.extend((f"{target}/{m}", r) for m, r in nested.refused)


def _nested_target(dest: Path, relpath: str) -> str:
    """photos/part1.zip -> photos/part1 (or photos/part1.zip.d when that name is taken)."""
    stem = relpath[: -len(archive_suffix(relpath))]
    return stem if stem and not (dest / stem).exists() else relpath + ".d"


def member_path(name: str) -> str:
    """The '/'-separated relative path a member name may be written to, escaped (stylepipe.names);
    ValueError says why not."""
    if "\x00" in name:
        raise ValueError("name contains a NUL byte")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise ValueError("absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("path goes up out of the archive ('..')")
    if not parts:
        raise ValueError("empty name")
    return escape_name("/".join(parts))


def _write(src: BinaryIO, dest: Path, relpath: str, budget: Budget, declared_size: int) -> tuple[int, str]:
    budget.check_member(declared_size)
    if budget.bytes + declared_size > budget.max_bytes:
        budget.add_bytes(declared_size)  # raises, before anything is written
    target = dest / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        raise ValueError("a folder of the same name is already there")
    budget.add_file()
    digest, size = hashlib.sha256(), 0
    try:
        with open(target, "wb") as out:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                budget.check_member(size)
                budget.add_bytes(len(chunk))
                out.write(chunk)
                digest.update(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def _extract_zip(archive: Path, dest: Path, budget: Budget, result: Extracted) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if sum(m.file_size for m in members) > budget.max_bytes - budget.bytes:
            budget.add_bytes(sum(m.file_size for m in members))  # refuse a declared bomb up front
        for info in members:
            try:
                relpath = member_path(info.filename)
                # Unix zips keep the file type in the top bits; many zips leave it out (plain file).
                file_type = stat.S_IFMT(info.external_attr >> 16)
                if info.is_dir() or file_type == stat.S_IFDIR:
                    (dest / relpath).mkdir(parents=True, exist_ok=True)
                    continue
                if file_type == stat.S_IFLNK:
                    raise ValueError("symlink (links in zips are not extracted)")
                if file_type not in (0, stat.S_IFREG):
                    raise ValueError("special file (device, FIFO or socket)")
                if info.flag_bits & 0x1:
                    raise ValueError("encrypted")
                with zf.open(info) as src:
                    result.files[relpath] = _write(src, dest, relpath, budget, info.file_size)
            except ExtractError:
                raise
            except (ValueError, OSError, zipfile.BadZipFile, NotImplementedError, EOFError) as e:
                result.refused.append((escape_name(info.filename), _reason(e)))


def _extract_tar(archive: Path, dest: Path, budget: Budget, result: Extracted) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            try:
                relpath = member_path(member.name)
                if member.isdir():
                    (dest / relpath).mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    src = tf.extractfile(member)
                    result.files[relpath] = _write(src, dest, relpath, budget, member.size)
                elif member.issym() or member.islnk():
                    result.files[relpath] = _copy_link(member, relpath, dest, budget, result)
                else:
                    raise ValueError("special file (device, FIFO or socket)")
            except ExtractError:
                raise
            except (ValueError, OSError, KeyError) as e:
                result.refused.append((escape_name(member.name), _reason(e)))


def _copy_link(member: tarfile.TarInfo, relpath: str, dest: Path, budget: Budget,
               result: Extracted) -> tuple[int, str]:
    """A link to a file already extracted from this archive becomes a copy of it."""
    kind = "symlink" if member.issym() else "hardlink"
    target = member.linkname.replace("\\", "/")
    if member.issym() and not target.startswith("/"):
        target = posixpath.join(posixpath.dirname(member.name), target)
    try:
        if target.startswith("/"):
            raise ValueError
        target = member_path(posixpath.normpath(target))
    except ValueError:
        raise ValueError(f"{kind} to {member.linkname!r} points outside the archive") from None
    if target not in result.files:
        raise ValueError(f"{kind} to {member.linkname!r}: not a file extracted from this archive")
    with open(dest / target, "rb") as src:
        return _write(src, dest, relpath, budget, os.path.getsize(dest / target))


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"
