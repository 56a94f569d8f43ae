"""Generate the hostile corpus: images and archives that break naive pipelines, made in memory
(deterministic, small) so the tests need no files from outside the repository."""
from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
import zlib

import numpy as np
from PIL import Image

# --- images -------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_rgb(w: int = 80, h: int = 60, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def upright_pattern(w: int = 48, h: int = 32) -> np.ndarray:
    """Four differently coloured quadrants of unequal size: every flip and rotation of it differs."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 3, : w // 4] = (230, 30, 30)      # small red block: top left
    a[: h // 3, w // 4:] = (30, 200, 40)       # green: rest of the top band
    a[h // 3:, : w * 2 // 3] = (30, 40, 220)   # blue: bottom left, wide
    a[h // 3:, w * 2 // 3:] = (240, 220, 30)   # yellow: bottom right
    return a


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for an upright scene under each EXIF orientation (from the EXIF
    spec's description of where the stored row 0 / column 0 lie, not from Pillow's code)."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                      # mirrored left-right
        3: lambda a: a[::-1, ::-1],                   # rotated 180
        4: lambda a: a[::-1, :],                      # mirrored top-bottom
        5: lambda a: a.transpose(1, 0, 2),            # transposed
        6: lambda a: np.rot90(a, 1),                  # needs 90 clockwise to display: stored CCW
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse
        8: lambda a: np.rot90(a, -1),                 # needs 90 counter-clockwise: stored CW
    }[orientation](upright).copy()


def exif_oriented_jpeg(orientation: int) -> bytes:
    img = Image.fromarray(stored_for_orientation(upright_pattern(), orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def png_cut_in_a_text_chunk() -> bytes:
    """A PNG cut off inside a long tEXt chunk: Pillow says "Truncated File Read" (capitalised),
    not "image file is truncated"."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 5000)
    data = encode(noise_rgb(seed=12), "PNG", pnginfo=info)
    return data[:200]


def palette_with_transparency() -> bytes:
    """P mode, index 0 transparent: the left half is transparent, the right half dark red."""
    img = Image.new("P", (40, 20), 0)
    img.putpalette([0, 0, 0, 150, 0, 0] + [0] * 762)
    img.paste(1, (20, 0, 40, 20))
    return encode(img, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (30, 20), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    return encode(Image.fromarray(ramp), "PNG")


def half_transparent_rgba() -> bytes:
    a = np.zeros((20, 20, 4), np.uint8)
    a[..., 2] = 255          # blue
    a[..., 3] = 128          # half transparent: over white it is light blue
    return encode(Image.fromarray(a, "RGBA"), "PNG")


def good_images() -> dict[str, bytes]:
    """Files preprocess must accept (name -> bytes)."""
    files = {
        "photo.jpg": encode(noise_rgb(seed=1), "JPEG", quality=90),
        "png named.jpg": encode(noise_rgb(seed=2), "PNG"),
        "cmyk.jpg": encode(noise_rgb(seed=3).convert("CMYK"), "JPEG"),
        "grey.jpg": encode(noise_rgb(seed=4).convert("L"), "JPEG"),
        "sixteen-bit.png": sixteen_bit_png(),
        "palette-transparent.png": palette_with_transparency(),
        "rgba-half.png": half_transparent_rgba(),
        "la.png": encode(noise_rgb(seed=5).convert("LA"), "PNG"),
        "bilevel.png": encode(noise_rgb(seed=6).convert("1"), "PNG"),
        "animated.gif": animated_gif(),
        "café crème ü.png": encode(noise_rgb(seed=7), "PNG"),
        "写真 スペース.png": encode(noise_rgb(seed=8), "PNG"),
        "int32.tif": encode(Image.fromarray(np.full((20, 24), 70000, np.int32), "I"), "TIFF"),
        "float.tif": encode(Image.fromarray(np.full((20, 24), 0.5, np.float32), "F"), "TIFF"),
    }
    files.update({f"exif-{o}.jpg": exif_oriented_jpeg(o) for o in range(1, 9)})
    return files


def bad_images() -> dict[str, tuple[bytes, str]]:
    """Files preprocess must refuse: name -> (bytes, expected reason code)."""
    jpeg = encode(noise_rgb(seed=9), "JPEG")
    return {
        "zero.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated-text.png": (png_cut_in_a_text_chunk(), "truncated"),
        "text.jpg": (b"<html>404 not found</html>\n", "not-an-image"),
        "bomb.png": (png_header_claiming(40000, 40000), "too-large"),
    }


# --- idx files (MNIST's format) ------------------------------------------------------------------


def idx(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: 0x0000, type 0x08, the number of dimensions, big-endian sizes."""
    header = bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_set(n_train: int = 12, n_val: int = 5, size: tuple[int, int] = (4, 3), classes: int = 3) -> dict[str, bytes]:
    """A tiny labelled dataset as MNIST's four files (name -> bytes), labels 0..classes-1."""
    rng = np.random.default_rng(0)
    return {"train-images-idx3-ubyte": idx(rng.integers(0, 256, (n_train, *size))),
            "train-labels-idx1-ubyte": idx(np.arange(n_train) % classes),
            "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, (n_val, *size))),
            "t10k-labels-idx1-ubyte": idx(np.arange(n_val)[::-1] % classes)}


# --- archives -----------------------------------------------------------------------------------

def zip_bytes(members: list[tuple[str, bytes]] | list[tuple[str, bytes, int]]) -> bytes:
    """members: (name, data) or (name, data, unix mode) for links and special files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, *mode in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode:
                info.external_attr = mode[0] << 16
            zf.writestr(info, data)
    return buf.getvalue()


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


def traversal_zip(marker: str) -> bytes:
    """Path traversal in every spelling, around one good image."""
    img = encode(noise_rgb(seed=10), "PNG")
    return zip_bytes([
        ("good/ok.png", img),
        ("../../evil.txt", b"evil"),
        ("../" * 12 + f"tmp/{marker}", b"evil"),
        (f"/tmp/{marker}-abs", b"evil"),
        ("good/../../../evil2.txt", b"evil"),
        ("C:\\evil3.txt", b"evil"),
        ("sub\\..\\..\\..\\evil4.txt", b"evil"),
        ("link.png", b"/etc/passwd", stat.S_IFLNK | 0o777),
    ])


def link_tar(marker: str) -> bytes:
    """Absolute names, links out of the tree (to /etc), device files; plus links inside the tree
    that are legitimate and become copies."""
    img = encode(noise_rgb(seed=11), "PNG")
    return tar_bytes([
        ("ok.png", img),
        (f"/tmp/{marker}-abs", b"evil"),
        tar_member("etc", tarfile.SYMTYPE, "/etc"),
        (f"etc/{marker}", b"written through a symlink?"),
        tar_member("passwd", tarfile.SYMTYPE, "/etc/passwd"),
        tar_member("hard-passwd", tarfile.LNKTYPE, "/etc/passwd"),
        tar_member("up", tarfile.SYMTYPE, "../../../../outside"),
        tar_member("alias.png", tarfile.SYMTYPE, "ok.png"),
        tar_member("copy.png", tarfile.LNKTYPE, "ok.png"),
        tar_member("null", tarfile.CHRTYPE),
        tar_member("fifo", tarfile.FIFOTYPE),
    ])


def nested_archive(marker: str) -> bytes:
    """zip > tar.gz > zip, with an image at each level and a traversal attempt at the bottom."""
    inner_zip = zip_bytes([("deep.png", encode(noise_rgb(seed=12), "PNG")),
                           ("../../../evil.txt", b"evil"), ("../" * 10 + f"tmp/{marker}", b"evil")])
    middle = tar_bytes([("mid.png", encode(noise_rgb(seed=13), "PNG")), ("inner.zip", inner_zip)])
    return zip_bytes([("top.png", encode(noise_rgb(seed=14), "PNG")), ("middle.tar.gz", middle),
                      ("broken.zip", b"PK\x03\x04 not really a zip")])


def zip_bomb(size: int) -> bytes:
    """`size` zero bytes that compress to almost nothing."""
    return zip_bytes([("zeros.bin", b"\0" * size)])
