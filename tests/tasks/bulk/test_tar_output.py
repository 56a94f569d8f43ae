"""Outputs packed into tar files (StylizeParams.tar_size, tasks/bulk/tar_output.py): the members are
the files a job would write, the ledger names each one in its tar, resume and a lost tar behave
as with files, a tar that cannot be finished fails its outputs alone, and kill -9 at any moment
leaves no output in two tars and nothing half-written under a final name."""
from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import fsspec
import pytest
from PIL import Image

import tasks.bulk.tar_output as tar_output
from stylepipe.errors import StageError
from tasks.bulk.engine import execute, stylize
from tasks.bulk.plan import ModelSpec, default_ledger, plan
from tasks.bulk.tar_output import split_output
from tests.hostile import corpus
from tests.tasks.bulk.test_kill import done_rows, kill_when
from tests.tasks.bulk.test_support import (all_files, ledger_rows, make_job, make_photos,  # noqa: F401
                                        other_model, output_files, tiny_model)

NAMES = [f"{'sub/' if i % 3 == 0 else ''}{i:02d}.jpg" for i in range(11)]


@pytest.fixture
def src(tmp_path) -> Path:
    make_photos(tmp_path / "src", NAMES)
    (tmp_path / "src" / "broken.jpg").write_bytes(corpus.bad_images()["truncated.jpg"][0])
    return tmp_path / "src"


def tars(out: Path) -> list[Path]:
    return sorted((out / "tar").glob("*.tar"))


def members(out: Path) -> dict[str, bytes]:
    """member name -> bytes, over every finished tar; a member in two tars fails the test."""
    found: dict[str, bytes] = {}
    for path in tars(out):
        with tarfile.open(path) as tar:
            for info in tar.getmembers():
                assert info.isfile() and info.name not in found, f"{info.name} twice"
                found[info.name] = tar.extractfile(info).read()
    return found


@pytest.mark.parametrize("workers", [0, 2])
def test_tars_hold_the_files_a_job_writes_and_the_ledger_names_each_member(src, tmp_path, tiny_model, workers):
    files_out, tar_out = tmp_path / "files", tmp_path / "tars"
    stylize(make_job(src, files_out, tiny_model, workers=workers), progress=False)
    summary = stylize(make_job(src, tar_out, tiny_model, workers=workers, tar_size=4), progress=False)

    assert (summary.done, summary.failed) == (len(NAMES), 1)
    assert [len(tarfile.open(t).getnames()) for t in tars(tar_out)] == [4, 4, 3]
    packed = members(tar_out)
    assert sorted(packed) == output_files(files_out)
    assert all(packed[name] == (files_out / name).read_bytes() for name in packed)
    # nothing else in the output folder: no loose files, no temporary ones
    assert all_files(tar_out) == [".stylepipe/ledger.sqlite", *(f"tar/{t.name}" for t in tars(tar_out))]

    rows = {r["relpath"]: r for r in ledger_rows(default_ledger(tar_out))}
    assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["output"] == ""
    for relpath in NAMES:
        row = rows[relpath]
        container, member = split_output(row["output"])
        assert row["status"] == "done" and row["output"].startswith("tar://")
        assert (tar_out / container).is_file() and row["output_bytes"] == len(packed[member])
        # the ledger's name is fsspec's URL of the member
        with fsspec.open(row["output"].replace("::", f"::{tar_out}/"), "rb") as f:
            assert f.read() == packed[member]


def test_several_models_share_the_tars_under_their_own_folders(src, tmp_path, tiny_model, other_model):
    files_out, tar_out = tmp_path / "files", tmp_path / "tars"
    stylize(make_job(src, files_out, tiny_model, other_model), progress=False)
    summary = stylize(make_job(src, tar_out, tiny_model, other_model, tar_size=5), progress=False)
    assert (summary.done, summary.failed) == (2 * len(NAMES), 2)
    packed = members(tar_out)
    assert sorted(packed) == output_files(files_out) and {name.split("/")[0] for name in packed} == {"tiny", "other"}
    assert all(packed[name] == (files_out / name).read_bytes() for name in packed)
    assert len(tars(tar_out)) == -(-2 * len(NAMES) // 5)


def test_resume_a_lost_tar_and_switching_to_files(src, tmp_path, tiny_model):
    out = tmp_path / "out"
    job = make_job(src, out, tiny_model, tar_size=4)
    stylize(job, progress=False)
    assert stylize(job, progress=False).run.processed == 0

    lost = tars(out)[1]
    lost_members = set(tarfile.open(lost).getnames())
    lost.unlink()
    again = stylize(job, progress=False)
    assert again.run.processed == len(lost_members) and again.done == len(NAMES)
    assert sorted(members(out)) == packed_names(out)
    assert len(tars(out)) == 3  # two of the first run, one of the second

    # the outputs' identity does not include tar_size: a job switched to files keeps them
    files = make_job(src, out, tiny_model)
    assert stylize(files, progress=False).run.processed == 0


def packed_names(out: Path) -> list[str]:
    return sorted(split_output(r["output"])[1] for r in ledger_rows(default_ledger(out)) if r["status"] == "done")


def test_a_tar_that_cannot_be_finished_fails_its_outputs_alone(src, tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "out"
    job = make_job(src, out, tiny_model, tar_size=4)
    real_replace, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(b))
        return real_replace(a, b)

    monkeypatch.setattr(tar_output.os, "replace", replace)
    summary = stylize(job, progress=False)
    assert (summary.done, summary.failed) == (len(NAMES) - 4, 4 + 1)
    rows = ledger_rows(default_ledger(out))
    failed = [r for r in rows if r["reason"].startswith("write-error")]
    assert len(failed) == 4 and all(r["output"] == "" for r in failed)
    assert len(tars(out)) == 2 and all_files(out / ".stylepipe") == ["ledger.sqlite"]

    monkeypatch.setattr(tar_output.os, "replace", real_replace)
    again = stylize(job, progress=False)   # (write errors are retried)
    assert again.run.processed == 4 and again.done == len(NAMES)
    assert sorted(members(out)) == packed_names(out) and len(packed_names(out)) == len(NAMES)


def test_a_full_disk_while_packing_stops_the_run_and_the_next_run_finishes(src, tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "out"
    job = make_job(src, out, tiny_model, tar_size=4)
    real_header, calls = tar_output.member_header, []

    def member_header(*args):  # called as each member's write starts
        calls.append(1)
        if len(calls) == 6:  # the second tar's second member
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_header(*args)

    monkeypatch.setattr(tar_output, "member_header", member_header)
    with pytest.raises(StageError, match="disk-full"):
        stylize(job, progress=False)
    rows = ledger_rows(default_ledger(out))
    # the broken tar's two outputs: failed, to be redone (write-error), with the cause
    failed = [r["reason"] for r in rows if r["status"] == "failed" and r["relpath"] != "broken.jpg"]
    assert len(failed) == 2 and all(r.startswith("write-error") and "No space left" in r for r in failed)
    assert [r for r in rows if r["status"] == "done"] and all(
        (out / split_output(r["output"])[0]).is_file() for r in rows if r["status"] == "done")
    assert len(tars(out)) == 1 and all_files(out / ".stylepipe") == ["ledger.sqlite"]

    monkeypatch.setattr(tar_output, "member_header", real_header)
    assert stylize(job, progress=False).done == len(NAMES)
    assert sorted(members(out)) == packed_names(out) and len(packed_names(out)) == len(NAMES)


class DiskThatFills:
    """A file whose writes fail from the `limit`-th on, as a disk that fills up; its close then fails
    too, as a buffered file's does when it cannot flush what it holds."""
    writes = 0
    limit = 0

    def __init__(self, path, mode):
        self.file = open(path, mode)
        self.name, self.failed = self.file.name, False

    def write(self, data):
        DiskThatFills.writes += 1
        if DiskThatFills.writes >= DiskThatFills.limit:
            self.failed = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def close(self):
        self.file.close()
        if self.failed:
            raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):  # tell, flush, fileno
        return getattr(self.file, name)


def test_a_disk_that_fills_inside_a_member_stops_the_run_and_leaves_no_part(src, tmp_path, tiny_model, monkeypatch):
    """The header written, the bytes refused, the close refused too: still the run's disk-full stop,
    the tar's outputs failed, its part file gone."""
    out = tmp_path / "out"
    job = make_job(src, out, tiny_model, tar_size=4)
    # a member is 3 writes (header, bytes, padding), a finished tar 2 more: the second tar's second member's bytes
    monkeypatch.setattr(DiskThatFills, "limit", 4 * 3 + 2 + 3 + 2)
    monkeypatch.setattr(DiskThatFills, "writes", 0)
    monkeypatch.setattr(tar_output, "open", DiskThatFills, raising=False)
    with pytest.raises(StageError, match="disk-full"):
        stylize(job, progress=False)
    rows = ledger_rows(default_ledger(out))
    failed = [r["reason"] for r in rows if r["status"] == "failed" and r["relpath"] != "broken.jpg"]
    assert len(failed) == 2 and all(r.startswith("write-error") and "No space left" in r for r in failed)
    assert len(tars(out)) == 1 and all_files(out / ".stylepipe") == ["ledger.sqlite"]
    monkeypatch.undo()
    assert stylize(job, progress=False).done == len(NAMES)
    assert sorted(members(out)) == packed_names(out) and len(packed_names(out)) == len(NAMES)


def test_a_retried_task_never_replaces_the_tars_of_its_first_try(src, tmp_path, tiny_model):
    """flows/bulk.py retries a shard's task with the same writer and run id: each try's tars keep
    their own names, so the outputs the first try recorded stay where the ledger says."""
    out = tmp_path / "out"
    p = plan(make_job(src, out, tiny_model, tar_size=3))
    half = len(p.items) // 2
    execute(p, p.items[:half], writer="shard-0", run_id="samerun")
    execute(p, p.items[half:], writer="shard-0", run_id="samerun")  # the retry, after the first try died
    done = packed_names(out)
    assert len(done) == len(NAMES) and sorted(members(out)) == done
    assert all((out / split_output(r["output"])[0]).is_file()
               for r in ledger_rows(default_ledger(out)) if r["status"] == "done")


def test_one_output_that_raises_fails_alone_in_its_round_trip(tmp_path):
    """The outputs of a batch travel to a worker together (codec.encode_jobs); an exception in one
    (here no pixels at all) fails that one, as a worker's exception did when each travelled alone."""
    import numpy as np

    from tasks.bulk.codec import EncodeJob, Failed, Written, encode_jobs
    pixels = np.zeros((8, 8, 3), np.uint8)
    jobs = [EncodeJob(n, 0, None if n == 1 else pixels, str(tmp_path), f"{n}.jpg", str(tmp_path), "jpg", 90)
            for n in range(3)]
    results = encode_jobs(jobs)
    assert [type(r) for r in results] == [Written, Failed, Written]
    assert results[1].reason.startswith("worker-error") and results[1].key == 1
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["0.jpg", "2.jpg"]


def test_a_finished_tar_is_a_source(src, tmp_path, tiny_model):
    out = tmp_path / "out"
    stylize(make_job(src, out, tiny_model, tar_size=100), progress=False)
    [packed] = tars(out)
    p = plan(make_job(packed, tmp_path / "again", ModelSpec(str(tiny_model))))
    assert sorted(item.entry.relpath for item in p.items) == sorted(members(out))


def test_tar_size_is_validated(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="tar_size"):
        make_job(tmp_path, tmp_path / "out", tiny_model, tar_size=-1)


NAMES_OF_EVERY_KIND = ["a.png", "sub/dir/00001.png", "x" * 100, "x" * 101, "deep/" * 30 + "long.png",
                       "café/naïve.png", "日本/写真.webp", "sp ace's \"q\".png", "bad\udcffbyte.png"]


@pytest.mark.parametrize("name", NAMES_OF_EVERY_KIND)
@pytest.mark.parametrize("size, mtime", [(12345, 1_700_000_000), (0, 0), (8 ** 11 - 1, 8 ** 11 - 1),
                                         (8 ** 11, 1), (1, 8 ** 11), (1, -1)])
def test_member_headers_are_the_bytes_tarfile_writes(name, size, mtime):
    """The writer builds a short ASCII name's header itself (7x faster); every header must still be
    the bytes of tarfile's PAX format: short, long, non-ASCII or undecodable names, sizes and times
    at and past the ustar fields' range."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    assert tar_output.member_header(name, size, mtime) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def test_a_tar_of_every_kind_of_name_reads_back_with_its_bytes(tmp_path, monkeypatch):
    """Members of every name kind and size (empty, one byte short of a block, a whole block) read back
    through tarfile, and the whole file is the one tarfile writes (its end: two zero blocks, a whole
    record)."""
    monkeypatch.setattr(tar_output.time, "time", lambda: 1_700_000_000.5)
    (tmp_path / "tmp").mkdir()
    writer = tar_output.TarOutput(str(tmp_path), str(tmp_path / "tmp"), "main", "run", 100, remote=False)
    data = {name: os.urandom(size) for name, size in zip(NAMES_OF_EVERY_KIND, [0, 511, 512, 513, 1, 2000, 7, 3, 9])}
    names = [writer.add(name, payload) for name, payload in data.items()]
    path = tmp_path / split_output(names[0])[0]
    writer.finish()
    assert path.stat().st_size % tarfile.RECORDSIZE == 0
    with tarfile.open(path) as tar:
        assert [m.name for m in tar.getmembers()] == list(data)
        assert all(m.isreg() and m.mode == 0o644 for m in tar.getmembers())
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == data
    assert list((tmp_path / "tmp").iterdir()) == []
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for name, payload in data.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(payload))
    assert path.read_bytes() == reference.getvalue()


# --- kill -9 ----------------------------------------------------------------------------------------

IMAGES = [f"{i:03d}.jpg" for i in range(240)]


def start(src: Path, out: Path, model: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stylepipe.cli", "stylize", str(src), "--model", str(model), "--out", str(out),
           "--quiet", "--batch-size", "2", "--workers", "2", "--tar-size", "7", "--max-failed-fraction", "0.1"]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_kill_9_while_packing_then_resume(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, IMAGES, size=(224, 160))
    tmp = out / ".stylepipe" / "tmp"

    def parts() -> int:
        return len(list(tmp.glob("*/*.part"))) if tmp.is_dir() else 0

    kill_points = [
        lambda t0, n_tars, rows: parts() > 0,                      # a tar being filled
        lambda t0, n_tars, rows: len(tars(out)) >= n_tars + 1,     # the first finished tar
        lambda t0, n_tars, rows: done_rows(out) > rows,            # a tar's rows committed, perhaps not moved
        lambda t0, n_tars, rows: len(tars(out)) >= n_tars + 3,     # well into the run
    ]
    killed = 0
    for point in kill_points:
        baseline = (time.monotonic(), len(tars(out)), done_rows(out))
        killed += kill_when(start(src, out, tiny_model), lambda: point(*baseline))
        members(out)  # every finished tar reads whole, and no output is in two of them
        assert output_files(out) == [f"tar/{t.name}" for t in tars(out)]  # nothing else under a final name
    assert killed >= 3, "the runs finished before most kill points; make the work bigger"

    final = start(src, out, tiny_model)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    packed = members(out)
    assert sorted(packed) == IMAGES == packed_names(out)
    assert all(decodes_bytes(data) for data in packed.values())
    assert all_files(out / ".stylepipe") == ["ledger.sqlite"]
    assert len(ledger_rows(default_ledger(out))) == len(IMAGES)


def decodes_bytes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
        return True
    except Exception:  # noqa: BLE001
        return False
