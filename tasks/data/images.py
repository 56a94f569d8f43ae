"""Decode one image file into an upright 8-bit RGB picture, or say why it cannot be used.

The rule for every Pillow mode:
  - the EXIF orientation tag is applied (the pixels end up upright; the tag is then gone);
  - animated files (GIF, APNG, WebP, multi-page TIFF): the first frame;
  - transparency (RGBA, LA, PA, P or L/RGB with a transparent colour) is composited over opaque
    white: a transparent pixel becomes white, a half-transparent one half-way to white;
  - 16-bit and 32-bit integer greyscale (I;16*, I): the 16-bit range is mapped to 0-255
    (value / 257, clipped); float (F): values in [0, 1] are scaled to 0-255, otherwise clipped;
  - CMYK, YCbCr, 1, L and the rest: Pillow's conversion to RGB. Embedded ICC profiles are not
    applied (pixel values are taken as sRGB);
  - files over max_pixels (width * height) are refused before their pixels are decoded, as
    decompression bombs; truncated files are refused (Pillow's LOAD_TRUNCATED_IMAGES stays off).
"""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# A painting is one image: larger than preprocess's photo limit is fine, a bomb is not.
STYLE_IMAGE_MAX_PIXELS = 256_000_000
# The smallest side an image-to-image network takes (their reflection padding needs more than 4 px
# at a quarter of the resolution). Below it, preprocess refuses the image (`too-small`: no use as a
# photo to learn from or to evaluate on) and the bulk engine pads it by replicating its edge, runs
# the network, and crops the result back: a 1x1 input gives a 1x1 output.
MIN_SIDE = 16
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
WHITE = (255, 255, 255, 255)
HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


class Rejected(Exception):
    """This file is not a usable image; `reason` is a short code, `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_image_file(path) -> bool:
    """A known image suffix, or content Pillow recognises: a style URL without an extension
    (https://host/painting?id=3) is stored under the name `painting`."""
    if str(path).lower().endswith(tuple(IMAGE_SUFFIXES)):
        return True
    try:
        with Image.open(path):  # reads the header only
            return True
    except Exception:  # not an image, unreadable, or over Pillow's size limit
        return False


@dataclass
class Decoded:
    image: Image.Image  # RGB, upright
    width: int          # upright size of the original, before any draft downscaling
    height: int
    mode: str           # the original Pillow mode, e.g. CMYK, P, I;16
    frames: int


def decode(data: bytes, max_pixels: int, *, min_side: int | None = None,
           setting: str = "max_pixels") -> Decoded:
    """Decode image bytes. With min_side, JPEGs may be decoded at a reduced scale (DCT scaling) as
    long as both sides stay >= min_side: much faster for training-size outputs, same file checks.
    setting: the caller's name for max_pixels (e.g. preprocess.max_pixels), which a too-large
    rejection names."""
    if not data:
        raise Rejected("empty", "zero-byte file")
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and raises only above twice that: refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # never closed: it reads from memory, and an open image keeps its pixels without a copy
            im = Image.open(io.BytesIO(data))
            mode, frames = im.mode, getattr(im, "n_frames", 1)
            width, height = im.size  # before draft scaling: the original's size
            orientation = _orientation(im)
            if width * height > max_pixels:
                raise Rejected("too-large", f"{width}x{height} is over {setting}={max_pixels}")
            if min_side and im.format == "JPEG":
                im.draft(im.mode, (min_side, min_side))
            im.load()
            # a multi-frame file is copied: the caller's image must not change if anyone seeks the file
            upright = ImageOps.exif_transpose(im) if orientation != 1 else im.copy() if frames > 1 else im
        except Rejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            # raised by Image.open itself, before the size is known here; Pillow's message has it
            pixels = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{pixels[1]} pixels" if pixels else "the image"
            raise Rejected("too-large", f"{size} is over {setting}={max_pixels}") from None
        except UnidentifiedImageError:
            raise Rejected("not-an-image", "Pillow does not recognise the format") from None
        except (OSError, EOFError, SyntaxError, ValueError) as e:
            text = str(e)
            # Pillow says "image file is truncated", "Truncated File Read", "broken data stream"
            if isinstance(e, EOFError) or re.search(r"truncated|broken data stream", text, re.IGNORECASE):
                raise Rejected("truncated", text or type(e).__name__) from None
            raise Rejected("decode-error", f"{type(e).__name__}: {text}") from None
        except Exception as e:  # a bad file never stops the stage
            raise Rejected("decode-error", f"{type(e).__name__}: {e}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous_limit
    if orientation in (5, 6, 7, 8):  # a 90 or 270 degree turn: the upright image's sides swap
        width, height = height, width
    try:
        rgb = to_rgb(upright)
    except (ValueError, OSError) as e:
        raise Rejected("unsupported-mode", f"{mode}: {e}") from None
    return Decoded(rgb, width, height, mode, frames)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 (as stored) when the tag is missing, invalid or unreadable:
    a broken EXIF block should not cost an otherwise good image."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if value in range(1, 9) else 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB by the rule in this module's docstring."""
    if img.mode in HIGH_BIT_DEPTH_MODES or img.mode == "F":
        img = _to_8bit_grey(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")  # (convert would copy an RGB image)


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        values = np.nan_to_num(values) * scale
    else:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def resize_short_side_and_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale so the short side is `size`, then cut the centred size x size square."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def max_input_bytes(max_pixels: int) -> int:
    """The largest file an image of max_pixels can need: 16-bit RGBA, uncompressed, plus headers."""
    return max_pixels * 8 + (1 << 20)
