"""preprocess: the hostile corpus, fetched by download, becomes train/val PNGs and a manifest with a
row and a reason for every candidate; nothing is written outside data/."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stylepipe.config import PreprocessParams, Source
from stylepipe.errors import StageError
from tasks.download import sync_set
from tasks.images import decode
from tasks.preprocess import parallel_map, preprocess
from tests.hostile import corpus
from tests.hostile.crash import always_crash, crash_on_three
from tests.hostile.fixtures import dl_params, sandbox, server  # noqa: F401 (fixtures)

MODES = {"photo.jpg": "RGB", "png named.jpg": "RGB", "cmyk.jpg": "CMYK", "grey.jpg": "L",
         "sixteen-bit.png": "I;16", "palette-transparent.png": "P", "rgba-half.png": "RGBA", "la.png": "LA",
         "bilevel.png": "1", "animated.gif": "P", "int32.tif": "I", "float.tif": "F"}


def params(**overrides) -> PreprocessParams:
    return PreprocessParams(**{"workers": 1, "train_size": 32, "val_fraction": 0.25,
                               "max_reject_fraction": 0.9, **overrides})


def fetch_folder(sandbox, files: dict[str, bytes], name: str = "photos") -> str:
    """Put files in a served folder and run download's sync on it; returns the folder's source-id."""
    folder = sandbox.served / name
    for relpath, data in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(data)
    sandbox.settle()
    assert sync_set("content", [Source(url=str(folder))], sandbox.content, dl_params()).failures == []
    return str(folder)


def run(sandbox, p: PreprocessParams | None = None, out: str = "processed") -> pd.DataFrame:
    preprocess(p or params(), raw=sandbox.content, out=sandbox.data / out)
    return pd.read_parquet(sandbox.data / out / "manifest.parquet")


@pytest.fixture
def hostile(sandbox, server):
    """The whole corpus: good and bad images, a duplicate, macOS metadata, plus an archive source
    whose unsafe members download refused."""
    files = dict(corpus.good_images())
    files.update({name: data for name, (data, _) in corpus.bad_images().items()})
    files["again/photo copy.jpg"] = files["photo.jpg"]
    files["__MACOSX/._photo.jpg"] = b"\x00\x05\x16\x07AppleDouble"
    files[".DS_Store"] = b"Bud1"
    folder = sandbox.served / "photos"
    for relpath, data in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(data)
    sandbox.settle()
    zip_url = server.add("/t.zip", corpus.traversal_zip("stylepipe-evil-preprocess"))
    result = sync_set("content", [Source(url=str(folder)), Source(url=zip_url)], sandbox.content, dl_params())
    assert result.failures == []
    return sandbox


def test_every_candidate_gets_a_row_with_status_and_reason(hostile):
    m = run(hostile)
    assert list(m.columns) == ["source", "relpath", "sha256", "width", "height", "mode", "status", "reason",
                               "split", "output"]
    by_name = {Path(r).name: row for r, row in zip(m.relpath, m.to_dict("records"))}

    for name, mode in MODES.items():
        assert by_name[name]["status"] == "ok", by_name[name]["reason"]
        assert by_name[name]["mode"] == mode
    for name in ("café crème ü.png", "写真 スペース.png", *(f"exif-{o}.jpg" for o in range(1, 9))):
        assert by_name[name]["status"] == "ok"
    for name, (_, reason) in corpus.bad_images().items():
        assert (by_name[name]["status"], by_name[name]["reason"].split(":")[0]) == ("rejected", reason)
    assert "over preprocess.max_pixels=" in by_name["bomb.png"]["reason"]
    assert by_name["photo copy.jpg"]["reason"].startswith("duplicate: same bytes as ")
    assert by_name["._photo.jpg"]["reason"].startswith("hidden")
    assert by_name[".DS_Store"]["reason"].startswith("hidden")
    download_refusals = m[m.reason.str.startswith("download: ")]
    assert len(download_refusals) == 7 and set(download_refusals.source) == {hostile_zip_url(m)}
    assert (m.status == "ok").sum() == len(corpus.good_images()) + 1  # + the zip's good/ok.png


def hostile_zip_url(m: pd.DataFrame) -> str:
    return next(s for s in m.source if s.endswith("/t.zip"))


def test_outputs_are_rgb_pngs_of_the_right_size_and_nothing_else(hostile):
    m = run(hostile)
    out = hostile.data / "processed"
    ok = m[m.status == "ok"]
    assert set(ok.split) == {"train", "val"}
    for row in ok.itertuples():
        assert row.output == f"{row.split}/{row.sha256[:16]}.png"
        with Image.open(out / row.output) as img:
            assert (img.format, img.mode) == ("PNG", "RGB")
            expected = (32, 32) if row.split == "train" else (row.width, row.height)
            assert img.size == expected
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted([*ok.output, "manifest.parquet"])
    assert (m[m.status == "rejected"].output == "").all() and (m[m.status == "rejected"].split == "").all()


def test_upright_size_is_recorded_for_rotated_photos(hostile):
    m = run(hostile)
    sizes = {Path(r.relpath).name: (r.width, r.height) for r in m.itertuples()}
    for o in range(1, 9):
        assert sizes[f"exif-{o}.jpg"] == (48, 32)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_ends_up_upright(orientation):
    upright = corpus.upright_pattern().astype(int)
    decoded = np.asarray(decode(corpus.exif_oriented_jpeg(orientation), 10**6).image).astype(int)
    assert decoded.shape == upright.shape
    assert np.abs(decoded - upright).mean() < 6  # JPEG noise only
    for wrong in range(1, 9):  # and it is not some other flip or turn of the pattern
        other = corpus.stored_for_orientation(corpus.upright_pattern(), wrong).astype(int)
        if other.shape == upright.shape and not np.array_equal(other, upright):
            assert np.abs(decoded - other).mean() > 30


def test_alpha_is_composited_over_white():
    pal = np.asarray(decode(corpus.palette_with_transparency(), 10**6).image)
    assert (pal[:, :20] == 255).all()
    assert (pal[:, 20:] == (150, 0, 0)).all()
    half = np.asarray(decode(corpus.half_transparent_rgba(), 10**6).image).astype(int)
    assert np.abs(half - (127, 127, 255)).max() <= 1


def test_high_bit_depth_is_scaled_not_clipped():
    ramp = np.asarray(decode(corpus.sixteen_bit_png(), 10**6).image)[0, :, 0].astype(int)
    assert ramp[0] == 0 and ramp[-1] == 255 and (np.diff(ramp) >= 0).all() and len(set(ramp)) > 50
    good = corpus.good_images()
    assert (np.asarray(decode(good["float.tif"], 10**6).image) == 128).all()
    assert (np.asarray(decode(good["int32.tif"], 10**6).image) == 255).all()


def test_animated_files_give_their_first_frame():
    decoded = decode(corpus.animated_gif(), 10**6)
    assert decoded.frames == 3
    assert (np.asarray(decoded.image) == (200, 0, 0)).all()


def test_max_pixels_refuses_a_file_in_pillows_warning_band():
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; the stage refuses it anyway
    data = corpus.encode(corpus.noise_rgb(100, 100), "PNG")
    with pytest.raises(Exception, match="too-large: 10000 pixels is over max_pixels=9999"):
        decode(data, max_pixels=9_999)
    with pytest.raises(Exception, match="too-large: 10000 pixels is over stylize.max_pixels=9999"):
        decode(data, max_pixels=9_999, setting="stylize.max_pixels")  # the caller names its setting
    assert decode(data, max_pixels=10_000).image.size == (100, 100)


def test_the_split_is_deterministic_and_follows_the_seed(sandbox):
    fetch_folder(sandbox, {f"{i}.png": corpus.encode(corpus.noise_rgb(40, 40, seed=i), "PNG") for i in range(20)})
    first = run(sandbox, params(seed=0), out="a")
    again = run(sandbox, params(seed=0), out="b")
    other = run(sandbox, params(seed=1), out="c")
    assert first.equals(again)
    assert (first.split == "val").sum() == 5  # round(20 * 0.25)
    assert set(first[first.split == "val"].sha256) != set(other[other.split == "val"].sha256)
    a, b = sandbox.data / "a", sandbox.data / "b"
    assert all((a / o).read_bytes() == (b / o).read_bytes() for o in first.output)


@pytest.mark.parametrize("val_fraction", [0.0, 0.99])
def test_two_images_always_give_one_train_and_one_val(sandbox, val_fraction):
    fetch_folder(sandbox, {f"{i}.png": corpus.encode(corpus.noise_rgb(40, 40, seed=i), "PNG") for i in range(2)})
    assert sorted(run(sandbox, params(val_fraction=val_fraction)).split) == ["train", "val"]


def test_a_split_emptied_by_rejections_gets_an_image_moved_into_it(sandbox):
    good = {f"{i}.png": corpus.encode(corpus.noise_rgb(40, 40, seed=i), "PNG") for i in range(2)}
    bad = b"not an image"
    # the documented rule: val takes the smallest sha256("<seed>:<file sha256>"); find a seed that
    # sends the bad file (and only it) to val
    def key(seed, data):
        return hashlib.sha256(f"{seed}:{hashlib.sha256(data).hexdigest()}".encode()).hexdigest()
    seed = next(s for s in range(200) if key(s, bad) < min(key(s, d) for d in good.values()))
    fetch_folder(sandbox, {**good, "bad.jpg": bad})
    m = run(sandbox, params(seed=seed, val_fraction=0.34))
    ok = m[m.status == "ok"]
    assert sorted(ok.split) == ["train", "val"]
    assert sorted(p.parent.name for p in (sandbox.data / "processed").rglob("*.png")) == ["train", "val"]


def test_too_many_rejects_fail_the_stage_but_the_manifest_explains(sandbox):
    bad = {name: data for name, (data, _) in corpus.bad_images().items()}
    fetch_folder(sandbox, {**bad, "ok.png": corpus.encode(corpus.noise_rgb(), "PNG")})
    with pytest.raises(StageError, match=r"5 of 6 candidates rejected .* over preprocess.max_reject_fraction=0.5"):
        run(sandbox, params(max_reject_fraction=0.5))
    m = pd.read_parquet(sandbox.data / "processed" / "manifest.parquet")
    assert sorted(m.status) == ["ok"] + ["rejected"] * 5


def test_nothing_usable_fails_the_stage(sandbox):
    fetch_folder(sandbox, {"a.jpg": b"", "b.jpg": b"text"})
    with pytest.raises(StageError, match="no usable content image"):
        run(sandbox, params(max_reject_fraction=1.0))


def test_without_download_it_says_what_to_run(sandbox):
    with pytest.raises(StageError, match="run the download stage first"):
        run(sandbox)


def test_worker_processes_give_the_same_result(hostile):
    serial = run(hostile, params(workers=1), out="serial")
    parallel = run(hostile, params(workers=2), out="parallel")
    assert serial.equals(parallel)
    for output in serial.output[serial.output != ""]:
        assert (hostile.data / "serial" / output).read_bytes() == (hostile.data / "parallel" / output).read_bytes()


def test_a_worker_process_dying_costs_only_its_own_file():
    # crash_on_three(3) exits the process, as a segfaulting decoder would
    results = list(parallel_map(crash_on_three, range(8), 2, on_crash=lambda n: -n))
    assert results == [0, 10, 20, -3, 40, 50, 60, 70]


def test_workers_that_cannot_run_at_all_fail_the_stage_instead_of_rejecting_everything():
    with pytest.raises(StageError, match="worker processes die on every file"):
        list(parallel_map(always_crash, range(20), 2, on_crash=lambda n: -n))
