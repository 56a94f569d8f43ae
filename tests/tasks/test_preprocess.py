"""preprocess: the hostile corpus, fetched by download, becomes train/val PNGs and a manifest with a
row and a reason for every candidate; idx files (made here, gzipped or not) become safetensors, and
each kind of damage to them is one clear error; nothing is written outside data/."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from safetensors.numpy import load_file

from stylepipe.config import PreprocessParams, Source
from stylepipe.errors import StageError
from tasks.data.images import decode
from tasks.download import sync_set
from tasks.preprocess import parallel_map, preprocess, preprocess_photos
from tests.hostile import corpus
from tests.hostile.crash import always_crash, crash_on_three
from tests.hostile.fixtures import dl_params, pipeline_params, sandbox, server  # noqa: F401 (fixtures)

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
    assert sync_set("photos", [Source(url=str(folder))], sandbox.photos, dl_params()).failures == []
    return str(folder)


def run(sandbox, p: PreprocessParams | None = None, out: str = "processed") -> pd.DataFrame:
    preprocess_photos(p or params(), raw=sandbox.photos, out=sandbox.data / out)
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
    result = sync_set("photos", [Source(url=str(folder)), Source(url=zip_url)], sandbox.photos, dl_params())
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
    with pytest.raises(StageError, match="no usable image"):
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


def test_a_failed_rebuild_leaves_the_previous_output_as_it_was(sandbox, monkeypatch):
    fetch_folder(sandbox, {f"{i}.png": corpus.encode(corpus.noise_rgb(40, 40, seed=i), "PNG") for i in range(4)})
    run(sandbox)
    out = sandbox.data / "processed"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def dies(job):
        raise RuntimeError("killed mid-run")
    monkeypatch.setattr("tasks.preprocess.process_one", dies)
    with pytest.raises(RuntimeError):
        run(sandbox)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (sandbox.data / ".partial").exists()


# --- labelled datasets: idx files ---------------------------------------------------------------


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def fetch_digits(sandbox, files: dict[str, bytes]) -> None:
    """Serve `files` as a folder and download it as the labelled dataset `digits`."""
    folder = sandbox.served / "digits"
    shutil.rmtree(folder, ignore_errors=True)
    for relpath, data in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(data)
    sandbox.settle()
    result = sync_set("digits", [Source(url=str(folder))], sandbox.raw / "datasets/digits", dl_params())
    assert result.failures == []


def run_digits(sandbox, **overrides) -> pd.DataFrame:
    p = pipeline_params(labelled={"digits": [Source(url="unused")]})
    p = p.model_copy(update={"preprocess": params(**overrides)})
    preprocess(p, "digits", raw_root=sandbox.raw / "datasets", out_root=sandbox.data / "processed")
    return pd.read_parquet(sandbox.data / "processed/digits/manifest.parquet")


@pytest.mark.parametrize("layout", ["plain", "gzipped", "nested, dotted names"])
def test_idx_files_become_safetensors_and_a_row_per_sample(sandbox, layout):
    files = corpus.idx_set()
    served = {
        "plain": files,
        "gzipped": {f"{name}.gz": gz(data) for name, data in files.items()},
        "nested, dotted names": {f"mnist/raw/{name.replace('-idx', '.idx')}": data for name, data in files.items()},
    }[layout]
    fetch_digits(sandbox, {**served, "README.txt": b"not an idx file", ".DS_Store": b"Bud1"})
    m = run_digits(sandbox)

    out = sandbox.data / "processed/digits"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", "train.safetensors", "val.safetensors"]
    assert not (sandbox.data / "processed/.partial").exists()
    for split, stem, n in (("train", "train", 12), ("val", "t10k", 5)):
        arrays = load_file(str(out / f"{split}.safetensors"))
        images, labels = arrays["images"], arrays["labels"]
        assert (images.dtype, images.shape, labels.dtype, labels.shape) == (np.uint8, (n, 4, 3, 1), np.int64, (n,))
        assert images.tobytes() == files[f"{stem}-images-idx3-ubyte"][16:]
        assert labels.tolist() == list(files[f"{stem}-labels-idx1-ubyte"][8:])
        rows = m[m.split == split]
        assert rows["index"].tolist() == list(range(n)) and rows.label.tolist() == labels.tolist()
        assert rows.sha256.tolist() == [hashlib.sha256(im.tobytes()).hexdigest() for im in images]
        assert rows.relpath.str.contains(f"{stem}-images").all() and rows.source.str.endswith("/digits").all()
    assert list(m.columns) == ["source", "relpath", "split", "index", "label", "sha256", "status", "reason"]
    assert (m.status == "ok").all() and (m.reason == "").all()


def test_idx_files_are_checked_before_the_previous_output_is_replaced(sandbox):
    fetch_digits(sandbox, corpus.idx_set())
    run_digits(sandbox)
    out = sandbox.data / "processed/digits"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fetch_digits(sandbox, {**corpus.idx_set(n_train=20), "train-labels-idx1-ubyte": b"\0\0\x08"})
    with pytest.raises(StageError, match="train-labels-idx1-ubyte: truncated"):
        run_digits(sandbox)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (sandbox.data / "processed/.partial").exists()


def bad_crc(gzipped: bytes) -> bytes:
    return gzipped[:-8] + bytes([gzipped[-8] ^ 0xFF]) + gzipped[-7:]  # the trailer's CRC-32


def images_header(*dims: int) -> bytes:
    """Only the header of an idx3 images file: what it promises is never there."""
    return b"\0\0\x08\x03" + struct.pack(">3I", *dims)


def _replace(name: str, data: bytes) -> Callable[[dict], dict]:
    return lambda files: {**files, name: data}


def _drop(name: str) -> Callable[[dict], dict]:
    return lambda files: {k: v for k, v in files.items() if k != name}


GOOD = corpus.idx_set()
CORRUPTIONS = {
    "wrong magic": (_replace("train-images-idx3-ubyte", b"\0\0\x08\x01" + GOOD["train-images-idx3-ubyte"][4:]),
                    r"train-images-idx3-ubyte: wrong magic number 0x00000801 \(expected 0x00000803"),
    "not idx at all": (_replace("t10k-images-idx3-ubyte", b"<html>404 not found</html>"),
                       r"t10k-images-idx3-ubyte: wrong magic number 0x3c68746d"),
    "cut in the header": (_replace("train-labels-idx1-ubyte", b"\0\0\x08\x01\0\0"),
                          "train-labels-idx1-ubyte: truncated: the file ends inside its header"),
    "truncated data": (_replace("train-images-idx3-ubyte", GOOD["train-images-idx3-ubyte"][:-5]),
                       r"train-images-idx3-ubyte: truncated: its header says 12 x 4 x 3 = 144 bytes of data, "
                       "the file holds 139"),
    "truncated gzip": (lambda f: {**_drop("train-images-idx3-ubyte")(f),
                                  "train-images-idx3-ubyte.gz": gz(f["train-images-idx3-ubyte"])[:-30]},
                       r"train-images-idx3-ubyte.gz: cannot read it \(the gzip stream ends early: truncated\)"),
    "gzip CRC mismatch": (lambda f: {**_drop("t10k-labels-idx1-ubyte")(f),
                                     "t10k-labels-idx1-ubyte.gz": bad_crc(gz(f["t10k-labels-idx1-ubyte"]))},
                          r"t10k-labels-idx1-ubyte.gz: cannot read it \(damaged gzip data: CRC check failed"),
    "trailing bytes": (_replace("t10k-labels-idx1-ubyte", GOOD["t10k-labels-idx1-ubyte"] + b"\0"),
                       "t10k-labels-idx1-ubyte: longer than its header says"),
    "count mismatch": (_replace("t10k-labels-idx1-ubyte", corpus.idx(np.zeros(4))),
                       "t10k-images-idx3-ubyte has 5 images but .*t10k-labels-idx1-ubyte has 4 labels"),
    "label out of range": (_replace("t10k-labels-idx1-ubyte", corpus.idx(np.array([0, 1, 7, 2, 9]))),
                           r"t10k-labels-idx1-ubyte: label 7 of sample 2 is out of range 0..2 \(2 such labels"),
    "classes not numbered from 0": (_replace("train-labels-idx1-ubyte", corpus.idx(np.arange(12) % 3 + 1)),
                                    "train-labels-idx1-ubyte: label 3 of sample 2 is out of range 0..2"),
    "no samples": (_replace("train-images-idx3-ubyte", corpus.idx(np.zeros((0, 4, 3)))),
                   "train-images-idx3-ubyte: holds no images"),
    "header promises too much": (_replace("train-images-idx3-ubyte", images_header(10**9, 1000, 1000)),
                                 r"train-images-idx3-ubyte: its header says 1000000000 x 1000 x 1000 = "
                                 r"1000000000000000 bytes of data, over preprocess.max_labelled_bytes=2147483648"),
    "images over max_pixels": (_replace("train-images-idx3-ubyte", images_header(1, 10**5, 10**5)),
                               "train-images-idx3-ubyte: its images are 100000x100000 pixels, over "
                               "preprocess.max_pixels"),
    "splits of different sizes": (lambda f: {**f, **{k: v for k, v in corpus.idx_set(size=(5, 5)).items()
                                                      if k.startswith("t10k")}},
                                  "t10k-images-idx3-ubyte has 5x5 images but .*train-images-idx3-ubyte 4x3"),
    "missing file": (_drop("t10k-labels-idx1-ubyte"), r"no t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"),
    "one file twice": (lambda f: {**f, "copy/train-labels-idx1-ubyte.gz": gz(f["train-labels-idx1-ubyte"])},
                       "train-labels-idx1-ubyte found 2 times: .*copy/train-labels-idx1-ubyte.gz, .*"),
}


@pytest.mark.parametrize("damage", CORRUPTIONS)
def test_each_kind_of_damaged_idx_set_is_one_clear_error(sandbox, damage):
    change, message = CORRUPTIONS[damage]
    fetch_digits(sandbox, change(corpus.idx_set()))
    with pytest.raises(StageError, match=message):
        run_digits(sandbox)
    assert not (sandbox.data / "processed/digits").exists()
    assert not (sandbox.data / "processed/.partial").exists()


def test_an_idx_file_edited_after_download_is_refused(sandbox):
    fetch_digits(sandbox, corpus.idx_set())
    [path] = (sandbox.raw / "datasets/digits/files").rglob("train-labels-idx1-ubyte")
    path.write_bytes(corpus.idx(np.arange(12) % 2))
    with pytest.raises(StageError, match="train-labels-idx1-ubyte: its bytes no longer match the download manifest"):
        run_digits(sandbox)


def test_an_unknown_dataset_names_the_known_ones(sandbox):
    with pytest.raises(StageError, match="unknown dataset 'nope'; params.yaml `datasets:` has photos, digits"):
        preprocess(pipeline_params(labelled={"digits": [Source(url="unused")]}), "nope")
