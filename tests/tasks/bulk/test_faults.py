"""Issue 13: one bad input costs one recorded failure, never the job and never another input's
output. Each test is one case of the issue, reproduced on the engine in-process."""
from __future__ import annotations

import io
import os
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from stylepipe.names import escape_name, unescape_name
from tasks.bulk import runners
from tasks.bulk.engine import stylize
from tasks.data.reasons import code_of
from tests.tasks.bulk.test_support import (decodes, encoded, ledger_rows, make_job, make_photos,  # noqa: F401
                                          output_files, photo, tiny_model)


def statuses(out: Path) -> dict[str, tuple[str, str]]:
    return {r["relpath"]: (r["status"], code_of(r["reason"])) for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}


# --- case 1: tiny images ------------------------------------------------------------------------


def test_tiny_images_and_thin_strips_are_stylized_not_fatal(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    sizes = {"one.png": (1, 1), "three.png": (3, 3), "strip.png": (4000, 8), "banner.png": (3000, 20)}
    for name, (w, h) in sizes.items():
        (src / name).write_bytes(encoded(photo(w, h), "PNG"))
    make_photos(src, ["ok.jpg"])
    summary = stylize(make_job(src, out, tiny_model, max_size=512, tile_above=2048), progress=False)
    assert (summary.done, summary.failed) == (5, 0), summary.run.failures
    with_sizes = {p: Image.open(out / p).size for p in output_files(out)}
    assert with_sizes["one.jpg"] == (1, 1) and with_sizes["banner.jpg"][1] >= 1
    assert all(decodes(out / p) for p in output_files(out))


def test_a_forward_pass_failing_on_one_input_fails_that_input_only(tmp_path, tiny_model, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, ["a.jpg", "b.jpg", "c.jpg"])
    (src / "odd.png").write_bytes(encoded(photo(50, 30), "PNG"))  # the only 50x30 input
    real = runners.StyleModels.stylize

    def picky(self, batch):
        if batch.shape[1:3] == (30, 50):
            raise RuntimeError("the network cannot take this input")
        return real(self, batch)

    monkeypatch.setattr(runners.StyleModels, "stylize", picky)
    summary = stylize(make_job(src, out, tiny_model), progress=False)
    assert (summary.done, summary.failed) == (3, 1)
    assert statuses(out)["odd.png"] == ("failed", "model-error")
    # recorded as a fault of that input: the next run does not try it again
    assert stylize(make_job(src, out, tiny_model), progress=False).run.processed == 0


def test_a_model_that_fails_on_every_input_stops_the_job_with_one_line(tmp_path, tiny_model, monkeypatch):
    from stylepipe.errors import StageError

    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, [f"{i}.jpg" for i in range(12)])

    def broken(self, batch):
        raise RuntimeError("weights and code disagree")

    monkeypatch.setattr(runners.StyleModels, "stylize", broken)
    with pytest.raises(StageError, match="weights and code disagree") as e:
        stylize(make_job(src, out, tiny_model), progress=False)
    assert "\n" not in str(e.value)
    assert all(r["status"] != "failed" for r in ledger_rows(out / ".stylepipe/ledger.sqlite")) \
        if (out / ".stylepipe/ledger.sqlite").is_file() else True


# --- case 2: names that are not UTF-8 -----------------------------------------------------------


def test_escaping_round_trips_bytes_and_keeps_ordinary_names():
    for raw in (b"caf\xe9.jpg", b"100%.jpg", b"a%20b.png", b"%E9.jpg", b"%25.jpg", b"\xff\xfe/x.png", "été.png".encode()):
        name = escape_name(raw)
        name.encode("utf-8")  # always valid UTF-8
        assert unescape_name(name) == raw
    assert escape_name(b"a%20b.png") == "a%20b.png" and escape_name("été.png".encode()) == "été.png"
    assert escape_name(b"caf\xe9.jpg") == "caf%E9.jpg" != escape_name(b"caf%E9.jpg")


def test_latin1_names_in_a_folder_and_a_tar_round_trip(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, ["plain.jpg"])
    data = encoded(photo())
    with open(os.path.join(os.fsencode(src), b"caf\xe9.jpg"), "wb") as f:
        f.write(data)
    summary = stylize(make_job(src, out, tiny_model), progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    assert statuses(out)["caf%E9.jpg"] == ("done", "")
    assert "caf%E9.jpg" in output_files(out)
    assert unescape_name("caf%E9.jpg") == b"caf\xe9.jpg"

    archive, tout = tmp_path / "t.tar", tmp_path / "tout"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("dir/na\xefve.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with tarfile.open(archive, encoding="utf-8", errors="surrogateescape") as tf:
        assert tf.getnames() == ["dir/na\udcefve.jpg"]  # what a UTF-8 reader sees
    summary = stylize(make_job(archive, tout, tiny_model), progress=False)
    assert (summary.done, summary.failed) == (1, 0), summary.run.failures
    assert output_files(tout) == ["dir/na%EFve.jpg"]


# --- case 3: output names -----------------------------------------------------------------------


def test_a_later_input_never_takes_an_earlier_inputs_output(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, ["photo.png"])
    stylize(make_job(src, out, tiny_model), progress=False)
    first = (out / "photo.jpg").read_bytes()

    (src / "photo.jpg").write_bytes(encoded(photo(seed=7)))
    summary = stylize(make_job(src, out, tiny_model), progress=False)
    assert summary.done == 2
    rows = {r["relpath"]: r["output"] for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    assert rows["photo.png"] == "photo.jpg"              # the earlier output keeps its name ...
    assert (out / "photo.jpg").read_bytes() == first     # ... and its bytes
    assert rows["photo.jpg"] not in ("photo.jpg", "") and (out / rows["photo.jpg"]).is_file()
    assert len(set(rows.values())) == 2


# --- case 5: decompressed size ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_big_members_are_refused_per_member_and_the_job_goes_on(tmp_path, tiny_model, kind):
    archive, out = tmp_path / f"bomb.{kind}", tmp_path / "out"
    zeros, good = b"\x00" * (3 << 20), encoded(photo())
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("bomb.png", zeros)
            zf.writestr("good.jpg", good)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name, data in (("bomb.png", zeros), ("good.jpg", good)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    summary = stylize(make_job(archive, out, tiny_model, max_input_bytes=1 << 20), progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    assert statuses(out)["bomb.png"] == ("failed", "too-large")


def test_the_input_byte_cap_is_a_parameter():
    from stylepipe.config import StylizeParams

    assert StylizeParams().max_input_bytes <= 256 << 20


# --- case 6: a damaged zip member is not transient ------------------------------------------------


def test_a_zip_member_with_a_bad_crc_is_a_permanent_failure(tmp_path, tiny_model):
    archive, out = tmp_path / "crc.zip", tmp_path / "out"
    data = encoded(photo(), "PNG", compress_level=0)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("bad.png", data)
        zf.writestr("good.png", encoded(photo(seed=2), "PNG"))
    raw = bytearray(archive.read_bytes())
    at = raw.index(data[-200:])  # flip a byte inside the stored member: its CRC no longer matches
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))
    summary = stylize(make_job(archive, out, tiny_model), progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    assert statuses(out)["bad.png"] == ("failed", "corrupt")
    assert stylize(make_job(archive, out, tiny_model), progress=False).run.processed == 0


def test_a_full_disk_stops_the_job_with_one_line(tmp_path, tiny_model, monkeypatch):
    import errno

    from stylepipe.errors import StageError
    from tasks.bulk import codec

    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, ["a.jpg", "b.jpg"])

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(codec.os, "replace", no_space)
    with pytest.raises(StageError, match="No space left") as e:
        stylize(make_job(src, out, tiny_model), progress=False)
    assert "\n" not in str(e.value)
    db = out / ".stylepipe/ledger.sqlite"
    if db.is_file():
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
