"""Outputs packed into tar files (StylizeParams.tar_size), instead of one file per output.

A million 64-px samples as a million files cost more to create than to compute: opening each new
file took 0.42 ms of an encode worker's 0.78 ms per sample (py-spy, docs/speed.md). Packed N to a
tar, they are one file per N outputs, the layout WebDataset and other dataset loaders read, and a
source stylepipe itself reads (a tar is an archive source).

    <out>/tar/<writer>-<run id>-<token>-000001.tar     members: the outputs' usual relative paths

(the token is new for every run of the engine: a Prefect task retried with the same writer and run
id must not replace the tars of its first try, whose outputs the ledger holds.)

A tar is written under the writer's temporary folder and moved into place when it is complete. Its
outputs' ledger rows are committed *before* the move, the reverse of single files: a row then may
name a tar that a kill kept from appearing, which the next run's planner finds missing (it checks the
tar, as it checks a file) and redoes; a tar never appears whose outputs the ledger does not hold, so a
kill never leaves an output in two finished tars. Whatever a killed run left unfinished is swept
with the temporary folder, and its outputs redone.

An output made again on purpose (its input changed, the model or options did, or --no-resume) goes
into a new tar, and its earlier copy stays in the earlier tar: tars are never rewritten. The ledger
says which copy is current; a reader of <out>/tar/*.tar alone sees both.

The ledger names such an output `tar://<member>::<tar path>` (fsspec's URL of a member in an
archive: `fsspec.open("tar://a.png::/out/tar/main-....tar")` reads it). No single-file output can
look like that: an output path never has an empty part.
"""
from __future__ import annotations

import contextlib
import os
import tarfile
import time
import uuid
from pathlib import Path

from tasks.bulk.codec import safe_target
from tasks.bulk.remote import upload

FOLDER = "tar"
PREFIX, SEPARATOR = "tar://", "::"
BLOCK = tarfile.BLOCKSIZE
END = b"\0" * (2 * BLOCK)   # a tar ends in two zero blocks, and its length is a whole record


def member_output(member: str, tar_relpath: str) -> str:
    """The ledger's name of an output packed in a tar."""
    return f"{PREFIX}{member}{SEPARATOR}{tar_relpath}"


def member_header(name: str, size: int, mtime: int) -> bytes:
    """The header block(s) of a regular file of mode 644: the bytes `tarfile` writes in PAX format
    (with UTF-8 names). An ASCII name of at most 100 bytes (nearly every output) gets its ustar block
    built here, 7x faster than tarfile's addfile (a 28-px generation job with tars 1.12x faster:
    docs/speed.md, session 31); any other name, or a size or time out of ustar's range, gets
    tarfile's own (a PAX record first)."""
    if not name.isascii() or len(name) > 100 or not (0 <= size < 8 ** 11 and 0 <= mtime < 8 ** 11):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, 0o644
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    block = b"".join((
        name.encode().ljust(100, b"\0"), b"0000644\0", b"0000000\0", b"0000000\0",  # name mode uid gid
        b"%011o\0" % size, b"%011o\0" % mtime, b" " * 8, b"0", b"\0" * 100,         # size mtime chksum type link
        b"ustar\x0000", b"\0" * (32 + 32 + 8 + 8 + 155 + 12)))                          # magic; uname gname dev prefix
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def split_output(output: str) -> tuple[str, str]:
    """A ledger output -> (the file that holds it, relative to the output folder; its name as an
    output: the tar member's name, or the file itself)."""
    if output.startswith(PREFIX):
        member, _, container = output[len(PREFIX):].rpartition(SEPARATOR)
        return container, member
    return output, output


class TarOutput:
    """The tar that outputs are added to, `size` at most, written in the engine's thread (a member
    costs its header, its bytes and their padding)."""

    def __init__(self, out_root: str, tmp_dir: str, writer: str, run_id: str, size: int, remote: bool):
        self.out_root, self.tmp_dir, self.size, self.remote = out_root, Path(tmp_dir), size, remote
        self.name_prefix = f"{FOLDER}/{writer}-{run_id}-{uuid.uuid4().hex[:8]}"
        self.count = 0       # tars finished by this writer
        self.file = None     # the tar being filled, written member by member
        self.members = 0     # in it

    @property
    def relpath(self) -> str:
        """The tar being filled, relative to the output folder."""
        return f"{self.name_prefix}-{self.count + 1:06d}.tar"

    def add(self, member: str, data: bytes) -> str:
        """Add one output; returns its ledger name. The caller closes the tar once `full`."""
        if self.file is None:
            self.file = open(self.tmp_dir / f"{Path(self.relpath).name}.part", "wb")
        self.file.write(member_header(member, len(data), int(time.time())))
        self.file.write(data)
        self.file.write(b"\0" * (-len(data) % BLOCK))
        self.members += 1
        return member_output(member, self.relpath)

    @property
    def full(self) -> bool:
        return self.members >= self.size

    @property
    def empty(self) -> bool:
        return self.members == 0

    def finish(self) -> None:
        """Complete the tar and move it into place (or upload it). The caller has committed its
        outputs' ledger rows first (see the module's docstring)."""
        if self.file is None:
            return
        part = Path(self.file.name)
        try:
            self.file.write(END)
            self.file.write(b"\0" * (-self.file.tell() % tarfile.RECORDSIZE))
            self.file.flush()
            os.fsync(self.file.fileno())  # the data on disk before the name that says it is complete
            self.file.close()
            if self.remote:
                upload(part, self.out_root, self.relpath, "")
            else:
                os.replace(part, safe_target(Path(self.out_root), self.relpath))
        finally:
            with contextlib.suppress(OSError):  # a full disk fails the flush again: the error is raised above
                self.file.close()
            part.unlink(missing_ok=True)  # (after a move, nothing is left to remove)
            self.file, self.members = None, 0
            self.count += 1

    def abandon(self) -> None:
        """Drop the tar being filled (its outputs have no ledger rows: the next run redoes them)."""
        if self.file is not None:
            with contextlib.suppress(OSError):  # buffered bytes a full disk refused fail the close too
                self.file.close()
            Path(self.file.name).unlink(missing_ok=True)
        self.file, self.members = None, 0
