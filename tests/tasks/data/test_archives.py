"""download: archives from the hostile corpus are extracted safely, served over local HTTP.

Every test runs in the `sandbox` (nothing may change outside its data/ folder, no symlink may
appear in it) and also checks the absolute paths the archives aim at (/tmp/<marker>, /etc/<marker>).
"""
from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from pathlib import Path

import pytest

from stylepipe.config import Source
from tasks.download import sync_set
from tasks.data.fetch import source_id
from tests.hostile import corpus
from tests.hostile.fixtures import dl_params, sandbox, server  # noqa: F401 (fixtures)


@pytest.fixture
def marker():
    """A unique file name the archives try to write outside the tree; it must never exist."""
    name = f"stylepipe-evil-{uuid.uuid4().hex}"
    yield name
    for escaped in (Path("/tmp") / name, Path("/tmp") / f"{name}-abs", Path("/etc") / name):
        assert not escaped.exists(), f"an archive wrote {escaped}"


def extracted(sandbox, url: str) -> dict[str, bytes]:
    files = sandbox.photos / "files" / source_id(url)
    return {p.relative_to(files).as_posix(): p.read_bytes() for p in files.rglob("*") if p.is_file()}


def refused(sandbox) -> dict[str, str]:
    return {r["path"]: r["reason"] for r in sandbox.rejected()}


def test_zip_path_traversal_in_every_spelling_is_refused(sandbox, server, marker):
    url = server.add("/traversal.zip", corpus.traversal_zip(marker))
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    assert result.failures == []
    assert list(extracted(sandbox, url)) == ["good/ok.png"]
    reasons = refused(sandbox)
    assert reasons["../../evil.txt"].startswith("path goes up out of the archive")
    assert reasons["good/../../../evil2.txt"].startswith("path goes up")
    assert reasons["sub\\..\\..\\..\\evil4.txt"].startswith("path goes up")
    assert reasons[f"/tmp/{marker}-abs"] == "absolute path"
    assert reasons["C:\\evil3.txt"] == "absolute path"
    assert reasons["link.png"].startswith("symlink")
    [entry] = sandbox.manifest()
    assert entry["archive_sha256"] == hashlib.sha256(corpus.traversal_zip(marker)).hexdigest()


def test_tar_absolute_names_links_out_and_devices_are_refused(sandbox, server, marker):
    url = server.add("/links.tar.gz", corpus.link_tar(marker))
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    assert result.failures == []
    files = extracted(sandbox, url)
    # links to members inside the archive become plain copies; 'etc' is a real folder of ours
    assert sorted(files) == ["alias.png", "copy.png", f"etc/{marker}", "ok.png"]
    assert files["alias.png"] == files["copy.png"] == files["ok.png"]
    reasons = refused(sandbox)
    assert reasons[f"/tmp/{marker}-abs"] == "absolute path"
    assert "points outside the archive" in reasons["etc"]
    assert "points outside the archive" in reasons["passwd"]
    assert "points outside the archive" in reasons["hard-passwd"]
    assert "points outside the archive" in reasons["up"]
    assert reasons["null"].startswith("special file") and reasons["fifo"].startswith("special file")


def test_nested_archives_are_extracted_level_by_level_with_the_same_rules(sandbox, server, marker):
    url = server.add("/nested.zip", corpus.nested_archive(marker))
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    assert result.failures == []
    assert sorted(extracted(sandbox, url)) == ["middle/inner/deep.png", "middle/mid.png", "top.png"]
    reasons = refused(sandbox)
    assert reasons["middle/inner/../../../evil.txt"].startswith("path goes up")
    assert reasons["broken.zip"].startswith("nested archive: cannot read the archive")


@pytest.mark.parametrize("name,mode", [("a.tar", "w"), ("a.tgz", "w:gz"), ("a.tar.bz2", "w:bz2"),
                                       ("a.tar.xz", "w:xz")])
def test_every_tar_compression_is_extracted(sandbox, server, name, mode):
    url = server.add(f"/{name}", corpus.tar_bytes([("dir/x.png", b"x" * 10)], mode=mode))
    assert sync_set("photos", [Source(url=url)], sandbox.photos, dl_params()).failures == []
    assert extracted(sandbox, url) == {"dir/x.png": b"x" * 10}


def test_a_zip_bomb_is_stopped_by_the_byte_cap(sandbox, server):
    bomb = corpus.zip_bomb(5_000_000)
    assert len(bomb) < 10_000
    url = server.add("/bomb.zip", bomb)
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params(max_extract_bytes=1_000_000))
    [failure] = result.failures
    assert url in failure and "download.max_extract_bytes" in failure
    assert sandbox.manifest() == []
    assert not (sandbox.photos / "files").exists() or not any((sandbox.photos / "files").iterdir())
    assert not (sandbox.photos / ".partial").exists()


def test_a_bomb_that_lies_about_its_size_is_stopped_while_writing(sandbox, server):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:  # headers say 10 bytes per member, 200 members
        for i in range(200):
            info = tarfile.TarInfo(f"f{i}.bin")
            info.size = 10
            tf.addfile(info, io.BytesIO(b"0123456789"))
    url = server.add("/many.tar.gz", buf.getvalue())
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params(max_extract_files=50))
    assert "download.max_extract_files" in result.failures[0]
    assert sandbox.manifest() == []


def test_an_archive_that_is_not_one_fails_its_source_clearly(sandbox, server):
    url = server.add("/fake.tar.gz", b"<html>an error page</html>")
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    assert f"{url}: cannot read the archive" in result.failures[0]
    assert sandbox.manifest() == []


def test_an_extracted_archive_is_not_fetched_again(sandbox, server, marker):
    data = corpus.nested_archive(marker)
    url = server.add("/nested.zip", data)
    source = Source(url=url, sha256=hashlib.sha256(data).hexdigest())
    sync_set("photos", [source], sandbox.photos, dl_params())
    manifest = (sandbox.photos / "manifest.json").read_bytes()
    result = sync_set("photos", [source], sandbox.photos, dl_params())
    assert result.fetched == 0 and len(server.routes["/nested.zip"].requests) == 1
    assert (sandbox.photos / "manifest.json").read_bytes() == manifest
