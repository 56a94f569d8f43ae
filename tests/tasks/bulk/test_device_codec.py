"""The JPEG codec on the networks' device (StylizeParams.codec): JPEGs the device can take as they
are skip the workers' decoding and encoding; every other input takes the workers' path; a JPEG the
device cannot decode is decoded by the workers, which say what is wrong with it. On a CPU the
device's codec is libjpeg-turbo through torchvision.io, the same library Pillow uses: the outputs
match the workers' path closely (on CUDA it is nvJPEG)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import tasks.bulk.runners as runners
from tasks.bulk.codec import passthrough_jpeg
from tasks.bulk.engine import stylize
from tests.tasks.bulk.test_support import encoded, ledger_rows, make_job, output_files, photo, tiny_model  # noqa: F401


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees
    return encoded(photo(96, 64, seed=3), exif=exif)


@pytest.fixture
def inputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"plain-{i}.jpg").write_bytes(encoded(photo(96, 64, seed=i), quality=90))
    (src / "grey.jpg").write_bytes(encoded(photo(96, 64, seed=5).convert("L")))
    (src / "progressive.jpg").write_bytes(encoded(photo(96, 64, seed=6), progressive=True))
    (src / "rotated.jpg").write_bytes(rotated_jpeg())
    (src / "cmyk.jpg").write_bytes(encoded(photo(96, 64, seed=7).convert("CMYK")))
    (src / "large.jpg").write_bytes(encoded(photo(200, 100, seed=8)))   # above tile_above (160) below
    (src / "lossless.png").write_bytes(encoded(photo(96, 64, seed=9), "PNG"))
    good = encoded(photo(96, 64, seed=10))
    (src / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "corrupt.jpg").write_bytes(CORRUPT)
    (src / "rgb-stored.jpg").write_bytes(encoded(photo(96, 64, seed=13), keep_rgb=True))
    # a JPEG the device's decoder refuses (spy_on_device_batches), as nvJPEG may refuse one that
    # libjpeg decodes (arithmetic coding, say): the workers decode it instead
    (src / "refused.jpg").write_bytes(encoded(photo(96, 64, seed=11), comment=REFUSED))
    return src


REFUSED = b"the device's decoder refuses this one"


def corrupt_jpeg() -> bytes:
    """Sound headers and EOI marker, 400 random bytes in its entropy-coded data: Pillow refuses it,
    nvJPEG decodes it to garbage without an error (seen on an H200)."""
    data = bytearray(encoded(photo(96, 64, seed=12)))
    start = data.index(b"\xff\xda") + 20
    data[start:start + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    return bytes(data)


CORRUPT = corrupt_jpeg()


def spy_on_device_batches(monkeypatch, payloads: list[bytes] | None = None) -> list[int]:
    """Counts the JPEGs of each device batch (payloads: collects them); one with REFUSED in it
    fails its batch."""
    seen: list[int] = []
    real = runners.StyleModels.stylize_jpegs

    def spy(self, datas, shape, quality):
        seen.append(len(datas))
        if payloads is not None:
            payloads.extend(datas)
        if any(REFUSED in d for d in datas):
            raise RuntimeError("decode_jpeg failed")
        return real(self, datas, shape, quality)
    monkeypatch.setattr(runners.StyleModels, "stylize_jpegs", spy)
    return seen


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_jpegs_on_the_device_and_the_rest_through_the_workers(inputs, tmp_path, tiny_model, monkeypatch, fmt):
    payloads: list[bytes] = []
    seen = spy_on_device_batches(monkeypatch, payloads)
    settings = dict(format=fmt, tile_above=160, tile_size=96, tile_overlap=16, batch_size=4, workers=2)
    device = stylize(make_job(inputs, tmp_path / "device", tiny_model, codec="device", **settings), progress=False)
    # the five plain JPEGs, the grey one and the refused one, in batches of at most 4; the refused
    # one's batch again image by image, then the refused one through the workers
    assert sum(seen) >= 7 and max(seen) <= 4 and seen.count(1) >= 1, seen
    seen.clear()
    pillow = stylize(make_job(inputs, tmp_path / "pillow", tiny_model, codec="pillow", **settings), progress=False)
    assert seen == [], "codec pillow decodes every input in the workers"

    rows = {r["relpath"]: r for r in ledger_rows(tmp_path / "device" / ".stylepipe" / "ledger.sqlite")}
    reference = {r["relpath"]: r for r in ledger_rows(tmp_path / "pillow" / ".stylepipe" / "ledger.sqlite")}
    assert {k: r["status"] for k, r in rows.items()} == {k: r["status"] for k, r in reference.items()}
    assert rows["truncated.jpg"]["status"] == "failed" and rows["truncated.jpg"]["reason"] == reference["truncated.jpg"]["reason"]
    assert rows["refused.jpg"]["status"] == "done"
    # refused in the workers as anywhere, never handed to the device; nor one stored as RGB
    assert rows["corrupt.jpg"]["status"] == "failed" and rows["corrupt.jpg"]["reason"] == reference["corrupt.jpg"]["reason"]
    assert CORRUPT not in payloads and (inputs / "rgb-stored.jpg").read_bytes() not in payloads
    assert (inputs / "plain-0.jpg").read_bytes() in payloads
    assert all("JPEG codec on the device" in r["device"] for r in rows.values())
    assert not any("JPEG codec on the device" in r["device"] for r in reference.values())
    assert device.done == pillow.done == 13 and device.failed == pillow.failed == 2
    assert output_files(tmp_path / "device") == output_files(tmp_path / "pillow")
    for name in output_files(tmp_path / "pillow"):
        a = np.asarray(Image.open(tmp_path / "device" / name), np.float32)
        b = np.asarray(Image.open(tmp_path / "pillow" / name), np.float32)
        assert a.shape == b.shape, name
        assert np.abs(a - b).mean() < 1.5, (name, np.abs(a - b).mean())  # the encoders' own differences
    for name, row in rows.items():
        if row["status"] == "done":
            assert (row["width"], row["height"]) == (reference[name]["width"], reference[name]["height"])
            assert row["input_sha256"] == reference[name]["input_sha256"]


def test_codec_auto_keeps_the_workers_on_a_cpu(inputs, tmp_path, tiny_model, monkeypatch):
    seen = spy_on_device_batches(monkeypatch)
    summary = stylize(make_job(inputs, tmp_path / "out", tiny_model, tile_above=160, tile_size=96,
                               tile_overlap=16), progress=False)
    assert summary.done == 13 and seen == []


def test_a_texture_scale_keeps_the_workers(inputs, tmp_path, tiny_model, monkeypatch):
    seen = spy_on_device_batches(monkeypatch)
    stylize(make_job(inputs, tmp_path / "out", tiny_model, codec="device", texture_scale=2.0), progress=False)
    assert seen == []


def test_which_jpegs_the_device_takes_as_they_are():
    plain = encoded(photo(96, 64))
    assert passthrough_jpeg(plain, 96, 10**6) == (96, 64)
    assert passthrough_jpeg(plain + b"\0\0", 96, 10**6) == (96, 64)   # padding after the EOI marker
    assert passthrough_jpeg(plain, 95, 10**6) is None                 # would be resized or tiled
    assert passthrough_jpeg(plain, 96, 96 * 64 - 1) is None           # over max_pixels: decode() refuses it
    assert passthrough_jpeg(encoded(photo(96, 64).convert("L")), 96, 10**6) == (96, 64)
    assert passthrough_jpeg(encoded(photo(96, 64), progressive=True), 96, 10**6) is None
    assert passthrough_jpeg(encoded(photo(96, 64).convert("CMYK")), 96, 10**6) is None
    assert passthrough_jpeg(rotated_jpeg(), 96, 10**6) is None
    assert passthrough_jpeg(encoded(photo(96, 64), keep_rgb=True), 96, 10**6) is None  # nvJPEG reads it as YCbCr
    assert passthrough_jpeg(plain[:-100], 96, 10**6) is None          # truncated: no EOI
    assert passthrough_jpeg(encoded(photo(96, 64), "PNG"), 96, 10**6) is None
    assert passthrough_jpeg(b"\xff\xd8garbage\xff\xd9", 96, 10**6) is None


def test_device_jpeg_batches_obey_the_pass_pixel_cap(tiny_model, monkeypatch):
    import torch

    from tasks.bulk.plan import ModelSpec

    models = runners.StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=96, tile_overlap=16,
                                 tile_above=160, batch_size=8, codec="device")
    datas = [encoded(photo(80, 64, seed=s)) for s in range(5)]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in datas])
    whole = models.stylize(pixels)[0]
    monkeypatch.setattr(runners, "MAX_PASS_PIXELS", 2 * 64 * 80)
    arrays = models.stylize_jpegs(datas, (64, 80), None)[0]
    files = models.stylize_jpegs(datas, (64, 80), 95)[0]
    assert arrays.shape == whole.shape and len(files) == 5
    assert np.abs(arrays.astype(int) - whole).max() <= 1  # the same libjpeg-turbo decode, in passes
    for data, result in zip(files, arrays):
        assert np.abs(np.asarray(Image.open(io.BytesIO(data)), np.float32) - result).mean() < 2


def test_files_to_host_splits_one_copy_back_into_the_files():
    import torch

    files = [torch.tensor(list(b), dtype=torch.uint8) for b in (b"\xff\xd8first", b"x", b"\xff\xd8third file")]
    assert runners.files_to_host(files) == [b"\xff\xd8first", b"x", b"\xff\xd8third file"]
