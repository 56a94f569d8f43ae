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


def test_a_large_image_is_written_in_bands_and_several_idat_chunks(monkeypatch):
    monkeypatch.setattr(png, "BAND_ROWS", 16)
    monkeypatch.setattr(png, "IDAT_BYTES", 4096)
    pixels = np.random.default_rng(1).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    pixels[40:170] = 7  # a flat band across band boundaries
    data = written(pixels)
    assert sum(kind == b"IDAT" for kind, _ in chunks(data)) > 3
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_smooth_and_flat_images_compress():
    """The Up filter turns a vertical gradient's rows into zeros and run-length deflate packs them:
    written without filter or compression, 512x512 RGB is 786 KB."""
    gradient = np.repeat(np.linspace(0, 255, 512, dtype=np.uint8)[:, None, None], 512, axis=1).repeat(3, axis=2)
    assert len(written(gradient)) < 8_000
    assert len(written(np.full((512, 512, 3), 200, np.uint8))) < 4_000


def test_a_contiguous_copy_is_made_of_a_strided_view():
    pixels = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view = pixels[::2, ::3]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(written(view)))), view)


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                    np.zeros((0, 4, 3), np.uint8), np.zeros((4,), np.uint8)])
def test_what_it_cannot_write_is_a_value_error(pixels):
    with pytest.raises(ValueError):
        written(pixels)
