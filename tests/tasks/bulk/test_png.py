"""tasks/bulk/png.py: the engine's PNG writer, read back by Pillow and checked chunk by chunk."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tasks.bulk import png


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, data) of every chunk, each one's CRC checked."""
    assert data[:8] == png.SIGNATURE
    pos, found = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        pos += 12 + length
    return found


def written(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    png.write_png(out, pixels)
    return out.getvalue()


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 1), (5, 1), (300, 257, 3), (513, 600, 1), (64, 48)])
def test_pixels_read_back_exactly(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = written(pixels)
    image = Image.open(io.BytesIO(data))
    assert image.mode == ("RGB" if pixels.ndim == 3 and shape[2] == 3 else "L")
    assert np.array_equal(np.asarray(image), pixels.reshape(shape[0], shape[1], -1).squeeze(-1)
                          if image.mode == "L" else pixels)
    kinds = [kind for kind, _ in chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}


def row_filters(data: bytes, height: int) -> list[int]:
    """The filter type byte of each row, from the inflated IDAT data."""
    stream = zlib.decompress(b"".join(body for kind, body in chunks(data) if kind == b"IDAT"))
    row = len(stream) // height
    assert row * height == len(stream)
    return list(stream[::row])


def test_a_large_image_is_written_in_bands_and_several_idat_chunks(monkeypatch):
    monkeypatch.setattr(png, "BAND_BYTES", 1000)  # a row of 300 RGB pixels at a time
    monkeypatch.setattr(png, "IDAT_BYTES", 4096)
    pixels = np.random.default_rng(1).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    pixels[40:170] = 7  # a flat band across band boundaries
    data = written(pixels)
    idat = [body for kind, body in chunks(data) if kind == b"IDAT"]
    assert len(idat) > 3 and max(map(len, idat)) <= 4096
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert row_filters(data, 400) == [png.UP] * 400


def test_rows_repeated_down_the_image_compress_to_almost_nothing():
    """The Up filter turns a row repeated downwards into zeros, which run-length deflate packs:
    without the filter, a random row repeated is incompressible to zlib's run-length strategy
    (512x512 RGB is 786 KB raw)."""
    row = np.random.default_rng(3).integers(0, 256, (1, 512, 3), dtype=np.uint8)
    data = written(np.repeat(row, 512, axis=0))
    assert len(data) < 8_000
    assert row_filters(data, 512) == [png.UP] * 512
    assert len(written(np.full((512, 512, 3), 200, np.uint8))) < 4_000


def test_a_strided_view_is_written_as_it_looks():
    pixels = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view = pixels[::2, ::3]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(written(view)))), view)


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                    np.zeros((0, 4, 3), np.uint8), np.zeros((4,), np.uint8)])
def test_what_it_cannot_write_is_a_value_error(pixels):
    with pytest.raises(ValueError):
        written(pixels)
