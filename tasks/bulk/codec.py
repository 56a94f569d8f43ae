"""The work done in the decode/encode worker processes: bytes -> RGB pixels, pixels -> an output
file written under a temporary name and renamed into place.

When the runner decodes JPEGs on its device (StylizeParams.codec: nvJPEG on CUDA), a JPEG the device
can take as it is (passthrough_jpeg) is still decoded here, to refuse it exactly as any input is
refused (nvJPEG decodes a corrupt JPEG to garbage without an error), but its bytes go back instead
of its pixels; with JPEG outputs the results come back encoded: no pixels cross the workers' pipes.

This module must stay free of torch: worker processes import it (and the PNG writer, png.py), and
nothing else of the engine.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.data.images import Rejected, decode
from tasks.bulk.png import write_png
from tasks.bulk.remote import is_remote, upload
from tasks.bulk.sources import Payload, ReadError, Seed, TooLarge, read_limited
from tasks.data.reasons import reason

SAVE_OPTIONS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
MAX_PIXELS_SETTING = "stylize.max_pixels"  # what a too-large rejection names (the CLI: --max-pixels)


@dataclass
class DecodeJob:
    key: int
    payload: Payload
    max_size: int | None
    max_pixels: int
    max_bytes: int
    # > 0: the runner decodes JPEGs on its device; one it can take as it is (passthrough_jpeg) of at
    # most this long side is handed back undecoded
    device_jpeg_side: int = 0


@dataclass
class Decoded:
    key: int
    pixels: np.ndarray | None  # (H, W, 3) uint8, upright, at most max_size on its long side; a Seed: (1, 2) int64
    sha256: str
    width: int          # the input's upright size, before any downscaling
    height: int
    seconds: float
    jpeg: bytes | None = None  # instead of pixels: a JPEG for the device to decode (width x height)


@dataclass
class EncodeJob:
    key: int
    model: int
    pixels: np.ndarray
    out_root: str
    relpath: str        # safe, '/'-separated, relative to out_root
    tmp_dir: str        # inside out_root: same filesystem, so the rename is atomic
    format: str
    quality: int
    identity: str = ""  # an object-storage output's ledger identity, stored in its metadata
    encoded: bytes | None = None  # instead of pixels: the file's bytes, encoded on the device
    to_tar: bool = False  # return the file's bytes (Written.data), for the engine to add to a tar


@dataclass
class Written:
    key: int
    model: int
    bytes: int
    seconds: float
    data: bytes | None = None  # the file's bytes (EncodeJob.to_tar), not written


@dataclass
class Failed:
    key: int
    reason: str
    model: int | None = None


def read_payload(payload: Payload, max_bytes: int) -> bytes:
    if isinstance(payload, ReadError):
        raise Rejected(*payload.reason.split(": ", 1))
    if isinstance(payload, bytes):
        return payload
    try:
        if payload.fsspec:
            import fsspec
            with fsspec.open(payload.where, "rb") as f:
                return read_limited(f, max_bytes)
        with open(payload.where, "rb") as f:
            return read_limited(f, max_bytes)
    except TooLarge as e:
        raise Rejected(*str(e).split(": ", 1)) from None
    except OSError as e:
        raise Rejected("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None


def decode_job(job: DecodeJob) -> Decoded | Failed:
    start = time.perf_counter()
    if isinstance(job.payload, Seed):  # a generator's input: (seed, label), batched like pixels
        seed = np.array([[job.payload.seed, job.payload.label]], dtype=np.int64)
        return Decoded(job.key, seed, f"seed:{job.payload.seed}:{job.payload.label}", 0, 0, 0.0)
    try:
        data = read_payload(job.payload, job.max_bytes)
        digest = hashlib.sha256(data).hexdigest()
        size = passthrough_jpeg(data, min(job.device_jpeg_side, job.max_size or job.device_jpeg_side),
                                job.max_pixels) if job.device_jpeg_side else None
        decoded = decode(data, job.max_pixels, min_side=job.max_size, setting=MAX_PIXELS_SETTING)
    except Rejected as e:
        return Failed(job.key, str(e))
    if size is not None:  # (upright and not downscaled: the size decode() found)
        return Decoded(job.key, None, digest, *size, time.perf_counter() - start, jpeg=data)
    image = decoded.image
    if job.max_size and max(image.size) > job.max_size:
        image.thumbnail((job.max_size, job.max_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = np.asarray(image)
    return Decoded(job.key, pixels, digest, decoded.width, decoded.height, time.perf_counter() - start)


def passthrough_jpeg(data: bytes, max_side: int, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) of a JPEG whose decode on the device is the image the workers would make of
    it, at its own size: baseline, YCbCr or grey (not stored as RGB, which nvJPEG would read as
    YCbCr: colours off by up to 255 levels), upright (no EXIF turn), one frame, ending with the EOI
    marker, at most max_side on its long side and max_pixels in all. Else None: the workers decode
    it. Reads the headers only; whether the data is sound is decode()'s to say."""
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if (im.format != "JPEG" or im.mode not in ("RGB", "L") or "progressive" in im.info
                    or "progression" in im.info or getattr(im, "n_frames", 1) != 1):
                return None
            component_ids = [layer[0] for layer in getattr(im, "layer", [])]
            if im.info.get("adobe_transform") == 0 or component_ids in ([82, 71, 66], ["R", "G", "B"]):
                return None  # RGB, not YCbCr
            width, height = im.size
            if max(width, height) > max_side or width * height > max_pixels or min(width, height) < 1:
                return None
            if im.getexif().get(0x0112, 1) != 1:  # Orientation: the workers turn it upright
                return None
    except Exception:  # noqa: BLE001 - whatever the headers hold, decode() says what is wrong
        return None
    return width, height


def encode_jobs(jobs: list[EncodeJob]) -> list[Written | Failed]:
    """Several outputs in one round trip to a worker (the outputs of one batch): for small images
    the round trip costs more than the encode. What one of them raises fails it alone."""
    results: list[Written | Failed] = []
    for job in jobs:
        try:
            results.append(encode_job(job))
        except Exception as e:  # noqa: BLE001 - as a worker's exception is for a job of its own
            results.append(Failed(job.key, reason("worker-error", f"{type(e).__name__}: {e}"), job.model))
    return results


def encode_job(job: EncodeJob) -> Written | Failed:
    start = time.perf_counter()
    if job.to_tar:
        try:
            check_relpath(job.relpath)  # (a tar member's name: the same rules as a file's)
            data = job.encoded if job.encoded is not None else encode_bytes(job.pixels, job.format, job.quality)
        except (OSError, ValueError) as e:
            return Failed(job.key, write_failure(e), job.model)
        return Written(job.key, job.model, len(data), time.perf_counter() - start, data)
    tmp = Path(job.tmp_dir) / f"{uuid.uuid4().hex}.{job.format}"
    remote = is_remote(job.out_root)
    try:
        final = None if remote else safe_target(Path(job.out_root), job.relpath)
        if remote:
            check_relpath(job.relpath)
        if job.encoded is not None:
            tmp.write_bytes(job.encoded)
        else:
            with open(tmp, "wb") as f:
                write_image(f, job.pixels, job.format, job.quality)
        size = tmp.stat().st_size
        if remote:  # one PUT of the finished file: the object appears complete or not at all
            upload(tmp, job.out_root, job.relpath, job.identity)
            tmp.unlink()
        else:
            os.replace(tmp, final)  # the final name only ever holds a complete file
    except Exception as e:  # noqa: BLE001 (an object store's client raises its own errors)
        tmp.unlink(missing_ok=True)
        if not isinstance(e, (OSError, ValueError)):
            if not remote:
                raise
            return Failed(job.key, reason("write-error", f"{type(e).__name__}: {e}"), job.model)
        return Failed(job.key, write_failure(e), job.model)
    return Written(job.key, job.model, size, time.perf_counter() - start)


def encode_bytes(pixels: np.ndarray, format: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    write_image(buffer, pixels, format, quality)
    return buffer.getvalue()


def write_image(fileobj, pixels: np.ndarray, format: str, quality: int) -> None:
    """(H,W,3) RGB or (H,W,1) grey uint8 pixels -> an image, written to a file object. PNG through
    tasks/bulk/png.py (OpenCV's defaults too: zlib level 1 with its run-length strategy); at Pillow's
    compress_level 6 the encode of a 512-px output had taken as long as the fast network's pass on it."""
    if format == "png":
        write_png(fileobj, pixels)
    else:
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
            fileobj, SAVE_OPTIONS[format], quality=quality)


def write_failure(e: OSError | ValueError) -> str:
    """An encoder's own error is this output's fault; a system call's says nothing about it (tried
    again), except a full disk, which stops the job."""
    detail = f"{type(e).__name__}: {e}"
    errno_ = getattr(e, "errno", None)
    if errno_ in (errno.ENOSPC, errno.EDQUOT):
        return reason("disk-full", detail)
    return reason("write-error" if errno_ is not None else "encode-error", detail)


def check_relpath(relpath: str) -> list[str]:
    parts = relpath.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe output name {relpath!r}")
    return parts


def safe_target(out_root: Path, relpath: str) -> Path:
    """out_root/relpath, creating its folders one by one and refusing any symlink on the way: a link
    planted in the output folder must not carry a write outside it."""
    parts = check_relpath(relpath)
    folder = out_root
    for part in parts[:-1]:
        folder = folder / part
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        if folder.is_symlink() or not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a symlink or a file, not a folder")
    target = folder / parts[-1]
    if target.is_dir() and not target.is_symlink():
        raise IsADirectoryError(errno.EISDIR, f"{target} is a folder")
    return target
