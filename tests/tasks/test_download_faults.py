"""Issue 13 in download and preprocess: names that are not UTF-8, a style URL that breaks, zip
bombs under the default caps, and images too small for the networks."""
from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile

import pandas as pd
import pytest

from stylepipe.config import PreprocessParams, Source
from stylepipe.errors import StageError
from stylepipe.names import unescape_name
from tasks.download import download, sync_set
from tasks.preprocess import preprocess_photos
from tests.hostile import corpus
from tests.hostile.fixtures import dl_params, pipeline_params, sandbox, server  # noqa: F401 (fixtures)

PNG = corpus.encode(corpus.noise_rgb(seed=21), "PNG")


def photo_bytes(seed: int, size=(48, 40)) -> bytes:
    return corpus.encode(corpus.noise_rgb(*size, seed=seed), "PNG")


def preprocess(sandbox, **overrides) -> pd.DataFrame:
    p = PreprocessParams(**{"workers": 1, "train_size": 32, "val_fraction": 0.25, "max_reject_fraction": 0.9,
                            **overrides})
    preprocess_photos(p, raw=sandbox.photos, out=sandbox.data / "processed")
    return pd.read_parquet(sandbox.data / "processed" / "manifest.parquet")


def test_latin1_names_in_a_folder_and_a_tar_get_through_download_and_preprocess(sandbox, server):
    folder = sandbox.served / "photos"
    folder.mkdir()
    for n, raw in enumerate([b"caf\xe9.png", b"plain.png", b"more.png"]):
        with open(os.path.join(os.fsencode(folder), raw), "wb") as f:
            f.write(photo_bytes(n))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        data = photo_bytes(9)
        info = tarfile.TarInfo("na\xefve.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    sandbox.settle()
    url = server.add("/t.tar", buf.getvalue())
    result = sync_set("photos", [Source(url=str(folder)), Source(url=url)], sandbox.photos, dl_params())
    assert result.failures == []
    paths = [e["path"] for e in sandbox.manifest()]
    assert any(p.endswith("/caf%E9.png") for p in paths) and any(p.endswith("/na%EFve.png") for p in paths)
    json.loads((sandbox.photos / "manifest.json").read_text(encoding="utf-8"))
    assert unescape_name("caf%E9.png") == b"caf\xe9.png"

    m = preprocess(sandbox)
    assert (m["status"] == "ok").sum() == 4, m[["relpath", "reason"]]
    assert any(r.endswith("caf%E9.png") for r in m["relpath"])


def test_a_style_url_that_breaks_keeps_the_previous_style_image(sandbox):
    sandbox.put(sandbox.work / "style.png", PNG)
    params = pipeline_params([Source(url="pkg://skimage/data/camera.png")], {"s": Source(url="style.png")})
    download(params, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    [before] = sandbox.manifest(sandbox.raw / "models/s")

    broken = pipeline_params([Source(url="pkg://skimage/data/camera.png")], {"s": Source(url="gone.png")})
    with pytest.raises(StageError, match="gone.png"):
        download(broken, raw_dir=sandbox.raw, weights_dir=sandbox.data / "weights")
    assert sandbox.manifest(sandbox.raw / "models/s") == [before]
    assert (sandbox.raw / "models/s" / before["path"]).read_bytes() == PNG


def test_a_zip_bomb_is_refused_under_the_default_caps(sandbox, server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\x00" * (600 << 20))  # 600 MB of zeros in about 600 KB
        zf.writestr("fine.png", PNG)
    sandbox.settle()
    url = server.add("/bomb.zip", buf.getvalue())
    result = sync_set("photos", [Source(url=url)], sandbox.photos, dl_params())
    refused = {r["path"]: r["reason"] for r in sandbox.rejected()}
    assert result.failures == [] and "bomb.png" in refused and "too-large" in refused["bomb.png"]
    assert [e["path"].rsplit("/", 1)[-1] for e in sandbox.manifest()] == ["fine.png"]


def test_images_below_the_minimum_side_are_refused_by_preprocess(sandbox):
    from tasks.data.images import MIN_SIDE

    folder = sandbox.served / "photos"
    folder.mkdir()
    files = {"tiny.png": corpus.encode(corpus.noise_rgb(3, 3, seed=1), "PNG"),
             "thin.png": corpus.encode(corpus.noise_rgb(64, MIN_SIDE - 1, seed=2), "PNG")}
    files.update({f"ok{n}.png": photo_bytes(n) for n in range(3)})
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sandbox.settle()
    sync_set("photos", [Source(url=str(folder))], sandbox.photos, dl_params())
    m = preprocess(sandbox).set_index("relpath")
    reasons = {k.rsplit("/", 1)[-1]: v for k, v in m["reason"].items()}
    assert reasons["tiny.png"].startswith("too-small") and reasons["thin.png"].startswith("too-small")
    assert (m["status"] == "ok").sum() == 3
