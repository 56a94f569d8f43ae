"""download: every kind of source through one code path, retries, resume, checksums, idempotency.

Each test works in a tmp dir: `served/` (what sources point at) and `work/data/` (the only place the
stage may write). The `sandbox` fixture fails the test if anything else under the tmp dir changed.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from stylepipe.config import ModelParams, Source
from stylepipe.errors import StageError
from tasks.data.fetch import FetchError, package_path, source_id
from tasks.download import download, sync_set
from tests.hostile import corpus
from tests.hostile.fixtures import dl_params, pipeline_params, sandbox, server  # noqa: F401 (fixtures)

PNG = corpus.encode(corpus.noise_rgb(seed=21), "PNG")
PNG_SHA = hashlib.sha256(PNG).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_kind_of_url_lands_in_the_same_layout(sandbox, server):
    sandbox.put(sandbox.served / "local.png", PNG)
    sandbox.put(sandbox.work / "rel.png", corpus.encode(corpus.noise_rgb(seed=3), "PNG"))
    camera = "pkg://skimage/data/camera.png"
    sources = [
        Source(url=camera, sha256="b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),
        Source(url="rel.png"),
        Source(url=(sandbox.served / "local.png").as_uri(), sha256=PNG_SHA),
        Source(url=server.add("/remote.png", PNG), sha256=PNG_SHA),
    ]
    result = sync_set("photos", sources, sandbox.photos, dl_params())
    assert result.failures == []
    entries = sandbox.manifest()
    assert [e["source"] for e in entries] == sorted((s.url for s in sources),
                                                    key=lambda u: f"files/{source_id(u)}")
    for e in entries:
        assert set(e) == {"source", "path", "size", "sha256"}
        path = sandbox.photos / e["path"]
        assert e["path"].startswith(f"files/{source_id(e['source'])}/")
        assert path.stat().st_size == e["size"] and sha(path.read_bytes()) == e["sha256"]
    assert not (sandbox.photos / ".partial").exists()
    assert sandbox.rejected() == []


def test_a_rerun_fetches_nothing_and_keeps_the_manifest_bytes(sandbox, server):
    url = server.add("/a.png", PNG)
    params = dl_params()
    sync_set("photos", [Source(url=url, sha256=PNG_SHA)], sandbox.photos, params)
    manifest = (sandbox.photos / "manifest.json").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in sandbox.photos.rglob("*")}

    result = sync_set("photos", [Source(url=url, sha256=PNG_SHA)], sandbox.photos, params)
    assert result.fetched == 0
    assert len(server.routes["/a.png"].requests) == 1
    assert (sandbox.photos / "manifest.json").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in sandbox.photos.rglob("*")} == mtimes


def test_a_damaged_file_is_fetched_again(sandbox, server):
    url = server.add("/a.png", PNG)
    sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    path = sandbox.photos / sandbox.manifest()[0]["path"]
    path.write_bytes(b"scribbled over")
    sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    assert path.read_bytes() == PNG
    assert len(server.routes["/a.png"].requests) == 2


def test_sources_no_longer_listed_are_removed(sandbox, server):
    a, b = server.add("/a.png", PNG), server.add("/b.png", PNG[:-1] + b"x")
    sync_set("photos", [Source(url=a), Source(url=b)], sandbox.photos, dl_params())
    sync_set("photos", [Source(url=a)], sandbox.photos, dl_params())
    assert [e["source"] for e in sandbox.manifest()] == [a]
    assert sorted(p.name for p in (sandbox.photos / "files").iterdir()) == [source_id(a)]


def test_a_changed_local_file_is_copied_again(sandbox):
    src = sandbox.put(sandbox.work / "photo.png", PNG)
    sync_set("photos", [Source(url="photo.png")], sandbox.photos, dl_params())
    first = sandbox.manifest()[0]
    sandbox.put(src, corpus.encode(corpus.noise_rgb(seed=99), "PNG"))
    sync_set("photos", [Source(url="photo.png")], sandbox.photos, dl_params())
    second = sandbox.manifest()[0]
    assert second["sha256"] == sha(src.read_bytes()) != first["sha256"]
    assert (sandbox.photos / second["path"]).read_bytes() == src.read_bytes()


def test_http_500_is_retried_until_it_succeeds(sandbox, server):
    url = server.add("/flaky.png", PNG, fail_first=2)
    result = sync_set("photos", [Source(url=url, sha256=PNG_SHA)], sandbox.photos, dl_params(retries=3))
    assert result.failures == []
    assert len(server.routes["/flaky.png"].requests) == 3
    assert (sandbox.photos / sandbox.manifest()[0]["path"]).read_bytes() == PNG


def test_http_500_until_the_retries_run_out_is_a_clear_failure(sandbox, server):
    url = server.add("/down.png", PNG, fail_first=10)
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params(retries=2))
    assert len(result.failures) == 1
    assert url in result.failures[0] and "gave up after 3 attempts" in result.failures[0]
    assert "HTTP 500" in result.failures[0]
    assert sandbox.manifest() == []


def test_a_connection_cut_mid_body_resumes_with_a_range_request(sandbox, server):
    data = PNG * 20
    url = server.add("/big.bin", data, cut_first=1)
    result = sync_set("photos", [Source(url=url, sha256=sha(data))], sandbox.photos, dl_params())
    assert result.failures == []
    first, second = server.routes["/big.bin"].requests
    assert first["range"] is None
    assert second["range"] == f"bytes={len(data) // 2}-"  # only the missing half was asked for
    assert second["if_range"]  # with the ETag, so a changed file would come back whole
    assert (sandbox.photos / sandbox.manifest()[0]["path"]).read_bytes() == data


def test_a_connection_reset_mid_body_is_retried_and_resumed(sandbox, server):
    data = PNG * 40
    url = server.add("/rst.bin", data, cut_first=1, reset=True)
    result = sync_set("photos", [Source(url=url, sha256=sha(data))], sandbox.photos, dl_params())
    assert result.failures == []
    assert len(server.routes["/rst.bin"].requests) == 2
    assert (sandbox.photos / sandbox.manifest()[0]["path"]).read_bytes() == data


def test_a_partial_download_survives_a_failed_run_and_is_resumed(sandbox, server):
    data = PNG * 20
    url = server.add("/big.bin", data, cut_first=2)
    failed = sync_set("photos", [Source(url=url, sha256=sha(data))], sandbox.photos, dl_params(retries=1))
    assert "gave up after 2 attempts" in failed.failures[0]
    partial = sandbox.photos / ".partial" / source_id(url)
    assert partial.stat().st_size == partial_size(data)  # kept for the next run; not in files/
    assert not (sandbox.photos / "files" / source_id(url)).exists()

    ok = sync_set("photos", [Source(url=url, sha256=sha(data))], sandbox.photos, dl_params(retries=1))
    assert ok.failures == []
    assert server.routes["/big.bin"].requests[-1]["range"] == f"bytes={partial_size(data)}-"
    assert (sandbox.photos / sandbox.manifest()[0]["path"]).read_bytes() == data
    assert not (sandbox.photos / ".partial").exists()


def partial_size(data: bytes) -> int:
    # the server's second cut response sends half of the remaining half
    first = len(data) // 2
    return first + (len(data) - first) // 2


def test_an_unpinned_download_without_validator_starts_over_instead_of_resuming(sandbox, server):
    data = PNG * 20
    url = server.add("/noetag.bin", data, cut_first=1, etag=False)
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    assert result.failures == []
    assert [r["range"] for r in server.routes["/noetag.bin"].requests] == [None, None]
    assert (sandbox.photos / sandbox.manifest()[0]["path"]).read_bytes() == data


def test_a_stale_partial_is_discarded_when_the_checksum_fails(sandbox, server):
    url = server.add("/a.png", PNG, etag=False)
    partial = sandbox.photos / ".partial" / source_id(url)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"bytes of some older version")
    result = sync_set("photos", [Source(url=url, sha256=PNG_SHA)], sandbox.photos, dl_params())
    assert result.failures == []
    assert (sandbox.photos / sandbox.manifest()[0]["path"]).read_bytes() == PNG


def test_checksum_mismatch_names_source_expected_and_actual_and_keeps_nothing(sandbox, server):
    url = server.add("/a.png", PNG)
    wrong = "0" * 64
    result = sync_set("photos", [Source(url=url, sha256=wrong)], sandbox.photos, dl_params())
    [failure] = result.failures
    assert url in failure and wrong in failure and PNG_SHA in failure
    assert sandbox.manifest() == []
    assert not (sandbox.photos / "files" / source_id(url)).exists()
    assert not (sandbox.photos / ".partial").exists()


def test_a_bad_source_fails_the_stage_after_all_others_were_fetched(sandbox, server):
    good, missing = server.add("/good.png", PNG), server.url("/missing.png")
    style = sandbox.put(sandbox.served / "style.png", PNG)
    params = pipeline_params([Source(url=missing), Source(url=good), Source(url="nope/nothing.png")],
                             {"s": Source(url=str(style))})
    with pytest.raises(StageError) as err:
        download(params, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    message = str(err.value)
    assert f"{missing}: HTTP 404" in message
    assert "nope/nothing.png: cannot read" in message
    assert [e["source"] for e in sandbox.manifest()] == [good]
    assert len(sandbox.manifest(sandbox.raw / "models/s")) == 1


def test_a_missing_package_is_a_clear_failure(sandbox):
    result = sync_set("photos", [Source(url="pkg://no_such_package_xyz/a.png"),
                                 Source(url="pkg://skimage/data/no-such-file.png")], sandbox.photos, dl_params())
    assert "package 'no_such_package_xyz' is not installed" in result.failures[0]
    assert "has no file 'data/no-such-file.png'" in result.failures[1]


@pytest.fixture
def unimportable_package(tmp_path_factory, monkeypatch):
    """A package on sys.path whose __init__ raises (as one installed with --no-deps may)."""
    root = tmp_path_factory.mktemp("site")
    package = root / "brokenpkg_stylepipe"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('a missing dependency')\n")
    (package / "data" / "a.png").write_bytes(PNG)
    (root / "secret.txt").write_text("outside the package")
    (package / "data" / "link.txt").symlink_to(root / "secret.txt")
    monkeypatch.syspath_prepend(str(root))
    return package


def test_a_pkg_url_is_found_without_importing_the_package(sandbox, unimportable_package):
    import sys

    url = "pkg://brokenpkg_stylepipe/data/a.png"
    assert package_path(url) == unimportable_package / "data" / "a.png"
    result = sync_set("photos", [Source(url=url, sha256=PNG_SHA)], sandbox.photos, dl_params())
    assert result.failures == [] and sandbox.manifest()[0]["sha256"] == PNG_SHA
    assert "brokenpkg_stylepipe" not in sys.modules


@pytest.mark.parametrize("inner", ["../../secret.txt", "data/../../../secret.txt", "/etc/passwd",
                                   "data/link.txt"])
def test_a_pkg_url_may_not_lead_out_of_its_package(unimportable_package, inner):
    with pytest.raises(FetchError, match="leads outside package 'brokenpkg_stylepipe'"):
        package_path(f"pkg://brokenpkg_stylepipe/{inner}")


def test_a_pkg_url_naming_a_plain_module_is_refused():
    with pytest.raises(FetchError, match="'struct' is a module, not a package"):
        package_path("pkg://struct/anything")


def test_a_folder_is_copied_recursively_without_following_links_out(sandbox, tmp_path):
    folder = sandbox.served / "photos"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "café crème.png").write_bytes(PNG)
    (folder / "sub dir" / "写真.png").write_bytes(PNG)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the source folder")
    (folder / "escape.txt").symlink_to(secret)
    (folder / "alias.png").symlink_to(folder / "café crème.png")
    os.mkfifo(folder / "pipe")
    sandbox.settle()
    result = sync_set("photos", [Source(url=str(folder))], sandbox.photos, dl_params())
    assert result.failures == []
    sid = source_id(str(folder))
    assert sorted(e["path"] for e in sandbox.manifest()) == [
        f"files/{sid}/alias.png", f"files/{sid}/café crème.png", f"files/{sid}/sub dir/写真.png"]
    reasons = {r["path"]: r["reason"] for r in sandbox.rejected()}
    assert set(reasons) == {"escape.txt", "pipe"}
    assert "outside the folder" in reasons["escape.txt"]
    assert not any("outside the source folder" in p.read_text(errors="replace")
                   for p in sandbox.photos.rglob("*") if p.is_file())

    (folder / "café crème.png").unlink()
    sandbox.settle()
    sync_set("photos", [Source(url=str(folder))], sandbox.photos, dl_params())
    assert sorted(e["path"] for e in sandbox.manifest()) == [f"files/{sid}/sub dir/写真.png"]
    assert not (sandbox.photos / f"files/{sid}/café crème.png").exists()


def test_a_folder_with_a_sha256_is_refused(sandbox):
    (sandbox.served / "photos").mkdir()
    sandbox.settle()
    result = sync_set("photos", [Source(url=str(sandbox.served / "photos"), sha256=PNG_SHA)],
                      sandbox.photos, dl_params())
    assert "a sha256 can pin only a file or an archive" in result.failures[0]


def test_weights_are_fetched_verbatim_and_checked_against_the_hub_hash_prefix(sandbox, server):
    weights = corpus.zip_bytes([("archive/data.pkl", b"a torch checkpoint is a zip")])  # not extracted
    name = f"vgg16-{sha(weights)[:8]}.pth"
    good = server.add(f"/models/{name}", weights)
    bad = server.add("/models/vgg19-deadbeef.pth", weights)
    twin = server.add(f"/mirror/{name}", weights)

    def params(*weight_urls):
        return pipeline_params([Source(url="pkg://skimage/data/camera.png")],
                               weights=[Source(url=u) for u in weight_urls])

    raw, weights_dir = sandbox.raw, sandbox.data / "weights"
    with pytest.raises(StageError) as err:
        download(params(good, bad, twin), raw_dir=raw, weights_dir=weights_dir)
    assert f"{bad}: checksum mismatch: expected sha256 deadbeef" in str(err.value)
    assert f"{twin}: another weights source (or the manifest) already uses the name" in str(err.value)
    [entry] = sandbox.manifest(weights_dir)
    # stored flat, where models/encoders.py looks: data/weights/<torch.hub file name>
    assert (entry["source"], entry["path"], entry["sha256"]) == (good, name, sha(weights))
    assert (weights_dir / name).read_bytes() == weights

    download(params(), raw_dir=raw, weights_dir=weights_dir)  # removed from params: removed from data
    assert sorted(p.name for p in weights_dir.iterdir()) == ["manifest.json", "rejected.json"]


def test_a_style_source_must_be_one_decodable_image(sandbox):
    sandbox.put(sandbox.work / "style.jpg", b"not an image")
    params = pipeline_params([Source(url="pkg://skimage/data/camera.png")], {"bad": Source(url="style.jpg")})
    with pytest.raises(StageError, match="model bad: style style.jpg is not a usable image"):
        download(params, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")


def test_datasets_and_models_each_get_their_folder(sandbox):
    params = pipeline_params([Source(url="pkg://skimage/data/camera.png")],
                             {"swirls": Source(url="pkg://skimage/data/chelsea.png")},
                             labelled={"digits": [Source(url="pkg://skimage/data/coins.png")]})
    download(params, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    assert sorted(p.name for p in sandbox.raw.iterdir()) == ["datasets", "models"]
    assert sorted(p.name for p in (sandbox.raw / "datasets").iterdir()) == ["digits", "photos"]
    [coins] = sandbox.manifest(sandbox.raw / "datasets/digits")
    assert coins["source"] == "pkg://skimage/data/coins.png"
    [style] = sandbox.manifest(sandbox.raw / "models/swirls")
    assert style["source"] == "pkg://skimage/data/chelsea.png"


def test_a_model_without_a_style_gets_an_empty_folder(sandbox):
    # (built without validation: which families exist is models/registry.py's business, not download's)
    base = pipeline_params([Source(url="pkg://skimage/data/camera.png")],
                           {"swirls": Source(url="pkg://skimage/data/chelsea.png")})
    models = {**base.models, "digits": ModelParams.model_construct(family="cgan", dataset="photos", style=None)}
    params = base.model_copy(update={"models": models})
    download(params, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    digits = sandbox.raw / "models/digits"
    assert sorted(p.name for p in digits.iterdir()) == ["manifest.json", "rejected.json"]
    assert sandbox.manifest(digits) == [] and sandbox.rejected(digits) == []
    manifest = (digits / "manifest.json").read_bytes()
    download(params, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")  # idempotent
    assert (digits / "manifest.json").read_bytes() == manifest


def test_datasets_and_models_removed_from_params_are_removed_from_data(sandbox):
    def params(datasets, models):
        return pipeline_params([Source(url="pkg://skimage/data/camera.png")],
                               {n: Source(url="pkg://skimage/data/chelsea.png") for n in models},
                               labelled={n: [Source(url="pkg://skimage/data/coins.png")] for n in datasets})
    download(params(["a", "b"], ["x", "y"]), raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    (sandbox.raw / "content").mkdir()   # the layout before datasets/ and models/
    (sandbox.raw / "styles/old").mkdir(parents=True)
    download(params(["b"], ["y"]), raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    assert sorted(p.name for p in sandbox.raw.iterdir()) == ["datasets", "models"]
    assert sorted(p.name for p in (sandbox.raw / "datasets").iterdir()) == ["b", "photos"]
    assert sorted(p.name for p in (sandbox.raw / "models").iterdir()) == ["y"]


def test_a_paintings_model_records_what_its_paintings_dataset_holds(sandbox):
    """adain's train.styles dataset is no DVC dep of train@<model>: data/raw/models/<model>/styles.json
    (a dep) names the paintings and the split, so a new painting or split retrains it."""
    from stylepipe.config import DatasetParams

    base = pipeline_params([Source(url="pkg://skimage/data/camera.png")])
    paintings = DatasetParams(kind="photos", sources=[Source(url="pkg://skimage/data/chelsea.png")])
    any_painting = ModelParams(family="adain", dataset="photos", train={"styles": "paintings"})

    def params(painting_urls, seed=1):
        sources = [Source(url=u) for u in painting_urls]
        return base.model_copy(update={
            "datasets": {**base.datasets, "paintings": paintings.model_copy(update={"sources": sources})},
            "models": {**base.models, "any": any_painting},
            "preprocess": base.preprocess.model_copy(update={"seed": seed})})

    download(params(["pkg://skimage/data/chelsea.png"]), raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    record = sandbox.raw / "models/any/styles.json"
    first = record.read_bytes()
    [chelsea] = sandbox.manifest(sandbox.raw / "datasets/paintings")
    assert b'"dataset": "paintings"' in first and chelsea["sha256"].encode() in first
    assert not (sandbox.raw / "models/unused/styles.json").exists()  # a johnson model has none
    download(params(["pkg://skimage/data/chelsea.png"]), raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    assert record.read_bytes() == first                               # unchanged data: unchanged bytes
    download(params(["pkg://skimage/data/chelsea.png", "pkg://skimage/data/coffee.png"]),
             raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    second = record.read_bytes()
    assert second != first                                            # a new painting
    download(params(["pkg://skimage/data/chelsea.png", "pkg://skimage/data/coffee.png"], seed=2),
             raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    assert record.read_bytes() != second                              # a new split
