"""Sources: folder trees, zips, tars (plain and compressed), single files and fsspec URLs are listed
and read in place with the same rules for names."""
from __future__ import annotations

import io
import tarfile
import zipfile

import fsspec
import pytest

from tasks.bulk.sources import (Entry, Locator, ReadError, Refused, SourceError, TarSource,
                                   open_source)
from tests.hostile import corpus
from tests.tasks.bulk.test_support import encoded, photo

MAX = 1 << 30
JPEG = encoded(photo(seed=1))


def listing(source) -> tuple[dict[str, Entry], dict[str, Refused]]:
    entries, refused = {}, {}
    for r in source.scan():
        (entries if isinstance(r, Entry) else refused)[r.relpath] = r
    return entries, refused


def payloads(source, entries) -> dict[str, bytes]:
    out = {}
    for entry, payload in source.read(entries):
        if isinstance(payload, Locator):
            with fsspec.open(payload.where, "rb") if payload.fsspec else open(payload.where, "rb") as f:
                payload = f.read()
        out[entry.relpath] = payload
    return out


def test_folder_tree_is_listed_recursively_in_order(tmp_path):
    src = tmp_path / "src"
    for name in ("b.jpg", "a/x.png", "a/deeper/y.JPG", "notes.txt", "._mac.jpg"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(JPEG)
    entries, refused = listing(open_source(str(src), max_bytes=MAX))
    assert list(entries) == ["a/deeper/y.JPG", "a/x.png", "b.jpg"]
    assert refused["notes.txt"].status == refused["._mac.jpg"].status == "ignored"
    assert set(payloads(open_source(str(src), max_bytes=MAX), entries.values()).values()) == {JPEG}


def test_folder_skips_the_output_folder_inside_it_and_links_out(tmp_path):
    src = tmp_path / "src"
    (src / "out").mkdir(parents=True)
    (src / "out" / "old.jpg").write_bytes(JPEG)
    (src / "in.jpg").write_bytes(JPEG)
    (tmp_path / "secret.jpg").write_bytes(JPEG)
    (src / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (src / "inner-link.jpg").symlink_to(src / "in.jpg")
    entries, refused = listing(open_source(str(src), max_bytes=MAX, exclude=src / "out"))
    assert sorted(entries) == ["in.jpg", "inner-link.jpg"]
    assert "outside" in refused["link.jpg"].reason


def test_a_changed_file_changes_its_stamp(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(JPEG)
    before = listing(open_source(str(src), max_bytes=MAX))[0]["a.jpg"].stamp
    (src / "a.jpg").write_bytes(JPEG + b"\0")
    assert listing(open_source(str(src), max_bytes=MAX))[0]["a.jpg"].stamp != before


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_zip_is_read_in_place_and_hostile_names_are_refused(tmp_path):
    archive = tmp_path / "photos.zip"
    archive.write_bytes(corpus.zip_bytes([
        ("good/one.jpg", JPEG), ("../../escape.jpg", JPEG), ("/abs/path.jpg", JPEG),
        ("C:\\win.jpg", JPEG), (".stylepipe/ledger.jpg", JPEG), ("__MACOSX/good/._one.jpg", b"x"),
        ("dup.jpg", b"first"), ("dup.jpg", JPEG),
    ]))
    source = open_source(str(archive), max_bytes=MAX)
    entries, refused = listing(source)
    assert sorted(entries) == ["dup.jpg", "good/one.jpg"]
    reasons = {name: r.reason for name, r in refused.items()}
    assert reasons["../../escape.jpg"].startswith("unsafe-name: path goes up")
    assert reasons["/abs/path.jpg"] == reasons["C:\\win.jpg"] == "unsafe-name: absolute path"
    assert "reserved" in reasons[".stylepipe/ledger.jpg"]
    assert "duplicate" in reasons["dup.jpg (member 6)"]
    assert payloads(source, entries.values())["dup.jpg"] == JPEG  # the last one wins, as unzip does
    assert list(tmp_path.iterdir()) == [archive]  # nothing extracted


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_plain_and_compressed(tmp_path, mode):
    members = [("a.jpg", JPEG), ("sub/b.png", JPEG + b"b"), ("c.txt", b"text"), ("sub/d.jpg", JPEG + b"d")]
    links = [corpus.tar_member("link.jpg", tarfile.SYMTYPE, "a.jpg"), corpus.tar_member("dev", tarfile.CHRTYPE)]
    archive = tmp_path / "photos.tar"
    archive.write_bytes(corpus.tar_bytes(members + links, mode=mode))
    source = open_source(str(archive), max_bytes=MAX)
    assert isinstance(source, TarSource) and source.compressed == (mode != "w")
    entries, refused = listing(source)
    assert list(entries) == ["a.jpg", "sub/b.png", "sub/d.jpg"]
    assert {r.status for r in refused.values()} == {"ignored"}
    # a shard reads a subset; a compressed tar is streamed past the members it skips
    subset = [entries["a.jpg"], entries["sub/d.jpg"]]
    assert payloads(source, subset) == {"a.jpg": JPEG, "sub/d.jpg": JPEG + b"d"}


def test_truncated_tar_gz_fails_the_members_it_cannot_reach(tmp_path):
    full = corpus.tar_bytes([(f"{i}.jpg", encoded(photo(seed=i), "PNG")) for i in range(6)], mode="w:gz")
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(full)
    source = open_source(str(archive), max_bytes=MAX)
    entries = listing(source)[0]
    archive.write_bytes(full[: len(full) * 2 // 3])  # the archive is damaged after it was listed
    results = dict((e.relpath, p) for e, p in source.read(entries.values()))
    assert len(results) == 6
    assert isinstance(results["5.jpg"], ReadError)


def test_fsspec_urls_folder_and_archive(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "a.jpg").write_bytes(JPEG)
    source = open_source(f"local://{tmp_path / 'src'}", max_bytes=MAX)
    entries, _ = listing(source)
    assert list(entries) == ["sub/a.jpg"]
    assert payloads(source, entries.values()) == {"sub/a.jpg": JPEG}

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/photos.zip", corpus.zip_bytes([("x/y.jpg", JPEG)]))
    try:
        source = open_source("memory://bucket/photos.zip", max_bytes=MAX)
        entries, _ = listing(source)
        assert payloads(source, entries.values()) == {"x/y.jpg": JPEG}
    finally:
        fs.rm("/bucket", recursive=True)


def test_single_file_and_missing_source(tmp_path):
    (tmp_path / "one.jpg").write_bytes(JPEG)
    entries, _ = listing(open_source(str(tmp_path / "one.jpg"), max_bytes=MAX))
    assert list(entries) == ["one.jpg"]
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing"), max_bytes=MAX)


def test_oversized_members_are_refused_before_reading(tmp_path):
    archive = tmp_path / "big.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge.jpg", b"\0" * 100_000)
    archive.write_bytes(buf.getvalue())
    _, refused = listing(open_source(str(archive), max_bytes=50_000))
    assert refused["huge.jpg"].status == "failed" and refused["huge.jpg"].reason.startswith("too-large")
