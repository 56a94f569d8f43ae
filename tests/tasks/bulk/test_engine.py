"""The engine in-process: outputs, ledger accounting and lineage, resume and what invalidates it,
several models per pass, strength and colour preservation, formats and sizes, bad inputs, and
hostile archives that must not write outside the output folder."""
from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.bulk.engine import stylize
from tasks.bulk.plan import ModelSpec, plan
from tests.hostile import corpus
from tests.hostile.guard import changed_outside, snapshot
from tests.tasks.bulk.test_support import (decodes, encoded, ledger_rows, make_job, make_photos,  # noqa: F401
                                        other_model, output_files, photo, tiny_model)

NAMES = ["a.jpg", "b.png", "sub/c.jpg", "sub/deep/d.webp"]


@pytest.fixture
def src(tmp_path) -> Path:
    make_photos(tmp_path / "src", NAMES)
    return tmp_path / "src"


def test_folder_tree_is_stylized_with_lineage(src, tmp_path, tiny_model):
    out = tmp_path / "out"
    summary = stylize(make_job(src, out, tiny_model, workers=2), progress=False)
    assert output_files(out) == ["a.jpg", "b.jpg", "sub/c.jpg", "sub/deep/d.jpg"]
    assert all(decodes(out / p) for p in output_files(out))
    assert (summary.done, summary.failed, summary.pending, summary.run.processed) == (4, 0, 0, 4)
    # the forward passes' seconds against the passes' capacity (wall time x passes at once)
    assert 0 < summary.run.network_seconds <= summary.run.pass_seconds
    assert "network busy" in summary.run_line()
    rows = ledger_rows(out / ".stylepipe/ledger.sqlite")
    assert [r["relpath"] for r in rows] == NAMES
    row = rows[0]
    assert row["status"] == "done" and row["output"] == "a.jpg" and row["model"] == "tiny"
    assert len(row["input_sha256"]) == len(row["model_hash"]) == 64
    assert row["code_version"].startswith("0.") and row["device"].startswith("cpu") and row["seconds"] > 0
    assert (row["width"], row["height"]) == (96, 64)
    assert sorted(os.listdir(out / ".stylepipe")) == ["ledger.sqlite"]  # no temp files left


def test_resume_skips_done_and_redoes_what_changed(src, tmp_path, tiny_model, other_model):
    out = tmp_path / "out"
    job = make_job(src, out, tiny_model)
    stylize(job, progress=False)
    assert stylize(job, progress=False).run.processed == 0

    (src / "a.jpg").write_bytes(encoded(photo(seed=99)))   # a changed input
    (out / "b.jpg").unlink()                              # a lost output
    again = stylize(job, progress=False)
    assert again.run.processed == 2 and again.done == 4

    requality = dataclasses.replace(job, params=job.params.model_copy(update={"quality": 50}))
    assert stylize(requality, progress=False).run.processed == 4   # options are part of the identity

    retrained = make_job(src, out, ModelSpec(str(other_model), label="tiny"))
    assert stylize(retrained, progress=False).run.processed == 4   # so are the weights
    assert stylize(retrained, resume=False, progress=False).run.processed == 4
    rows = ledger_rows(out / ".stylepipe/ledger.sqlite")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}


def test_the_tile_layout_does_not_make_outputs_stale_but_the_tiling_threshold_does(src, tmp_path, tiny_model):
    """Outputs made with another tile size or overlap (the defaults before session 12: 1024, 128)
    are kept; a job that tiles other images (tile_above) redoes them."""
    out = tmp_path / "out"
    assert stylize(make_job(src, out, tiny_model, tile_size=1024, tile_overlap=128), progress=False).done == 4
    assert stylize(make_job(src, out, tiny_model), progress=False).run.processed == 0
    assert stylize(make_job(src, out, tiny_model, tile_overlap=32), progress=False).run.processed == 0
    assert stylize(make_job(src, out, tiny_model, tile_above=64), progress=False).run.processed == 4
    assert stylize(make_job(src, out, tiny_model, tile_above=64, quality=50), progress=False).run.processed == 4


def test_limit_and_dry_run(src, tmp_path, tiny_model):
    out = tmp_path / "out"
    job = make_job(src, out, tiny_model)
    dry = plan(job, readonly=True)
    assert len(dry.items) == 4 and not out.exists()  # a dry run writes nothing
    first = stylize(job, limit=3, progress=False)
    assert (first.run.processed, first.pending) == (3, 1)
    assert stylize(job, progress=False).run.processed == 1


def test_several_models_in_one_pass(src, tmp_path, tiny_model, other_model):
    out = tmp_path / "out"
    summary = stylize(make_job(src, out, tiny_model, other_model), progress=False)
    assert summary.done == 8 and summary.run.processed == 4
    assert output_files(out) == sorted(f"{m}/{n}" for m in ("other", "tiny")
                                       for n in ("a.jpg", "b.jpg", "sub/c.jpg", "sub/deep/d.jpg"))
    a, b = (np.asarray(Image.open(out / m / "a.jpg"), np.float32) for m in ("tiny", "other"))
    assert np.abs(a - b).mean() > 5  # two different networks


def test_strength_zero_is_the_photo_and_preserve_colors_keeps_its_chroma(tmp_path, tiny_model):
    src = tmp_path / "src"
    src.mkdir()
    original = photo(96, 64, seed=3)
    original.save(src / "p.png")
    out = tmp_path / "out"
    specs = [ModelSpec(str(tiny_model), label="zero", strength=0.0),
             ModelSpec(str(tiny_model), label="colors", preserve_colors=True),
             ModelSpec(str(tiny_model), label="plain")]
    stylize(make_job(src, out, *specs, format="png"), progress=False)
    result = {s.label: np.asarray(Image.open(out / s.label / "p.png"), np.float32) for s in specs}
    photo_px = np.asarray(original, np.float32)
    assert np.abs(result["zero"] - photo_px).max() <= 1

    def chroma(a):  # RGB minus its luma: what luminance transfer must keep from the photo
        return a - (a @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    unclipped = (result["colors"] > 2).all(-1) & (result["colors"] < 253).all(-1)
    assert np.abs(chroma(result["colors"]) - chroma(photo_px))[unclipped].mean() < 1.5
    assert np.abs(chroma(result["plain"]) - chroma(photo_px)).mean() > 5


def test_formats_and_sizes(tmp_path, tiny_model):
    src = tmp_path / "src"
    make_photos(src, ["wide.jpg", "small.jpg"], size=(200, 100))
    Image.open(src / "small.jpg").resize((40, 20)).save(src / "small.jpg")
    for fmt in ("jpg", "png", "webp"):
        out = tmp_path / f"out-{fmt}"
        stylize(make_job(src, out, tiny_model, format=fmt, quality=80, max_size=120), progress=False)
        with Image.open(out / f"wide.{fmt}") as im:
            assert im.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt] and im.size == (120, 60)
        with Image.open(out / f"small.{fmt}") as im:
            assert im.size == (40, 20)  # never enlarged
    keep = tmp_path / "keep"
    stylize(make_job(src, keep, tiny_model, max_size=None), progress=False)
    assert Image.open(keep / "wide.jpg").size == (200, 100)
    assert set(png_row_filters(tmp_path / "out-png" / "wide.png")) == {2}  # tasks/bulk/png.py: Up on every row


def png_row_filters(path: Path) -> list[int]:
    """The filter type byte of each row of an 8-bit RGB PNG (Pillow's writer picks one per row)."""
    import zlib

    data, pos, idat, width = path.read_bytes(), 8, b"", 0
    while pos < len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width = int.from_bytes(body[:4], "big")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return list(zlib.decompress(idat)[::1 + 3 * width])


def test_exif_orientation_is_applied(tmp_path, tiny_model):
    src = tmp_path / "src"
    src.mkdir()
    (src / "rotated.jpg").write_bytes(corpus.exif_oriented_jpeg(6))  # stored 32x48, upright 48x32
    out = tmp_path / "out"
    stylize(make_job(src, out, tiny_model), progress=False)
    assert Image.open(out / "rotated.jpg").size == (48, 32)


def test_names_that_collide_get_distinct_outputs(tmp_path, tiny_model):
    src = tmp_path / "src"
    make_photos(src, ["x.jpg", "x.png"])
    out = tmp_path / "out"
    stylize(make_job(src, out, tiny_model), progress=False)
    assert output_files(out) == ["x.jpg", "x.png.jpg"]


def test_bad_inputs_are_recorded_and_skipped(tmp_path, tiny_model):
    src = tmp_path / "src"
    make_photos(src, ["ok.jpg"])
    for name, (data, _) in corpus.bad_images().items():
        (src / name).write_bytes(data)
    (src / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    summary = stylize(make_job(src, out, tiny_model, max_pixels=10_000_000), progress=False)
    assert output_files(out) == ["ok.jpg"]
    rows = {r["relpath"]: r for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    assert set(rows) == {"ok.jpg", "readme.txt", *corpus.bad_images()}  # every file accounted for
    for name, (_, reason) in corpus.bad_images().items():
        assert rows[name]["status"] == "failed" and rows[name]["reason"].startswith(reason), rows[name]
    assert "over stylize.max_pixels=10000000" in rows["bomb.png"]["reason"]  # stylize's own setting
    assert rows["readme.txt"]["status"] == "ignored"
    assert (summary.done, summary.failed, summary.ignored) == (1, 5, 1)
    assert summary.failed_fraction == pytest.approx(5 / 6)
    # settled failures are not retried
    assert stylize(make_job(src, out, tiny_model, max_pixels=10_000_000), progress=False).run.processed == 0


def test_hostile_archives_never_write_outside_the_output_folder(tmp_path, tiny_model):
    marker = f"stylepipe-evil-{uuid.uuid4().hex}"
    img = encoded(photo(seed=5), "PNG")
    work = tmp_path / "work"
    work.mkdir()
    archives = {
        "traversal.zip": corpus.traversal_zip(marker),
        "links.tar.gz": corpus.link_tar(marker),
        "nested.zip": corpus.nested_archive(marker),
        "names.tar": corpus.tar_bytes([
            ("../" * 8 + f"tmp/{marker}.jpg", img), (f"/tmp/{marker}-abs.jpg", img),
            (".stylepipe/ledger.sqlite.jpg", img), ("ok/./fine.jpg", img), ("a\\..\\..\\b.jpg", img),
            ("ctrl\x1b[31m.jpg", img)], mode="w"),
    }
    for name, data in archives.items():
        (work / name).write_bytes(data)
    before = snapshot(tmp_path)
    for name in archives:
        out = work / f"out-{name}"
        stylize(make_job(work / name, out, tiny_model), progress=False)
        assert all(decodes(out / p) for p in output_files(out))
    assert changed_outside(before, snapshot(tmp_path), work) == []
    assert sorted(p.name for p in work.iterdir() if p.name not in archives) == sorted(f"out-{n}" for n in archives)
    for escaped in (Path("/tmp") / f"{marker}.jpg", Path("/tmp") / f"{marker}-abs.jpg", Path("/tmp") / marker):
        assert not escaped.exists()
    assert output_files(work / "out-names.tar") == ["ctrl\x1b[31m.jpg", "ok/fine.jpg"]
    rows = {r["relpath"]: r for r in ledger_rows(work / "out-names.tar/.stylepipe/ledger.sqlite")}
    assert rows[".stylepipe/ledger.sqlite.jpg"]["reason"].startswith("unsafe-name")
    assert sum(r["status"] == "failed" for r in rows.values()) == 4


def test_a_symlink_planted_in_the_output_folder_is_not_followed(tmp_path, tiny_model):
    src = tmp_path / "src"
    make_photos(src, ["sub/a.jpg", "b.jpg"])
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    summary = stylize(make_job(src, out, tiny_model), progress=False)
    assert list(outside.iterdir()) == []
    assert summary.failed == 1 and summary.run.failures[0][0] == "sub/a.jpg"
    assert "symlink" in summary.run.failures[0][1]


def test_output_folder_inside_the_source_is_not_an_input(src, tmp_path, tiny_model):
    out = src / "styled"
    stylize(make_job(src, out, tiny_model), progress=False)
    again = stylize(make_job(src, out, tiny_model), progress=False)
    assert again.inputs == 4 and again.run.processed == 0


def test_a_one_file_job_starts_no_worker_processes(src, tmp_path, tiny_model, monkeypatch):
    """A single file, or a folder with one image to do, is decoded and encoded in the job's own
    process (issue 16: one-image jobs); a folder of several gets the workers it asked for."""
    import tasks.bulk.engine as engine

    asked = []

    def recording_pool(workers):
        asked.append(workers)
        return real_pool(workers)

    real_pool = engine.worker_pool
    monkeypatch.setattr(engine, "worker_pool", recording_pool)
    summary = stylize(make_job(src / "a.jpg", tmp_path / "one", tiny_model, workers=2), progress=False)
    assert (summary.done, summary.failed) == (1, 0) and output_files(tmp_path / "one") == ["a.jpg"]
    stylize(make_job(src, tmp_path / "all", tiny_model, workers=2), progress=False)
    make_photos(tmp_path / "solo", ["only.png"])
    stylize(make_job(tmp_path / "solo", tmp_path / "solo-out", tiny_model, workers=2), progress=False)
    assert asked == [0, 2, 0]


def test_the_busy_meter_counts_at_most_every_pass_at_once(monkeypatch):
    """A batch on one pass, then a large image's tiles on both while the batch still runs: the
    overlap counts two passes, not three."""
    from tasks.bulk import engine

    now = iter([0.0, 0.0, 1.0, 2.0, 4.0])
    monkeypatch.setattr(engine.time, "perf_counter", lambda: next(now))
    meter = engine.BusyMeter(passes=2)
    meter.start(1)   # t=0
    meter.start(2)   # t=1: level 3, counted as 2
    meter.stop(1)    # t=2
    meter.stop(2)    # t=4
    assert meter.seconds == 1 * 1 + 2 * 1 + 2 * 2
